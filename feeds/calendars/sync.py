"""Poll one connection: the one-way sync that turns an external calendar into busy blocks.

Flow (docs/architecture.md "Poll a connection"): take the connection's lease → fetch with the stored
validators (conditional GET / sync-token) → parse → expand within the sync window → replace the
busy blocks in one transaction → record health. No database transaction is open while the
network is used, and a failure changes nothing but the health fields: the last good busy blocks
stay.

Why a lease column and not a queue lock: Huey's lock_task has no expiry, so a worker killed
mid-job would leave its connection locked forever. A lease is one conditional UPDATE (atomic
on SQLite and PostgreSQL alike) that expires by itself (and then lets the scheduler retry a
killed worker's job: see feeds/jobs.py).

The lease is also a fencing token, and the sync's work ends inside it (feeds/calendars/lease.py):
its final transaction writes only while this sync still holds the lease, so a worker paused
past its lease discards its results instead of overwriting the newer sync's. Scheduled syncs
keep to a fair share of their worker process's threads (`FairShare`), so one company's slow
calendars cannot hold every thread.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.calendars.absence import confirm_absent
from calsync.feeds.calendars.busy_blocks import replace_blocks
from calsync.feeds.calendars.changes import item_uid, read_changes
from calsync.feeds.calendars.health import record_failure, record_success
from calsync.feeds.calendars.lease import (
    LOST_LEASE,
    FairShare,
    Lease,
    fence,
    holds_lease,
    process_owner_prefix,
    release,
    within_share,
)
from calsync.feeds.calendars.provider_access import PROVIDER_KINDS, ProviderSetup, open_provider_store
from calsync.feeds.calendars.providers.base import RateLimited, ReconnectNeeded
from calsync.feeds.calendars.push_pass import PushSummary, finish_pushes, push_pending
from calsync.feeds.calendars.store import CalendarStore, StoreAddress, StoreOpener
from calsync.feeds.calendars.twoway import ReconcileReport, reconcile, unapplied_warning
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import CalsyncError
from calsync.feeds.sources.busy_time import (
    TOO_SLOW,
    BusyOptions,
    CalendarDataError,
    extract_busy,
    parse_calendars,
)
from calsync.feeds.sources.fetch import FetchError, FetchLimits, fetch_url
from calsync.models import (
    WRITE_ROLES,
    Appointment,
    BusyBlock,
    Company,
    Connection,
    LinkedItem,
    Staff,
    SyncItem,
    utcnow,
)

log = logging.getLogger("calsync.sync")

@dataclass(frozen=True)
class SyncContext:
    sessions: sessionmaker[Session]
    vault: Vault
    stores: StoreOpener  # opens a CalDAV connection's calendar store (tests: a memory store)
    allow_private: bool = False
    limits: FetchLimits = FetchLimits()
    max_occurrences: int = 10_000
    lease_seconds: int = 300
    # Google / Microsoft connections (feeds.calendars.provider_access): clients and base URLs.
    providers: ProviderSetup = field(default_factory=ProviderSetup)

    def open_store(self, job: _Job) -> AbstractContextManager[CalendarStore]:
        """A CalDAV, Google or Microsoft connection's store, for one conversation."""
        if job.kind in PROVIDER_KINDS:
            return open_provider_store(self.sessions, self.vault, self.providers, job.id, limits=self.limits,
                                       window=(job.options.window_start, job.options.window_end))
        return self.stores(StoreAddress(job.url, job.username, job.password),
                           allow_private=self.allow_private, limits=self.limits)


@dataclass(frozen=True)
class SyncOutcome:
    connection_id: int
    status: str  # ok | unchanged | error | skipped | missing
    busy_count: int = 0
    error: str | None = None
    # What a sync of a writable calendar did, for "Sync now": bookings written, changes applied
    written: int = 0
    applied: int = 0
    conflicts: int = 0


@dataclass(frozen=True)
class _Job:
    """What the network part needs, copied out of the session before any I/O."""

    id: int
    lease: Lease
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
    writes: bool = False  # a linked/additional calendar: reconcile and push too
    ours: frozenset[str] = frozenset()  # hrefs of our bookings in it
    our_uids: frozenset[str] = frozenset()  # UIDs of the staff member's appointments


