"""Caches behind published feeds, all keyed by versions read from the database.

- Whole bodies (and their gzip form) live in process memory only, one live version per feed:
  a new version replaces the old one at once instead of waiting for eviction.
- Per-staff segments live in memory and in the feed_segment table, shared by every process
  and machine serving the same database.

Because every key contains a version that is read from the database on each request, no
level can serve stale data: a change makes new keys, and old entries are never asked for again.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from calsync.feeds.publishing.prebuilt import Prebuilt, Reads
from calsync.feeds.publishing.segment_index import Index, SegmentIndexes
from calsync.models import FeedSegment, utcnow


class MemoryCache:
    """A thread-safe LRU of bytes (or BodyEntry) bounded by total size, one entry per family.

    Storing a key whose family already has an entry replaces that entry: superseded versions of
    a feed free their memory at once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._family_key: dict[str, str] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old)

    def put(self, key: str, value: bytes | BodyEntry, family: str | None = None) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            if family is not None:
                previous = self._family_key.get(family)
                if previous is not None and previous != key:
                    self._drop(previous)
                self._family_key[family] = key
            self._drop(key)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                evicted_key, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._family_key.clear()
            self._size = 0


# The segments of a body as (cache key of its gzip piece or None, start, end) in the body.
Recipe = list[tuple[str | None, int, int]]
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0
GZIP_LEVEL = 6
MAX_SCOPES = 20_000  # feeds whose staff FeedCache remembers


class BodyEntry:
    """A body as the pieces it is made of (header, one segment per staff member, footer) and
    where each lies in it, stored as one cache entry so the two are always evicted together.

    A new body is served as its pieces (a WSGI server writes each in turn; Content-Length is
    their sum), so the first GET after a change copies no 5 MB; `settle()` joins them once the
    body is served a second time (web/public_feeds.py), so warm GETs hand the server one object.
    Until then the pieces are the cached segments themselves: no second copy in memory.
    `pieces` is replaced in one assignment: a reader sees either form whole.
    """

    __slots__ = ("pieces", "recipe", "size")

    def __init__(self, pieces: list[bytes], recipe: Recipe) -> None:
        self.pieces: tuple[bytes, ...] = tuple(pieces)
        self.recipe = recipe
        self.size = sum(len(p) for p in self.pieces)

    def __len__(self) -> int:
        return self.size

    def settle(self) -> None:
        if len(self.pieces) > 1:
            self.pieces = (b"".join(self.pieces),)

    def parts(self) -> list[bytes | memoryview]:
        """The body's pieces as the recipe lists them (slices of the joined body once settled)."""
        pieces = self.pieces
        if len(pieces) == len(self.recipe):
            return list(pieces)
        view = memoryview(pieces[0])
        return [view[start:end] for _, start, end in self.recipe]


