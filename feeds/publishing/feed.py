"""Published feeds: render a feed whose version version.py found.

Rendering: a body is the header plus one segment per staff member in scope. A segment is the
concatenated VEVENT fragments of that staff member's appointments in the window, keyed by the
staff member's revision; a fragment is one appointment's VEVENT keyed by its own revision. So
after one appointment changes, one fragment is serialised again and one segment is rebuilt;
every other staff member's segment is reused as bytes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select

from calsync.feeds.publishing import scope_changes
from calsync.feeds.publishing.cache import BodyEntry, FeedCache, Recipe
from calsync.feeds.publishing.prebuilt import Prebuilt, Prefetch, Reads
from calsync.feeds.publishing.render import FOOTER, FRAGMENT_FORMAT, Variant, render_header
from calsync.feeds.publishing.scope_changes import STAFF_SHOWN
from calsync.feeds.publishing.segments import Changes, Later, build_segment
from calsync.feeds.publishing.token_rows import scope_staff_filter

# What callers found here before the version had a module of its own.
from calsync.feeds.publishing.version import PublishedFeed as PublishedFeed
from calsync.feeds.publishing.version import feed_window as feed_window
from calsync.feeds.publishing.version import last_modified as last_modified
from calsync.feeds.publishing.version import lookup_feed as lookup_feed
from calsync.models import Group, Staff

FOOTER_BYTES = FOOTER.encode()

# The staff of a scope in id order, with what the header and segment keys need.
_STAFF_ROWS = {
    scope: Prebuilt(select(*STAFF_SHOWN)
                    .where(scope_staff_filter(scope, bindparam("scope_id"), bindparam("company_id")))
                    .order_by(Staff.id))
    for scope in ("staff", "group", "company")
}
_GROUP_NAME = Prebuilt(select(Group.name).where(Group.id == bindparam("scope_id")))


def render_feed(reads: Reads, feed: PublishedFeed, cache: FeedCache,
                later: Later | None = None, ahead: Ahead | None = None) -> tuple[BodyEntry, bool]:
    """The whole feed as its pieces: header + one (cached) segment per staff member in scope +
    footer, and whether the body may be cached under the feed's version (False when a booking
    was committed while a segment was read).

    `later`: where the writes of new fragments and segments go instead of `reads.session`, to
    be run after the response (the caller's choice; they are caches, keyed by versions).
    `ahead`: the one the lookup was given, whose statement may have been answered already."""
    variant, kind = _variant_and_kind(feed)
    window, show_cancelled = feed.window, feed.settings.show_cancelled
    staff_rows, changes = _staff_rows(reads, feed, cache, variant, kind, ahead)
    parts: list[bytes] = []
    piece_keys: list[str | None] = []
    cacheable = True
    for staff_id, revision, _tz, _name in staff_rows:
        family = f"{staff_id}:{kind}"
        key = f"{family}:r{revision}"
        segment, previous = cache.segment(reads, key, family)
        if segment is None:
            segment, index = build_segment(reads, staff_id, revision, variant, window, show_cancelled,
                                           later, previous, changes.get(staff_id))
            # Each query reads what is committed when it runs, so a booking committed since the
            # revision was read may be in the segment (then it has no index). Such bytes are
            # served but never kept under revision r: another request would join other bytes
            # under the same key, and the gzip piece of one with the body of the other fails
            # the client's CRC check.
            if index is None:
                cacheable = False
                parts.append(segment)
                piece_keys.append(None)
                continue
            cache.keep_segment(reads, key, family, staff_id, segment, later)
            cache.indexes.put(family, key, index)
        parts.append(segment)
        piece_keys.append(f"z:{key}")  # its gzip piece: family "z:{family}" (cache.gzipped)
    if feed.scope == "staff":
        name, tz = f"{staff_rows[0][3]} · {feed.company_name}", staff_rows[0][2]
    elif feed.scope == "group":
        group = _GROUP_NAME.first(reads, scope_id=feed.scope_id)
        name, tz = f"{group[0] if group else 'Group'} · {feed.company_name}", feed.company_timezone
    else:
        name, tz = feed.company_name, feed.company_timezone
    header = _header_bytes(name, tz, tuple(r[2] for r in staff_rows),
                           feed.settings.feed_refresh_minutes, feed.settings.feed_color, window)
    # Not joined: the server writes the pieces in turn (BodyEntry), each byte copied once.
    parts.insert(0, header)
    parts.append(FOOTER_BYTES)
    recipe: Recipe = []
    offset = 0
    for piece_key, part in zip([None, *piece_keys, None], parts, strict=True):
        recipe.append((piece_key, offset, offset + len(part)))
        offset += len(part)
    return BodyEntry(parts, recipe), cacheable


def _variant_and_kind(feed: PublishedFeed) -> tuple[Variant, str]:
    """The feed's variant, and its segments' family: everything a segment's bytes depend on
    but the staff member's id and revision."""
    variant = Variant(feed.privacy, names_staff=feed.scope != "staff")
    window, cancelled = feed.window, int(feed.settings.show_cancelled)
    return variant, f"{variant.key}:f{FRAGMENT_FORMAT}:w{window[0]:%Y%m%d}-{window[1]:%Y%m%d}:c{cancelled}"


def _kept(reads_dialect: str, feed: PublishedFeed, cache: FeedCache, kind: str) -> dict[int, int]:
    """On PostgreSQL, the staff the scope's last render showed whose segment this process keeps,
    with the revision it shows: whom scope_changes asks about."""
    kept: dict[int, int] = {}
    if reads_dialect == "postgresql":
        for staff_id in cache.staff_of(feed.scope_key):
            previous = cache.previous_segment(f"{staff_id}:{kind}")
            index = previous[1] if previous is not None else None
            # A segment without appointments has starts == (): it is asked about all the same.
            if index is not None and index.starts is not None and index.staff_revision is not None:
                kept[staff_id] = index.staff_revision
    return kept


class Ahead:
    """The statement a render after a change starts with (scope_changes.py), for the lookup to
    read the token's row with (version.lookup_feed): asked with what the feed the token made
    last would ask. The render uses its answer only for the same question (scope, company and
    segment family); else it asks again, as without it."""

    def __init__(self, cache: FeedCache) -> None:
        self.cache = cache
        self.sent: Prefetch | None = None
        self.kept: dict[int, int] = {}  # the kept segments' revisions it was asked with

    def __call__(self, previous: PublishedFeed) -> Prefetch | None:
        variant, kind = _variant_and_kind(previous)
        kept = _kept("postgresql", previous, self.cache, kind)
        if not kept:
            return None
        self.kept = kept
        self.sent = scope_changes.ahead(previous.scope, previous.scope_id, previous.company_id, variant.key,
                                        kept, _question(previous, kind))
        return self.sent


def _question(feed: PublishedFeed, kind: str) -> tuple[str, int, str]:
    return feed.scope_key, feed.company_id, kind


def _staff_rows(reads: Reads, feed: PublishedFeed, cache: FeedCache, variant: Variant, kind: str,
                ahead: Ahead | None = None) -> tuple[list[tuple[Any, ...]], dict[int, Changes]]:
    """The scope's staff rows (id, revision, timezone, name) in id order and, on PostgreSQL, the
    changes since the segments kept of the staff its last render showed (scope_changes.py):
    answered already when the lookup sent the same question ahead."""
    sent = ahead.sent if ahead is not None else None
    if ahead is not None and sent is not None and sent.rows is not None and sent.key == _question(feed, kind):
        # With the revisions the question was sent with, not those kept now: a segment kept
        # since at another revision does not use them (segments._changes_since compares).
        staff_rows, changes = scope_changes.split(sent.rows, ahead.kept)
    elif kept := _kept(reads.dialect.name, feed, cache, kind):
        staff_rows, changes = scope_changes.staff_and_changes(
            reads, feed.scope, feed.scope_id, feed.company_id, variant.key, kept)
    else:
        staff_rows = _STAFF_ROWS[feed.scope].all(reads, scope_id=feed.scope_id, company_id=feed.company_id)
        changes = {}
    cache.keep_staff_of(feed.scope_key, tuple(row[0] for row in staff_rows))
    return staff_rows, changes


@lru_cache(maxsize=512)
def _header_bytes(name: str, tz: str, timezones: tuple[str, ...], refresh_minutes: int,
                  color: str | None, window: tuple[datetime, datetime]) -> bytes:
    """The header is a function of these values only; building it with icalendar (and its
    VTIMEZONEs) took milliseconds of every render, the first GET after a change included."""
    return render_header(
        name=name, timezone=tz, timezones=list(timezones), refresh=timedelta(minutes=refresh_minutes),
        color=color, window=window,
    ).encode("utf-8")


def feed_body(reads: Reads, feed: PublishedFeed, cache: FeedCache, later: Later | None = None,
              ahead: Ahead | None = None) -> BodyEntry:
    """The feed's body: from the cache, or rendered and cached (a body that may not be cached,
    see render_feed, is returned all the same). Without `later`, the caller commits
    `reads.session`; with it, the caller runs its writes in a session of its own."""
    entry = cache.body(feed.cache_key)
    if entry is None:
        entry, cacheable = render_feed(reads, feed, cache, later, ahead)
        if cacheable:
            cache.keep_body(feed.cache_key, feed.scope_key, entry)
    return entry