def sync_window(company: Company, now: datetime) -> tuple[datetime, datetime]:
    """On whole UTC days, so the window (and a forced re-expansion) moves once a day."""
    settings = get_company_settings(company)
    today = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return (
        today - timedelta(days=settings.sync_window_past_days),
        today + timedelta(days=settings.sync_window_future_days + 1),
    )


def _acquire(
    ctx: SyncContext, connection_id: int, lease: Lease, due_only: bool = False,
    share: FairShare | None = None,
) -> _Job | str:
    """Take the lease and copy out the job; else the outcome's status: "skipped" when another
    worker holds it (or, with `due_only`, when it is not due any more: a scheduled job queued
    twice), "deferred" when its company has used up its fair share, "missing" when it is gone."""
    now = lease.taken_at
    free = or_(Connection.lease_until.is_(None), Connection.lease_until < now)
    taking = update(Connection).where(Connection.id == connection_id).where(free)
    if due_only:
        taking = taking.where(Connection.next_sync_at.is_not(None), Connection.next_sync_at <= now)
    with ctx.sessions.begin() as session:
        if share is not None:
            taking = taking.where(within_share(share, now))
            # PostgreSQL checks each UPDATE's subqueries against its own snapshot: two threads
            # taking leases of one company at once would both count the same. The company's
            # row lock makes them take turns (SQLite has a single writer anyway; FOR UPDATE is
            # left out there).
            session.execute(select(Company.id).where(Company.id == select(Connection.company_id).where(
                Connection.id == connection_id).scalar_subquery()).with_for_update())
        taken = session.execute(
            taking.values(lease_until=now + timedelta(seconds=lease.seconds), lease_owner=lease.owner,
                          last_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        conn = session.get(Connection, connection_id)
        if conn is None:
            return "missing"
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            held = conn.lease_until is not None and conn.lease_until >= now
            due = conn.next_sync_at is not None and conn.next_sync_at <= now
            return "deferred" if share is not None and not held and (due or not due_only) else "skipped"
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
            id=conn.id, lease=lease, kind=conn.kind, url=ctx.vault.open(conn.url_sealed),
            username=conn.username,
            password=ctx.vault.open(conn.password_sealed) if conn.password_sealed else None,
            options=BusyOptions(
                window_start=start, window_end=end, timezone=staff.timezone, all_day=conn.all_day,
                treat_all_busy=conn.treat_all_busy, max_occurrences=ctx.max_occurrences,
            ),
            window_key=window_key, window_moved=conn.window_key != window_key,
            etag=conn.http_etag, last_modified=conn.http_last_modified,
            content_hash=conn.content_hash, sync_token=conn.sync_token, ctag=conn.ctag,
            known={k: v or "" for k, v in known.items()}, had_busy=conn.busy_count > 0,
            writes=bool(WRITE_ROLES & set(conn.roles or [])) and bool(conn.writable),
            ours=frozenset(h for h in session.scalars(select(LinkedItem.href).where(
                LinkedItem.connection_id == conn.id, LinkedItem.href.is_not(None))) if h),
            # Only store-based sync (CalDAV, Google, Microsoft) compares UIDs; an ICS sync need
            # not read the staff member's whole booking history every time.
            our_uids=frozenset(session.scalars(select(Appointment.uid).where(
                Appointment.staff_id == conn.staff_id))) if conn.kind != "ics" else frozenset(),
        )


def sync_connection(
    ctx: SyncContext, connection_id: int, *, now: datetime | None = None, owner: str | None = None,
    due_only: bool = False, share: FairShare | None = None,
) -> SyncOutcome:
    """Sync one connection under its lease. `due_only` and `share` are for scheduled jobs
    (feeds/jobs.py): skip a connection that is not due any more, defer one whose company has
    used up its share of the worker's threads (the next schedule run queues it again)."""
    lease = Lease(owner or f"{process_owner_prefix()}{uuid.uuid4().hex[:12]}", now or utcnow(),
                  time.monotonic(), ctx.lease_seconds)
    job = _acquire(ctx, connection_id, lease, due_only, share)
    if isinstance(job, str):
        return SyncOutcome(connection_id, job)
    # Every request of this sync (however many: redirects, a CalDAV conversation, our writes)
    # ends by the network share of the lease; an earlier deadline (an interactive "Sync now"'s
    # budget, a short fetch timeout) stands.
    deadline = job.lease.network_deadline
    ctx = replace(ctx, limits=replace(ctx.limits, deadline=min(ctx.limits.deadline or deadline, deadline)))
    try:
        if job.kind == "ics":
            return _sync_ics(ctx, job)
        return _sync_store(ctx, job)  # CalDAV, Google, Microsoft: the calendar-store interface
    except (FetchError, CalendarDataError, CalsyncError) as exc:
        kind = getattr(exc, "kind", "error")
        # Consent gone: only the staff member can fix it, so alert at once (an open alert is
        # not raised again). Throttled: read again after its Retry-After, with jitter.
        return _fail(ctx, job, kind, str(exc), alert_now=isinstance(exc, ReconnectNeeded),
                     retry_after=exc.retry_after if isinstance(exc, RateLimited) else None)
    except Exception:  # a bug must not leave the lease held or the worker dead
        log.exception("sync of connection %s failed unexpectedly", job.id)
        return _fail(ctx, job, "internal",
                     "The calendar could not be read because of an internal error; it will be retried.")


def _lost(ctx: SyncContext, job: _Job) -> SyncOutcome:
    with ctx.sessions() as session:
        if session.get(Connection, job.id) is None:
            return SyncOutcome(job.id, "missing")
    log.warning("sync of connection %s lost its lease; its results were discarded", job.id)
    return SyncOutcome(job.id, "lost", error=LOST_LEASE)


def _fail(ctx: SyncContext, job: _Job, kind: str, message: str, *, alert_now: bool = False,
          retry_after: float | None = None) -> SyncOutcome:
    log.info("sync of connection %s failed: %s", job.id, kind)  # no URL, no body: secrets
    with ctx.sessions.begin() as session:
        conn = fence(session, job.id, job.lease)
        if conn is None:
            return _lost(ctx, job)
        record_failure(session, conn, kind, message, utcnow(), alert_now=alert_now, retry_after=retry_after)
        release(conn)
        return SyncOutcome(job.id, "error", conn.busy_count, message)


def _parse_options(job: _Job) -> BusyOptions:
    """Parsing and expansion end by the work share of the lease (and within their own cap)."""
    left = job.lease.work_deadline - time.monotonic()
    if left <= 0:
        raise CalendarDataError("too_slow", TOO_SLOW)
    return replace(job.options, max_seconds=min(job.options.max_seconds, left))


def _sync_ics(ctx: SyncContext, job: _Job) -> SyncOutcome:
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
        calendars = parse_calendars(fetched.body, _parse_options(job).max_seconds)
        result = extract_busy(calendars, _parse_options(job))
        if result.events == 0 and job.had_busy:
            raise CalendarDataError(
                "empty", "The calendar came back without any events; the previous busy times are "
                         "kept in case this is a glitch of the calendar provider.")
        intervals = [(None, a, b) for a, b in result.intervals]
    with ctx.sessions.begin() as session:
        conn = fence(session, job.id, job.lease)
        if conn is None:
            return _lost(ctx, job)
        if intervals is not None:
            replace_blocks(session, conn, intervals, hrefs=None)
        conn.http_etag = fetched.etag or (None if not fetched.not_modified else conn.http_etag)
        conn.http_last_modified = fetched.last_modified or conn.http_last_modified
        conn.content_hash = digest
        conn.window_key = job.window_key
        record_success(session, conn, utcnow())
        release(conn)
        return SyncOutcome(job.id, "unchanged" if unchanged else "ok", conn.busy_count)


def _sync_store(ctx: SyncContext, job: _Job) -> SyncOutcome:
    # All of this sync's requests (reading, then writing) end by the network share of the
    # lease (sync_connection sets ctx.limits.deadline), so a slow or hostile server can never
    # make the lease expire under a live worker. A provider's change token it no longer knows
    # (410) is InvalidSyncToken: read_changes lists in full, compared by ETag (no duplicates).
    with ctx.open_store(job) as store:
        listing = read_changes(store, sync_token=None if job.window_moved else job.sync_token,
                               ctag=job.ctag, known=job.known, load_all=job.window_moved)
        if listing is not None and job.writes:
            # A Graph reading covers the sync window only: our bookings it did not vouch for
            # (moved out of it, or missing from it) are read by id before two-way sync decides.
            confirm_absent(ctx.sessions, job.id, store, listing)
    pushes, report, warning = PushSummary(), ReconcileReport(), None
    if job.writes:
        # Calendar-side changes first (they may cancel or move bookings), then our pending
        # writes; all under this connection's lease, before the sync token moves on. Neither
        # starts once the lease is lost: the connection is another worker's now.
        if not holds_lease(ctx.sessions, job.id, job.lease):
            return _lost(ctx, job)
        if listing is not None:
            report = reconcile(ctx.sessions, job.id, etags=listing.etags, data=listing.data,
                               deleted=listing.deleted, full=listing.full, unsure=listing.unsure,
                               window=listing.window)
            warning = unapplied_warning(report)
            if warning:
                log.warning("sync of connection %s: %d calendar-side change(s) not applied", job.id,
                            len(report.errors))
        pushes = push_pending(ctx, job)
    if listing is None:
        with ctx.sessions.begin() as session:
            conn = fence(session, job.id, job.lease)
            if conn is None:
                return _lost(ctx, job)
            record_success(session, conn, utcnow())
            release(conn)
            error = finish_pushes(session, conn, pushes)
            # Nothing changed in the calendar; if we wrote into it, this sync still did work.
            status = "error" if error else "ok" if pushes.written else "unchanged"
            return _outcome(job.id, status, conn.busy_count, error, pushes, report)
    if listing.full and not listing.etags and set(job.known) - job.ours \
            and not (listing.window is not None and job.window_moved):
        # vdirsyncer's guard: an empty listing where we knew items is more likely a server
        # glitch than a staff member deleting everything at once. (Our own bookings have the
        # same guard, with an admin's confirmation, in two-way sync's reconcile.) A listing of
        # a window that has just moved may be empty for real: what we knew lay behind it.
        raise CalendarDataError(
            "empty", "The calendar came back empty; the previous busy times are kept in case "
                     "this is a glitch of the calendar server.")
    per_item: list[tuple[str | None, datetime, datetime]] = []
    hashes: dict[str, tuple[str, str | None]] = {}
    for href, body in listing.data.items():
        uid = item_uid(body)
        hashes[href] = (hashlib.sha256(body).hexdigest(), uid)
        if href in job.ours or uid in job.our_uids:
            continue  # our own booking: it must never block its own appointment
        # Each item has its own cap, and all of them together end by the lease's work share
        # (20,000 items of 20 s each would otherwise outlast any lease).
        options = _parse_options(job)
        try:
            result = extract_busy(body, options)
        except CalendarDataError:
            continue  # one unreadable item must not stop the others
        per_item.extend((href, a, b) for a, b in result.intervals)
    with ctx.sessions.begin() as session:
        conn = fence(session, job.id, job.lease)
        if conn is None:
            return _lost(ctx, job)
        gone = set(listing.deleted)
        if job.window_moved:
            session.execute(delete(BusyBlock).where(BusyBlock.connection_id == conn.id))
        replace_blocks(session, conn, per_item, hrefs=set(listing.data) | gone)
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
        if warning:
            # The sync worked, but an admin should know that some of the calendar-side changes
            # were not applied: the sentence stays on the connection until the next success.
            conn.last_error, conn.last_error_kind = warning, "not_applied"
        release(conn)
        error = finish_pushes(session, conn, pushes)
        return _outcome(job.id, "error" if error else "ok", conn.busy_count, error, pushes, report)


def _outcome(cid: int, status: str, busy: int, error: str | None, pushes: PushSummary,
             report: ReconcileReport) -> SyncOutcome:
    return SyncOutcome(cid, status, busy, error, written=pushes.written, conflicts=report.conflicts,
                       applied=report.moved + report.cancelled + report.restored)
