"""Poll one connection: the one-way sync that turns an external calendar into busy blocks.

Flow (DESIGN.md "Poll a connection"): take the connection's lease → fetch with the stored
validators (conditional GET / sync-token) → parse → expand within the sync window → replace the
busy blocks in one transaction → record health. No database transaction is open while the
network is used, and a failure changes nothing but the health fields: the last good busy blocks
stay.

Why a lease column and not a queue lock: Huey's lock_task has no expiry, so a worker killed
mid-job would leave its connection locked forever. A lease is one conditional UPDATE (atomic
on SQLite and PostgreSQL alike) that expires by itself.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from feeds.company_settings import get_company_settings
from feeds.credentials import Vault
from feeds.errors import CalsyncError
from feeds.health import record_failure, record_success
from feeds.sources.busy_time import BusyOptions, CalendarDataError, extract_busy, parse_calendars
from feeds.sources.caldav_source import read_changes
from feeds.sources.fetch import FetchError, FetchLimits, fetch_url
from models import BusyBlock, Company, Connection, Staff, SyncItem, utcnow

log = logging.getLogger("calsync.sync")


@dataclass(frozen=True)
class SyncContext:
    sessions: sessionmaker[Session]
    vault: Vault
    allow_private: bool = False
    limits: FetchLimits = FetchLimits()
    max_occurrences: int = 10_000
    lease_seconds: int = 300


@dataclass(frozen=True)
class SyncOutcome:
    connection_id: int
    status: str  # ok | unchanged | error | skipped | missing
    busy_count: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _Job:
    """What the network part needs, copied out of the session before any I/O."""

    id: int
    kind: str
    url: str
    username: str | None
    password: str | None
    options: BusyOptions
    window_key: str
    window_moved: bool
    etag: str | None
    last_modified: str | None
    content_hash: str | None
    sync_token: str | None
    ctag: str | None
    known: dict[str, str]
    had_busy: bool


def sync_window(company: Company, now: datetime) -> tuple[datetime, datetime]:
    """On whole UTC days, so the window (and a forced re-expansion) moves once a day."""
    settings = get_company_settings(company)
    today = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return (
        today - timedelta(days=settings.sync_window_past_days),
        today + timedelta(days=settings.sync_window_future_days + 1),
    )


def _acquire(ctx: SyncContext, connection_id: int, owner: str, now: datetime) -> _Job | None | bool:
    """Take the lease and copy out the job; False when another worker holds it, None when the
    connection is gone."""
    with ctx.sessions.begin() as session:
        taken = session.execute(
            update(Connection)
            .where(Connection.id == connection_id)
            .where(or_(Connection.lease_until.is_(None), Connection.lease_until < now))
            .values(lease_until=now + timedelta(seconds=ctx.lease_seconds), lease_owner=owner,
                    last_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        conn = session.get(Connection, connection_id)
        if conn is None:
            return None
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return False
        staff = session.get(Staff, conn.staff_id)
        company = session.get(Company, conn.company_id)
        assert staff is not None and company is not None
        start, end = sync_window(company, now)
        window_key = f"{start:%Y%m%d}-{end:%Y%m%d}"
        known = dict(
            session.execute(
                select(SyncItem.href, SyncItem.etag).where(SyncItem.connection_id == conn.id)
            ).all()
        )
        return _Job(
            id=conn.id, kind=conn.kind, url=ctx.vault.open(conn.url_sealed), username=conn.username,
            password=ctx.vault.open(conn.password_sealed) if conn.password_sealed else None,
            options=BusyOptions(
                window_start=start, window_end=end, timezone=staff.timezone, all_day=conn.all_day,
                treat_all_busy=conn.treat_all_busy, max_occurrences=ctx.max_occurrences,
            ),
            window_key=window_key, window_moved=conn.window_key != window_key,
            etag=conn.http_etag, last_modified=conn.http_last_modified,
            content_hash=conn.content_hash, sync_token=conn.sync_token, ctag=conn.ctag,
            known={k: v or "" for k, v in known.items()}, had_busy=conn.busy_count > 0,
        )


def sync_connection(
    ctx: SyncContext, connection_id: int, *, now: datetime | None = None, owner: str | None = None
) -> SyncOutcome:
    now = now or utcnow()
    owner = owner or uuid.uuid4().hex
    job = _acquire(ctx, connection_id, owner, now)
    if job is None:
        return SyncOutcome(connection_id, "missing")
    if job is False:
        return SyncOutcome(connection_id, "skipped")
    assert isinstance(job, _Job)
    try:
        if job.kind == "ics":
            return _sync_ics(ctx, job, owner)
        return _sync_caldav(ctx, job, owner)
    except (FetchError, CalendarDataError, CalsyncError) as exc:
        kind = getattr(exc, "kind", "error")
        return _fail(ctx, job, owner, kind, str(exc))
    except Exception:  # a bug must not leave the lease held or the worker dead
        log.exception("sync of connection %s failed unexpectedly", job.id)
        return _fail(ctx, job, owner, "internal",
                     "The calendar could not be read because of an internal error; it will be retried.")


def _fail(ctx: SyncContext, job: _Job, owner: str, kind: str, message: str) -> SyncOutcome:
    log.info("sync of connection %s failed: %s", job.id, kind)  # no URL, no body: secrets
    with ctx.sessions.begin() as session:
        conn = session.get(Connection, job.id)
        if conn is None:
            return SyncOutcome(job.id, "missing")
        record_failure(session, conn, kind, message, utcnow())
        _release(conn, owner)
        return SyncOutcome(job.id, "error", conn.busy_count, message)


def _release(conn: Connection, owner: str) -> None:
    if conn.lease_owner == owner:
        conn.lease_until = None
        conn.lease_owner = None


def _sync_ics(ctx: SyncContext, job: _Job, owner: str) -> SyncOutcome:
    # After a window move the stored validators would give a 304 without the body we need.
    fetched = fetch_url(
        job.url,
        etag=None if job.window_moved else job.etag,
        last_modified=None if job.window_moved else job.last_modified,
        limits=ctx.limits, allow_private=ctx.allow_private,
    )
    digest = hashlib.sha256(fetched.body).hexdigest() if not fetched.not_modified else job.content_hash
    unchanged = fetched.not_modified or (digest == job.content_hash and not job.window_moved)
    intervals: list[tuple[str | None, datetime, datetime]] | None = None
    if not unchanged:
        calendars = parse_calendars(fetched.body)
        result = extract_busy(calendars, job.options)
        if result.events == 0 and job.had_busy:
            raise CalendarDataError(
                "empty", "The calendar came back without any events; the previous busy times are "
                         "kept in case this is a glitch of the calendar provider.")
        intervals = [(None, a, b) for a, b in result.intervals]
    with ctx.sessions.begin() as session:
        conn = session.get(Connection, job.id)
        if conn is None:
            return SyncOutcome(job.id, "missing")
        if intervals is not None:
            _replace_blocks(session, conn, intervals, hrefs=None)
        conn.http_etag = fetched.etag or (None if not fetched.not_modified else conn.http_etag)
        conn.http_last_modified = fetched.last_modified or conn.http_last_modified
        conn.content_hash = digest
        conn.window_key = job.window_key
        record_success(session, conn, utcnow())
        _release(conn, owner)
        return SyncOutcome(job.id, "unchanged" if unchanged else "ok", conn.busy_count)


def _sync_caldav(ctx: SyncContext, job: _Job, owner: str) -> SyncOutcome:
    listing = read_changes(
        job.url, job.username, job.password, sync_token=None if job.window_moved else job.sync_token,
        ctag=job.ctag, known=job.known, allow_private=ctx.allow_private, load_all=job.window_moved,
        limits=ctx.limits,
    )
    if listing is None:
        with ctx.sessions.begin() as session:
            conn = session.get(Connection, job.id)
            if conn is None:
                return SyncOutcome(job.id, "missing")
            record_success(session, conn, utcnow())
            _release(conn, owner)
            return SyncOutcome(job.id, "unchanged", conn.busy_count)
    if listing.full and not listing.etags and job.known:
        # vdirsyncer's guard: an empty listing where we knew items is more likely a server
        # glitch than a staff member deleting everything at once.
        raise CalendarDataError(
            "empty", "The calendar came back empty; the previous busy times are kept in case "
                     "this is a glitch of the calendar server.")
    per_item: list[tuple[str | None, datetime, datetime]] = []
    hashes: dict[str, tuple[str, str | None]] = {}
    for href, body in listing.data.items():
        hashes[href] = (hashlib.sha256(body).hexdigest(), _uid(body))
        try:
            result = extract_busy(body, job.options)
        except CalendarDataError:
            continue  # one unreadable item must not stop the others
        per_item.extend((href, a, b) for a, b in result.intervals)
    with ctx.sessions.begin() as session:
        conn = session.get(Connection, job.id)
        if conn is None:
            return SyncOutcome(job.id, "missing")
        gone = set(listing.deleted)
        if job.window_moved:
            session.execute(delete(BusyBlock).where(BusyBlock.connection_id == conn.id))
        _replace_blocks(session, conn, per_item, hrefs=set(listing.data) | gone)
        if gone:
            session.execute(delete(SyncItem).where(SyncItem.connection_id == conn.id,
                                                   SyncItem.href.in_(gone)))
        for href, (digest, uid) in hashes.items():
            session.merge(SyncItem(connection_id=conn.id, href=href, etag=listing.etags.get(href),
                                   content_hash=digest, uid=uid, last_seen_at=utcnow()))
        conn.sync_token = listing.sync_token
        conn.ctag = listing.ctag
        conn.window_key = job.window_key
        record_success(session, conn, utcnow())
        _release(conn, owner)
        return SyncOutcome(job.id, "ok", conn.busy_count)


def _uid(body: bytes) -> str | None:
    for line in body.splitlines():
        if line.upper().startswith(b"UID:"):
            return line[4:].strip().decode("utf-8", "replace")[:500]
    return None


def _replace_blocks(
    session: Session, conn: Connection, intervals: list[tuple[str | None, datetime, datetime]],
    hrefs: set[str] | None,
) -> None:
    """Replace the connection's blocks (all of them, or those of `hrefs`) in this transaction."""
    query = delete(BusyBlock).where(BusyBlock.connection_id == conn.id)
    if hrefs is not None:
        if not hrefs:
            intervals = []
        else:
            query = query.where(BusyBlock.item_href.in_(hrefs))
    if hrefs is None or hrefs:
        session.execute(query)
    if intervals:
        session.execute(insert(BusyBlock), [
            {"connection_id": conn.id, "staff_id": conn.staff_id, "item_href": href,
             "start_at": a, "end_at": b} for href, a, b in intervals
        ])
    session.flush()
    conn.busy_count = session.scalar(
        select(func.count()).select_from(BusyBlock).where(BusyBlock.connection_id == conn.id)
    ) or 0
