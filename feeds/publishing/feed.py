"""Published feeds: find a feed by token, compute its version cheaply, and render it.

The flow of a feed request (docs/architecture.md): token → scope → version → 304 if the client has it →
cached body, or render. Finding the version is two prebuilt Core statements on a plain
connection (no ORM session, no commit), so a 304 costs little more than an empty response.

Version: every change to an appointment bumps its staff member's feed_revision in the same
transaction; company-wide changes bump the company's feed_epoch. Revisions only grow, so the
sum of the revisions of the staff in a scope, with their count and the epoch, changes whenever
anything the feed shows changes — in whatever process or machine the change was made.

Rendering: a body is the header plus one segment per staff member in scope. A segment is the
concatenated VEVENT fragments of that staff member's appointments in the window, keyed by the
staff member's revision; a fragment is one appointment's VEVENT keyed by its own revision. So
after one appointment changes, one fragment is serialised again and one segment is rebuilt;
every other staff member's segment is reused as bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import hash_token, same_hash
from calsync.feeds.company_settings import STORED, CompanySettings
from calsync.feeds.publishing.cache import FeedCache, Recipe
from calsync.feeds.publishing.render import FOOTER, FRAGMENT_FORMAT, Variant, render_header
from calsync.feeds.publishing.segments import Later, build_segment
from calsync.models import (
    Company,
    FeedToken,
    Group,
    Staff,
    group_member,
)

FOOTER_BYTES = FOOTER.encode()


@dataclass(frozen=True)
class PublishedFeed:
    token_id: int
    last_used_at: datetime | None
    company_id: int
    company_name: str
    company_timezone: str
    scope: str
    scope_id: int
    privacy: str
    settings: CompanySettings
    window: tuple[datetime, datetime]
    cache_key: str
    scope_key: str
    etag: str
    changed_at: datetime  # the last change the feed shows, to the microsecond
    last_modified: datetime  # the Last-Modified header: see last_modified()

    def unchanged_since(self, since: datetime) -> bool:
        """If-Modified-Since: nothing changed after `since` (whole seconds, from a Last-Modified
        we sent). Compared with the exact change time, not the header's: the header can name the
        second a second change happened in (last_modified)."""
        return self.changed_at <= since


def last_modified(changed: datetime, now: datetime) -> datetime:
    """The Last-Modified of a feed whose last change was at `changed`, answered at `now`.

    HTTP dates have whole seconds, and Last-Modified is never later than the response's Date
    (RFC 9110 §8.8.2.1), so it cannot tell apart two changes in one second by itself; a date is
    only a reliable validator when the server knows the content did not change again within the
    second it names (§8.8.2.2). So it is the end of the second of the last change (rounded up),
    once that second is over: If-Modified-Since with it is then a 304 until the next change.
    While the second lasts, it is the current second, which is earlier than the change: a client
    revalidating with it gets the full feed again (once), which is right if another change
    followed in the same second. Change times come from the clocks of the processes that made
    them; one ahead of ours is treated the same way, so the header never passes Date.
    """
    rounded_up = changed.replace(microsecond=0) + timedelta(seconds=1 if changed.microsecond else 0)
    return min(rounded_up, now.replace(microsecond=0))


def feed_window(settings: CompanySettings, now: datetime) -> tuple[datetime, datetime]:
    """The published window on whole UTC days, so it (and the version) moves once a day."""
    today = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
    return (
        today - timedelta(days=settings.feed_window_past_days),
        today + timedelta(days=settings.feed_window_future_days + 1),
    )


def _scope_staff_filter(scope: str, scope_id: Any, company_id: Any):  # type: ignore[no-untyped-def]
    if scope == "staff":
        return and_(Staff.id == scope_id, Staff.company_id == company_id)
    if scope == "group":
        members = select(group_member.c.staff_id).where(group_member.c.group_id == scope_id)
        return and_(Staff.company_id == company_id, Staff.id.in_(members))
    return Staff.company_id == company_id


def _scope_aggregate(value: Any) -> Any:
    """`value` over the staff of the token's scope, as a column of the token query.

    A CASE whose branches are scalar subqueries correlated to the token row: SQLite and
    PostgreSQL evaluate only the branch that matches, so a staff feed never aggregates the
    whole company. Correlation is explicit because the group branch nests a second subquery.
    """
    members = (
        select(group_member.c.staff_id)
        .where(group_member.c.group_id == FeedToken.scope_id)
        .correlate(FeedToken)
    )
    branches = {
        "staff": and_(Staff.id == FeedToken.scope_id, Staff.company_id == FeedToken.company_id),
        "group": and_(Staff.company_id == FeedToken.company_id, Staff.id.in_(members)),
        "company": Staff.company_id == FeedToken.company_id,
    }

    def over(scope: str) -> Any:
        return select(value).where(branches[scope]).correlate(FeedToken).scalar_subquery()

    return case(
        (FeedToken.scope == "staff", over("staff")),
        (FeedToken.scope == "group", over("group")),
        else_=over("company"),
    )


# Built once, so SQLAlchemy reuses its compiled form: one statement answers "which feed, which
# company settings, which version" for every request, 304s included.
_FEED_QUERY = (
    select(
        FeedToken.id, FeedToken.token_hash, FeedToken.revoked_at, FeedToken.last_used_at,
        FeedToken.scope, FeedToken.scope_id, FeedToken.privacy, FeedToken.company_id,
        Company.name, Company.timezone, Company.settings, Company.feed_epoch,
        Company.feed_epoch_changed_at,
        _scope_aggregate(func.coalesce(func.sum(Staff.feed_revision), 0)).label("revisions"),
        _scope_aggregate(func.count(Staff.id)).label("staff_count"),
        _scope_aggregate(func.max(Staff.feed_changed_at)).label("changed"),
    )
    .join(Company, Company.id == FeedToken.company_id)
    .where(FeedToken.token_hash == bindparam("digest"))
)

class _FeedLookup:
    """_FEED_QUERY compiled once per dialect and run on the DBAPI cursor.

    It runs on every feed request, 304s included, where SQLAlchemy's execution wrapper would be
    the largest cost. The few typed columns are decoded here (SQLite hands back text for
    datetimes and JSON, psycopg native values).
    """

    def __init__(self, dialect: Any) -> None:
        compiled = _FEED_QUERY.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order = list(compiled.positiontup or [])
        self.base = dict(compiled.params)
        self.columns = [str(c.key) for c in _FEED_QUERY.selected_columns]

    def run(self, dbapi_connection: Any, digest: str) -> dict[str, Any] | None:
        values = dict(self.base, digest=digest)
        params: Any = tuple(values[k] for k in self.order) if self.positional else values
        # psycopg opens a transaction for a SELECT: a BEGIN before it and, when the pool takes
        # the connection back, a ROLLBACK after it — two round trips around a one-row read,
        # more than the read itself on PostgreSQL. An idle connection reads in autocommit mode.
        idle = (getattr(getattr(dbapi_connection, "info", None), "transaction_status", None) == 0
                and getattr(dbapi_connection, "autocommit", True) is False)
        if idle:
            dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        finally:
            cursor.close()
            if idle:
                dbapi_connection.autocommit = False
        return None if row is None else dict(zip(self.columns, row, strict=True))


_lookups: dict[str, _FeedLookup] = {}


def _lookup(dialect: Any) -> _FeedLookup:
    found = _lookups.get(dialect.name)
    if found is None:
        found = _lookups[dialect.name] = _FeedLookup(dialect)
    return found


# Parsed company settings keyed by their stored text: content-addressed, so it cannot go stale
# whichever process or database changed them; it only saves re-validating on every request.
_settings_cache: dict[str, CompanySettings] = {}
_settings_lock = threading.Lock()


def _company_settings(raw: Any) -> CompanySettings:
    key = raw if isinstance(raw, str) else json.dumps(raw or {}, sort_keys=True)
    found = _settings_cache.get(key)
    if found is None:
        found = CompanySettings.model_validate(json.loads(key) if key else {}, context=STORED)
        with _settings_lock:
            if len(_settings_cache) > 10_000:
                _settings_cache.clear()
            _settings_cache[key] = found
    return found


def _aware(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite stores datetimes as ISO text (in UTC, see UTCDateTime)
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_feed(conn: Connection, token: str, now: datetime) -> PublishedFeed | None:
    """The feed behind a token with its version, without rendering anything."""
    return read_feed(conn.connection.dbapi_connection, conn.dialect, token, now)


def read_feed(dbapi_connection: Any, dialect: Any, token: str, now: datetime) -> PublishedFeed | None:
    """open_feed on a pooled DBAPI connection (engine.raw_connection()): every feed request,
    304s included, reads this one row, and SQLAlchemy's Connection around it cost more than
    the query on SQLite (docs/scale.md)."""
    digest = hash_token(token)
    row = _lookup(dialect).run(dbapi_connection, digest)
    # The index lookup already matched; compare again in constant time so no code path's
    # timing depends on how much of a guessed hash matched.
    if row is None or not same_hash(row["token_hash"], digest) or row["revoked_at"] is not None:
        return None
    scope, scope_id, privacy = row["scope"], row["scope_id"], row["privacy"]
    total, count = row["revisions"], row["staff_count"]
    if scope == "staff" and count == 0:
        return None  # the staff member was deleted
    settings = _company_settings(row["settings"])
    window = feed_window(settings, now)
    scope_key = f"{scope}:{scope_id}:{privacy}"
    cache_key = (
        f"{scope_key}:f{FRAGMENT_FORMAT}:e{row['feed_epoch']}:r{total}:n{count}:w{window[0]:%Y%m%d}"
    )
    moments = [m for m in (_aware(row["feed_epoch_changed_at"]), window[0], _aware(row["changed"])) if m]
    changed = max(moments)
    return PublishedFeed(
        token_id=row["id"], last_used_at=_aware(row["last_used_at"]), company_id=row["company_id"],
        company_name=row["name"], company_timezone=row["timezone"], scope=scope, scope_id=scope_id,
        privacy=privacy, settings=settings, window=window, cache_key=cache_key, scope_key=scope_key,
        etag='"' + hashlib.sha256(cache_key.encode()).hexdigest()[:32] + '"',
        changed_at=changed, last_modified=last_modified(changed, now),
    )


def render_feed(session: Session, feed: PublishedFeed, cache: FeedCache, later: Later | None = None,
                recipe: Recipe | None = None) -> tuple[bytes, bool]:
    """The whole feed: header + one (cached) segment per staff member in scope + footer, and
    whether the body may be cached under the feed's version (False when a booking was committed
    while a segment was read).

    `later`: where the writes of new fragments and segments go instead of `session`, to be
    run after the response (the caller's choice; they are caches, keyed by versions).
    `recipe`: filled with where each piece lies in the body (FeedCache.gzipped)."""
    variant = Variant(feed.privacy, names_staff=feed.scope != "staff")
    staff_rows = session.execute(
        select(Staff.id, Staff.feed_revision, Staff.timezone, Staff.name)
        .where(_scope_staff_filter(feed.scope, feed.scope_id, feed.company_id))
        .order_by(Staff.id)
    ).all()
    window, show_cancelled = feed.window, feed.settings.show_cancelled
    parts: list[bytes] = []
    piece_keys: list[str | None] = []
    cacheable = True
    for staff_id, revision, _tz, _name in staff_rows:
        family = (f"{staff_id}:{variant.key}:f{FRAGMENT_FORMAT}:w{window[0]:%Y%m%d}-{window[1]:%Y%m%d}"
                  f":c{int(show_cancelled)}")
        key = f"{family}:r{revision}"
        segment = cache.segment(session, key)
        if segment is None:
            segment, index = build_segment(session, staff_id, variant, window, show_cancelled, later,
                                            cache.previous_segment(family))
            # Each query reads what is committed when it runs, so a booking committed since the
            # revision was read may be in the segment. Such bytes are served but never kept
            # under revision r: another request would join other bytes under the same key, and
            # the gzip piece of one with the body of the other fails the client's CRC check.
            if session.scalar(select(Staff.feed_revision).where(Staff.id == staff_id)) != revision:
                cacheable = False
                parts.append(segment)
                piece_keys.append(None)
                continue
            cache.keep_segment(session, key, family, staff_id, segment, later)
            cache.indexes.put(family, key, index)
        parts.append(segment)
        piece_keys.append(f"z:{key}")  # its gzip piece: family "z:{family}" (cache.gzipped)
    if feed.scope == "staff":
        name, tz = f"{staff_rows[0].name} · {feed.company_name}", staff_rows[0].timezone
    elif feed.scope == "group":
        group = session.get(Group, feed.scope_id)
        name, tz = f"{group.name if group else 'Group'} · {feed.company_name}", feed.company_timezone
    else:
        name, tz = feed.company_name, feed.company_timezone
    header = _header_bytes(name, tz, tuple(r.timezone for r in staff_rows),
                           feed.settings.feed_refresh_minutes, feed.settings.feed_color, window)
    # One join: each byte of a multi-megabyte body is copied once (concatenating the header,
    # the segments and the footer in steps copied the whole body twice).
    parts.insert(0, header)
    parts.append(FOOTER_BYTES)
    if recipe is not None:
        offset = 0
        for piece_key, part in zip([None, *piece_keys, None], parts, strict=True):
            recipe.append((piece_key, offset, offset + len(part)))
            offset += len(part)
    return b"".join(parts), cacheable


@lru_cache(maxsize=512)
def _header_bytes(name: str, tz: str, timezones: tuple[str, ...], refresh_minutes: int,
                  color: str | None, window: tuple[datetime, datetime]) -> bytes:
    """The header is a function of these values only; building it with icalendar (and its
    VTIMEZONEs) took milliseconds of every render, the first GET after a change included."""
    return render_header(
        name=name, timezone=tz, timezones=list(timezones), refresh=timedelta(minutes=refresh_minutes),
        color=color, window=window,
    ).encode("utf-8")


def feed_body(session: Session, feed: PublishedFeed, cache: FeedCache, later: Later | None = None,
              recipe: Recipe | None = None) -> bytes:
    """The feed's bytes: from the cache, or rendered and cached. The caller commits (and runs
    `later`'s writes, when given, in a session of its own: see render_feed)."""
    body = cache.body(feed.cache_key)
    if body is None:
        recipe = [] if recipe is None else recipe
        body, cacheable = render_feed(session, feed, cache, later, recipe)
        if cacheable:
            cache.keep_body(feed.cache_key, feed.scope_key, body, recipe)
        else:
            recipe[:] = [(None, 0, len(body))]  # nothing of it is cached: gzip it whole, once
    return body
