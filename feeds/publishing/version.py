"""A published feed's version: find a feed by its token and compute its version cheaply.

The flow of a feed request (docs/architecture.md): token → scope → version → 304 if the client has it →
cached body, or render (feed.py). Finding the version is one prebuilt Core statement on a plain
DBAPI connection (no ORM session, no commit), so a 304 costs little more than an empty response.

Version: every change to an appointment bumps its staff member's feed_revision in the same
transaction; company-wide changes bump the company's feed_epoch. Revisions only grow, so the
sum of the revisions of the staff in a scope, with their count and the epoch, changes whenever
anything the feed shows changes — in whatever process or machine the change was made.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine

from calsync.feeds.accounts.keys import hash_token, same_hash
from calsync.feeds.company_settings import STORED, CompanySettings
from calsync.feeds.publishing.feed_changes import feed_changes
from calsync.feeds.publishing.lookup_connections import lookup_connections
from calsync.feeds.publishing.prebuilt import Prefetch
from calsync.feeds.publishing.render import FRAGMENT_FORMAT
from calsync.feeds.publishing.token_rows import AFTER_TOKEN, STAFF_ID, At, feed_lookup, token_row


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


# The feed each token's row made last, by digest: a feed is a function of its row and the day
# (the window) once the second of its last change is over (last_modified), so a request whose
# row and day are those of the last one reuses it. The row is read on every request all the
# same: this saves only the decoding, hashing and formatting that follow (issue 17, 304s).
_derived: dict[str, tuple[tuple[Any, ...], date, PublishedFeed]] = {}


# The feed each token's row made last, by digest, whatever the second: what a lookup that must
# read the row again expects the render after it to ask (lookup_feed's `ahead`).
_previous: dict[str, PublishedFeed] = {}

# What a lookup is given to send ahead (feed.Ahead is one): the statement the render after a
# change will start with, asked from the feed the token made last, which reads the token's row
# as well (_row_with); None for nothing to send.
SendAhead = Callable[[PublishedFeed], "Prefetch | None"]


def lookup_feed(engine: Engine, token: str, now: datetime, *, listen: bool = True,
                ahead: SendAhead | None = None) -> PublishedFeed | None:
    """The feed behind a token, for a feed request.

    On PostgreSQL with `listen` (CALSYNC_FEED_LISTEN), a token row read since the last change
    to its company was heard of is reused without a round trip (feed_changes.py). Otherwise
    read on a connection set aside for lookups (lookup_connections.py), or on one from the pool
    where there are none or the set-aside one failed.

    `ahead` (PostgreSQL, listening): given the feed this token made last, the statement the
    render after a change will run first (feed.Ahead), which reads the token's row too. When a
    change made that row stale, it is read by that statement alone, so the first GET after a
    change waits for the database once before rendering, not twice, and for one statement
    (docs/scale.md, eighth and ninth rounds)."""
    digest = hash_token(token)
    changes = feed_changes(engine) if listen else None
    if changes is None:
        return _published(digest, _read_row(engine, digest), now)
    row = changes.known(digest, At.COMPANY)
    if row is not None:
        return _published(digest, row, now)
    read_at = changes.seq  # before the query: a change heard during it makes the row stale
    # Only where a row is read again because something changed (listening, so PostgreSQL): where
    # every lookup reads (CALSYNC_FEED_LISTEN=false), every 304 would send the statement too.
    previous = _previous.get(digest) if ahead is not None else None
    also = ahead(previous) if previous is not None and ahead is not None else None
    row = _read_row(engine, digest, also)
    if row is not None:
        changes.keep(digest, read_at, row)
    return _published(digest, row, now)


def _read_row(engine: Engine, digest: str, also: Prefetch | None = None) -> tuple[Any, ...] | None:
    stash = lookup_connections(engine)
    if stash is not None:
        aside = stash.take()
        try:
            if also is not None and aside.rows is None and engine.dialect.name == "postgresql":
                row = _row_with(aside.connection, engine.dialect, digest, also)
            else:
                row = _row(aside.connection, engine.dialect, digest, aside.rows)
        except engine.dialect.loaded_dbapi.Error:
            stash.close(aside)  # broken (a restarted server) or busy: through the pool, once
        else:
            stash.put_back(aside)
            return row
    pooled = engine.raw_connection()
    try:
        return _row(pooled.dbapi_connection, engine.dialect, digest)
    finally:
        pooled.close()


def _row_with(connection: Any, dialect: Any, digest: str, also: Prefetch) -> tuple[Any, ...] | None:
    """The token's row read by `also`'s statement itself (scope_changes._TOKEN_AND_CHANGES): its
    columns first, then a row per staff member of the scope the token names, which makes the
    aggregates of FEED_QUERY (token_rows.token_row). One statement, so one round trip and one
    snapshot; its rows after the token's part are `also.rows`."""
    form = also.prebuilt.form(dialect)
    cursor = also.prebuilt.cursor(connection, dialect)
    try:
        cursor.execute(form.sql, form.params(dict(also.params, digest=digest)))
        rows: list[Any] = cursor.fetchall()
    finally:
        cursor.close()
    if rows and rows[0][At.SCOPE] != also.scope:
        # The token's scope is not the one its last feed had (it never changes; a row written
        # by hand could): the staff read are not the token's, so its row is read on its own.
        return feed_lookup(dialect).run(connection, digest)
    also.rows = also.prebuilt.processed(form, [r for r in rows if r[STAFF_ID] is not None], AFTER_TOKEN)
    return token_row(rows)


