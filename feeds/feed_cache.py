"""Rendered feed bodies, cached by feed version.

Two levels: a bounded in-process LRU, and the feed_body table shared by every process and
machine serving the same database. Both are keyed by the feed *version*, which is read from the
database on every request, so neither level can serve a stale feed: a change makes a new key,
and an old entry is simply never asked for again.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import FeedBody


class MemoryCache:
    """A thread-safe LRU of bytes bounded by total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


class FeedCache:
    def __init__(self, max_bytes: int) -> None:
        self.memory = MemoryCache(max_bytes)

    def load(self, session: Session, cache_key: str) -> bytes | None:
        body = self.memory.get(cache_key)
        if body is not None:
            return body
        body = session.scalar(select(FeedBody.body).where(FeedBody.cache_key == cache_key))
        if body is not None:
            self.memory.put(cache_key, body)
        return body

    def store(
        self, session: Session, cache_key: str, scope_key: str, body: bytes, modified: datetime
    ) -> None:
        """Keep the new body and drop the older versions of the same feed.

        Two processes may render the same version at once; the insert ignores the loser
        instead of failing the request.
        """
        self.memory.put(cache_key, body)
        session.execute(
            delete(FeedBody).where(FeedBody.scope_key == scope_key, FeedBody.cache_key != cache_key)
        )
        dialect = session.get_bind().dialect.name
        values = {
            "cache_key": cache_key,
            "scope_key": scope_key,
            "body": body,
            "last_modified": modified,
            "created_at": modified,
        }
        if dialect == "postgresql":
            session.execute(pg_insert(FeedBody).values(**values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            session.execute(sqlite_insert(FeedBody).values(**values).on_conflict_do_nothing())
        else:  # pragma: no cover - other dialects get the portable two-step
            if session.get(FeedBody, cache_key) is None:
                session.add(FeedBody(**values))

    def gzipped(self, cache_key: str, body: bytes) -> bytes:
        """The gzip form of a body, compressed once per version and process."""
        key = cache_key + "|gzip"
        packed = self.memory.get(key)
        if packed is None:
            # mtime=0 keeps the bytes (and so the ETag's meaning) identical across processes.
            packed = gzip.compress(body, compresslevel=6, mtime=0)
            self.memory.put(key, packed)
        return packed