def _deflate(data: bytes | memoryview) -> bytes:
    """Raw deflate from an empty window, ended by a sync flush (byte-aligned, not final): such
    pieces concatenate into one valid deflate stream."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


FINAL_BLOCK = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush()  # an empty final block


class FeedCache:
    def __init__(self, max_bytes: int) -> None:
        self.memory = MemoryCache(max_bytes)
        self.indexes = SegmentIndexes()
        self._staff_of: dict[str, tuple[int, ...]] = {}

    def staff_of(self, scope_key: str) -> tuple[int, ...]:
        """The staff a feed's last render in this process showed (scope_changes.py): whose kept
        segments the next render asks about."""
        return self._staff_of.get(scope_key, ())

    def keep_staff_of(self, scope_key: str, staff_ids: tuple[int, ...]) -> None:
        if self._staff_of.get(scope_key) != staff_ids:
            if len(self._staff_of) >= MAX_SCOPES:  # a bound, as for the indexes: all go at once
                self._staff_of.clear()
            self._staff_of[scope_key] = staff_ids

    def previous_segment(self, family: str) -> tuple[bytes, Index] | None:
        """The family's last segment in memory with its index, for a rebuild to reuse."""
        found = self.indexes.get(family)
        if found is None:
            return None
        body = self.memory.get(found[0])
        return None if body is None else (body, found[1])

    # -- whole bodies (memory only) ------------------------------------------------------------

    def body(self, cache_key: str) -> BodyEntry | None:
        return self.memory.get(cache_key)  # type: ignore[no-any-return]

    def keep_body(self, cache_key: str, scope_key: str, entry: BodyEntry) -> None:
        self.memory.put(cache_key, entry, family="body:" + scope_key)

    def gzipped(self, cache_key: str, scope_key: str, entry: BodyEntry) -> bytes:
        """The gzip form of a body, made once per version and process.

        One gzip member whose deflate stream is the concatenation of one piece per segment
        (and header and footer), each compressed on its own: after one change only the changed
        segment is compressed again, the other pieces come from memory (issue 17; compressing
        5 MB at once took ~60 ms). The bytes depend only on the body's pieces, so every process
        makes the same bytes for a version (one strong ETag per coding).
        """
        key = cache_key + "|gzip"
        packed = self.memory.get(key)
        if packed is None:
            crc = size = 0
            out = [GZIP_HEADER]
            for (piece_key, _, _), part in zip(entry.recipe, entry.parts(), strict=True):
                crc = zlib.crc32(part, crc)
                size += len(part)
                piece = self.memory.get(piece_key) if piece_key else None
                if piece is None:
                    piece = _deflate(part)
                    if piece_key:
                        self.memory.put(piece_key, piece, family=piece_key.rsplit(":r", 1)[0])
                out.append(piece)
            out += [FINAL_BLOCK, struct.pack("<II", crc, size & 0xFFFFFFFF)]
            packed = b"".join(out)
            # Only beside its body: a body not kept (render_feed) has no version to be kept under.
            if self.memory.get(cache_key) is entry:
                self.memory.put(key, packed, family="gzip:" + scope_key)
        return packed  # type: ignore[no-any-return]

    # -- per-staff segments (memory, then the database) ----------------------------------------

    def segment(self, reads: Reads, key: str, family: str) -> tuple[bytes | None, tuple[bytes, Index] | None]:
        """The segment `key` if in memory, else its family's previous segment to rebuild it
        beside, else the stored one, if any: (segment, previous), one of them None.

        Beside a previous segment the rebuild reads (id, revision) and renders what changed (or
        takes its stored fragment): no more than reading the stored segment would cost, and
        one round trip fewer when there is none (the usual case for the process that made the
        change). The bytes are the same either way: each fragment is a function of its
        appointment's revision."""
        found = self.memory.get(key)
        if found is not None:
            return found, None
        previous = self.previous_segment(family)
        return (None, previous) if previous is not None else (self.stored_segment(reads, key), None)

    def stored_segment(self, reads: Reads, key: str) -> bytes | None:
        """The segment from the feed_segment table (kept in memory once read), if stored."""
        found = _SEGMENT.first(reads, key=key)
        if found is None:
            return None
        self.memory.put(key, found[0])
        return found[0]  # type: ignore[no-any-return]

    def keep_segment(self, reads: Reads, key: str, family: str, staff_id: int, body: bytes,
                     later: list[Callable[[Session], None]] | None = None) -> None:
        """Store a segment and drop the older versions of the same family: in memory now, in
        the database now or, given `later`, when the caller runs it (after answering)."""
        self.memory.put(key, body, family="seg:" + family)
        if later is not None:
            later.append(partial(store_segment, key=key, family=family, staff_id=staff_id, body=body))
        else:
            store_segment(reads.session, key, family, staff_id, body)


_SEGMENT = Prebuilt(select(FeedSegment.body).where(FeedSegment.segment_key == bindparam("key")), binary=True)


_SEGMENT_TABLE: Any = FeedSegment.__table__
# Built once (statement building cost more than running them): the writes a render leaves for
# after its response (web/public_feeds.py).
_DROP_OLDER = delete(_SEGMENT_TABLE).where(_SEGMENT_TABLE.c.family == bindparam("family"),
                                           _SEGMENT_TABLE.c.segment_key != bindparam("key"))
_INSERT_NEW = {name: make(_SEGMENT_TABLE).on_conflict_do_nothing()
               for name, make in (("postgresql", pg_insert), ("sqlite", sqlite_insert))}


def store_segment(session: Session, key: str, family: str, staff_id: int, body: bytes) -> None:
    """The segment into the feed_segment table, older versions of its family out.

    Two processes may build the same segment at once; the insert ignores the second one
    instead of failing the request.
    """
    session.execute(_DROP_OLDER, {"family": family, "key": key})
    values = {"segment_key": key, "family": family, "staff_id": staff_id, "body": body,
              "created_at": utcnow()}
    insert_new = _INSERT_NEW.get(session.get_bind().dialect.name)
    if insert_new is not None:
        session.execute(insert_new, values)
    elif session.get(FeedSegment, key) is None:  # pragma: no cover - other dialects
        session.add(FeedSegment(**values))