def _row(dbapi_connection: Any, dialect: Any, digest: str,
         rows: dict[str, tuple[int, tuple[Any, ...]]] | None = None) -> tuple[Any, ...] | None:
    """The token's row. `rows`: what this SQLite connection read before, by digest, with its
    data_version then (lookup_connections.Aside): while no other connection committed
    anything, the row is the same. Only for connections that never write (their own commits
    leave data_version alone)."""
    if rows is None:
        return feed_lookup(dialect).run(dbapi_connection, digest)
    cursor = dbapi_connection.cursor()
    try:  # first: a commit between it and the query makes the next lookup read again
        version = cursor.execute("PRAGMA data_version").fetchone()[0]
    finally:
        cursor.close()
    known = rows.get(digest)
    if known is not None and known[0] == version:
        return known[1]
    row = feed_lookup(dialect).run(dbapi_connection, digest)
    if row is not None:
        if len(rows) > 10_000:
            rows.clear()
        rows[digest] = (version, row)
    return row


def _published(digest: str, row: tuple[Any, ...] | None, now: datetime) -> PublishedFeed | None:
    # The index lookup already matched; compare again in constant time so no code path's
    # timing depends on how much of a guessed hash matched.
    if row is None or not same_hash(row[At.HASH], digest) or row[At.REVOKED] is not None:
        return None
    day = now.astimezone(UTC).date()
    made = _derived.get(digest)
    if made is not None and made[1] == day and made[0] == row and made[2].last_modified <= now:
        return made[2]
    feed = _feed_of(row, now)
    if feed is not None:
        if len(_previous) > 10_000:
            _previous.clear()
        _previous[digest] = feed
    if feed is not None and feed.last_modified < now.replace(microsecond=0):
        if len(_derived) > 10_000:
            _derived.clear()
        _derived[digest] = (row, day, feed)
    return feed


def _feed_of(row: tuple[Any, ...], now: datetime) -> PublishedFeed | None:
    scope, scope_id, privacy = row[At.SCOPE], row[At.SCOPE_ID], row[At.PRIVACY]
    total, count = row[At.REVISIONS], row[At.STAFF_COUNT]
    if scope == "staff" and count == 0:
        return None  # the staff member was deleted
    settings = _company_settings(row[At.SETTINGS])
    window = feed_window(settings, now)
    scope_key = f"{scope}:{scope_id}:{privacy}"
    cache_key = f"{scope_key}:f{FRAGMENT_FORMAT}:e{row[At.EPOCH]}:r{total}:n{count}:w{window[0]:%Y%m%d}"
    moments = [m for m in (_aware(row[At.EPOCH_CHANGED]), window[0], _aware(row[At.CHANGED])) if m]
    changed = max(moments)
    return PublishedFeed(
        token_id=row[At.ID], last_used_at=_aware(row[At.LAST_USED]), company_id=row[At.COMPANY],
        company_name=row[At.NAME], company_timezone=row[At.TIMEZONE], scope=scope, scope_id=scope_id,
        privacy=privacy, settings=settings, window=window, cache_key=cache_key, scope_key=scope_key,
        etag='"' + hashlib.sha256(cache_key.encode()).hexdigest()[:32] + '"',
        changed_at=changed, last_modified=last_modified(changed, now),
    )
