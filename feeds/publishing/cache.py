"""Caches behind published feeds, all keyed by versions read from the database.

- Whole bodies (and their gzip form) live in process memory only, one live version per feed:
  a new version replaces the old one at once instead of waiting for eviction.
- Per-staff segments live in memory and in the feed_segment table, shared by every process
  and machine serving the same database.

Because every key contains a version that is read from the database on each request, no
level can serve stale data: a change makes new keys, and old entries are never asked for again.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from calsync.models import FeedSegment, utcnow


class MemoryCache:
    """A thread-safe LRU of bytes bounded by total size, one entry per family.

    Storing a key whose family already has an entry replaces that entry: superseded versions of
    a feed free their memory at once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._family_key: dict[str, str] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old)

    def put(self, key: str, value: bytes, family: str | None = None) -> None:
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


class FeedCache:
    def __init__(self, max_bytes: int) -> None:
        self.memory = MemoryCache(max_bytes)

    # -- whole bodies (memory only) ------------------------------------------------------------

    def body(self, cache_key: str) -> bytes | None:
        return self.memory.get(cache_key)

    def keep_body(self, cache_key: str, scope_key: str, body: bytes) -> None:
        self.memory.put(cache_key, body, family="body:" + scope_key)

    def gzipped(self, cache_key: str, scope_key: str, body: bytes) -> bytes:
        """The gzip form of a body, compressed once per version and process."""
        key = cache_key + "|gzip"
        packed = self.memory.get(key)
        if packed is None:
            # mtime=0 keeps the bytes identical across processes (one strong ETag per coding).
            packed = gzip.compress(body, compresslevel=6, mtime=0)
            self.memory.put(key, packed, family="gzip:" + scope_key)
        return packed

    # -- per-staff segments (memory, then the database) ----------------------------------------

    def segment(self, session: Session, key: str) -> bytes | None:
        body = self.memory.get(key)
        if body is None:
            body = session.scalar(select(FeedSegment.body).where(FeedSegment.segment_key == key))
            if body is not None:
                self.memory.put(key, body)
        return body

    def keep_segment(self, session: Session, key: str, family: str, staff_id: int, body: bytes) -> None:
        """Store a segment and drop the older versions of the same family.

        Two processes may build the same segment at once; the insert ignores the second one
        instead of failing the request.
        """
        self.memory.put(key, body, family="seg:" + family)
        session.execute(
            delete(FeedSegment).where(FeedSegment.family == family, FeedSegment.segment_key != key)
        )
        values = {"segment_key": key, "family": family, "staff_id": staff_id, "body": body,
                  "created_at": utcnow()}
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(pg_insert(FeedSegment).values(**values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            session.execute(sqlite_insert(FeedSegment).values(**values).on_conflict_do_nothing())
        elif session.get(FeedSegment, key) is None:  # pragma: no cover - other dialects
            session.add(FeedSegment(**values))
