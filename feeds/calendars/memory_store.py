"""A calendar store in memory: the semantics of a CalDAV calendar (ETags, conditional writes,
sync tokens that can expire) without a server, for fast tests of sync and two-way sync and as
the base of provider fakes.

- ETags are opaque and change on every write, also when the body is the same (servers such as
  Xandikos do that; Radicale derives them from the content — callers must cope with both, so
  the stricter one is modelled).
- Sync tokens name a point in the store's write history. `expire_tokens` forgets all tokens
  handed out so far (a server that pruned its history, RFC 6578 §3.2), `supports_sync=False`
  a server without sync-collection at all.
- Fault injection: `fail_next(operation, error)` makes the next call of that operation raise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from calsync.feeds.calendars.store import (
    Changes,
    InvalidSyncToken,
    Item,
    ItemNotFound,
    Listing,
    PreconditionFailed,
    StoreAddress,
    Written,
)
from calsync.feeds.sources.fetch import FetchLimits

TOKEN_PREFIX = "memory-sync-"  # noqa: S105 - a sync token names a version, it is no secret


class MemoryStore:
    def __init__(self, url: str = "memory://calendar/", *, supports_sync: bool = True) -> None:
        self.url = url.rstrip("/") + "/"
        self.supports_sync = supports_sync
        self._items: dict[str, tuple[bytes, str]] = {}  # href → (body, ETag)
        self._revision = 0
        self._written_at: dict[str, int] = {}  # href → revision of its last write or deletion
        self._oldest_token = 0  # tokens before this revision are forgotten
        self._etags = itertools.count(1)
        self._faults: dict[str, list[BaseException]] = {}
        self.calls: list[str] = []  # the operations called, in order (for tests that count)

    # --- the test-side controls --------------------------------------------------------------

    def fail_next(self, operation: str, error: BaseException) -> None:
        """The next call of `operation` ("list", "get", "update", ...) raises `error`."""
        self._faults.setdefault(operation, []).append(error)

    def expire_tokens(self) -> None:
        self._oldest_token = self._revision + 1

    def put_directly(self, name: str, body: bytes) -> str:
        """Someone else (the staff member in their calendar app) creates or replaces an item."""
        href = self.url + name if "://" not in name else name
        self._write(href, body)
        return href

    def delete_directly(self, href: str) -> None:
        self._remove(href)

    def body(self, href: str) -> bytes:
        return self._items[href][0]

    @property
    def hrefs(self) -> set[str]:
        return set(self._items)

    # --- CalendarStore -----------------------------------------------------------------------

    def collection_tag(self) -> str | None:
        self._call("collection_tag")
        return f"memory-ctag-{self._revision}"

    def list(self) -> Listing:
        self._call("list")
        return Listing(etags={h: e for h, (_b, e) in self._items.items()},
                       token=self._token() if self.supports_sync else None)

    def changes_since(self, token: str) -> Changes:
        self._call("changes_since")
        since = self._parse(token)
        changed = {h: self._items[h][1] for h, rev in self._written_at.items()
                   if rev > since and h in self._items}
        deleted = {h for h, rev in self._written_at.items() if rev > since and h not in self._items}
        return Changes(changed=changed, deleted=deleted, token=self._token())

    def get(self, href: str) -> Item:
        self._call("get")
        if href not in self._items:
            raise ItemNotFound(href)
        body, etag = self._items[href]
        return Item(href, etag, body)

    def get_many(self, hrefs: Iterable[str]) -> dict[str, Item]:
        self._call("get_many")
        return {h: Item(h, self._items[h][1], self._items[h][0]) for h in hrefs if h in self._items}

    def create(self, name: str, body: bytes) -> Written:
        self._call("create")
        href = self.url + name
        if href in self._items:
            raise PreconditionFailed(href)
        return Written(href, self._write(href, body))

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        self._call("update")
        if href not in self._items or (etag is not None and self._items[href][1] != etag):
            raise PreconditionFailed(href)  # RFC 9110 §13.1.1: If-Match on a missing item fails too
        return Written(href, self._write(href, body))

    def delete(self, href: str, etag: str | None) -> None:
        self._call("delete")
        if href not in self._items:
            raise ItemNotFound(href)
        if etag is not None and self._items[href][1] != etag:
            raise PreconditionFailed(href)
        self._remove(href)

    # --- inside ------------------------------------------------------------------------------

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    def _write(self, href: str, body: bytes) -> str:
        self._revision += 1
        etag = f'"m{next(self._etags)}"'
        self._items[href] = (bytes(body), etag)
        self._written_at[href] = self._revision
        return etag

    def _remove(self, href: str) -> None:
        del self._items[href]
        self._revision += 1
        self._written_at[href] = self._revision

    def _token(self) -> str:
        return f"{TOKEN_PREFIX}{self._revision}"

    def _parse(self, token: str) -> int:
        if not self.supports_sync or not token.startswith(TOKEN_PREFIX):
            raise InvalidSyncToken()
        try:
            revision = int(token[len(TOKEN_PREFIX):])
        except ValueError:
            raise InvalidSyncToken() from None
        if not self._oldest_token <= revision <= self._revision:
            raise InvalidSyncToken()
        return revision


class MemoryStores:
    """A StoreOpener over memory stores by URL, for a SyncContext in tests: each connection's
    calendar is the store registered for its URL."""

    def __init__(self) -> None:
        self.by_url: dict[str, MemoryStore] = {}

    def add(self, store: MemoryStore) -> MemoryStore:
        self.by_url[store.url] = store
        return store

    @contextmanager
    def __call__(
        self, address: StoreAddress, *, allow_private: bool, limits: FetchLimits, max_items: int = 20_000,
    ) -> Iterator[MemoryStore]:
        yield self.by_url[address.url.rstrip("/") + "/"]
