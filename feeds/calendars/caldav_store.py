"""The calendar store of a CalDAV calendar (RFC 4791), over the caldav library on the guarded
session of feeds.sources.caldav_source (address checks, caps, the sync's deadline).

- list: a sync-collection REPORT without a token (RFC 6578 §3.8: the whole collection, with a
  token for next time); on a server without it, caldav lists by calendar-query and makes up a
  "fake-" token, which is no token at all for us.
- changes_since: sync-collection with the token. Any refusal of the token (RFC 6578 §3.2
  "valid-sync-token", or a server without the REPORT) is InvalidSyncToken; the caller lists.
- get_many: calendar-multiget REPORTs in batches (RFC 4791 §7.9), one by one where a batch
  cannot be read (caldav_source._load_batch).
- writes: PUT with If-None-Match: * or If-Match, DELETE with If-Match; a PUT answered without
  an ETag is followed by a GET to learn it (RFC 4791 §5.3.4 lets servers change what we wrote).
Transport failures come out as StoreUnavailable with the guarded session's sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from caldav.calendarobjectresource import Event
from caldav.lib import error as dav_error

from calsync.feeds.calendars.store import (
    Changes,
    InvalidSyncToken,
    Item,
    ItemNotFound,
    Listing,
    PreconditionFailed,
    StoreAddress,
    StoreUnavailable,
    WriteRefused,
    Written,
)
from calsync.feeds.sources.addresses import normalise_calendar_url
from calsync.feeds.sources.caldav_source import GetCTag, _load_batch, dav_client
from calsync.feeds.sources.fetch import FetchError, FetchLimits, GuardedSession

# Items per calendar-multiget REPORT: big enough to save round trips, small enough that one
# answer stays far below the per-answer size cap.
MULTIGET_BATCH = 100
GONE = (404, 410)


class CalDAVStore:
    """One calendar on an open guarded DAV client; made by open_caldav_store."""

    def __init__(self, client: Any, url: str, max_items: int) -> None:
        self._client = client
        self._url = normalise_calendar_url(url)
        self._calendar = client.calendar(url=self._url)
        self._max_items = max_items

    def collection_tag(self) -> str | None:
        tag = self._calendar.get_properties([GetCTag()]).get(GetCTag.tag)
        return str(tag) if tag else None

    def list(self) -> Listing:
        found = self._calendar.objects_by_sync_token(sync_token=None, load_objects=False)
        token = found.sync_token if isinstance(found.sync_token, str) else None
        changed, _deleted = self._etags(found)
        return Listing(etags=changed, token=None if token is None or token.startswith("fake-") else token)

    def changes_since(self, token: str) -> Changes:
        try:
            found = self._calendar.objects_by_sync_token(sync_token=token, load_objects=False,
                                                         disable_fallback=True)
        except dav_error.DAVError as exc:
            if self._client.session.failure is not None:
                raise self._client.session.failure from exc  # a cap or the deadline, not the token
            # RFC 6578 §3.2: a token the server no longer knows is a 403 naming the
            # DAV:valid-sync-token precondition (Radicale); caldav tells that from a real
            # permission problem, which stays one.
            if self._calendar._is_genuine_authorization_error(exc):
                raise
            raise InvalidSyncToken() from exc
        new = found.sync_token if isinstance(found.sync_token, str) else None
        if not new or new.startswith("fake-"):
            raise InvalidSyncToken()  # nothing to continue from next time: list instead
        changed, deleted = self._etags(found)
        return Changes(changed=changed, deleted=deleted, token=new)

    def _etags(self, found: Any) -> tuple[dict[str, str], set[str]]:
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for obj in found:
            etag = (obj.props or {}).get("{DAV:}getetag")
            if etag is None:
                deleted.add(str(obj.url))  # RFC 6578 §3.5.2: reported with a 404 status
            else:
                changed[str(obj.url)] = etag
            if len(changed) > self._max_items:
                raise FetchError("too_large", f"The calendar has more than {self._max_items} items.")
        return changed, deleted

    def get(self, href: str) -> Item:
        response = self._client.request(href, "GET")
        if response.status in GONE:
            raise ItemNotFound(href)
        if response.status >= 300:
            raise StoreUnavailable("http_status", f"The calendar server answered HTTP {response.status} "
                                                  "when the event was read; it will be retried.")
        raw = response.raw
        body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
        return Item(href, response.headers.get("ETag"), body)

    def get_many(self, hrefs: Iterable[str]) -> dict[str, Item]:
        objs = [Event(client=self._client, url=href, parent=self._calendar) for href in hrefs]
        found: dict[str, bytes] = {}
        for start in range(0, len(objs), MULTIGET_BATCH):
            found.update(_load_batch(self._client, self._calendar, objs[start:start + MULTIGET_BATCH]))
        # A multiget answers with bodies, and the ETags came with the listing: the caller has
        # them. (caldav does not keep a multiget's ETags; None here is "as listed".)
        return {href: Item(href, None, body) for href, body in found.items()}

    def create(self, name: str, body: bytes) -> Written:
        href = self._url.rstrip("/") + "/" + name
        return self._put(href, body, {"If-None-Match": "*"})  # never replace what is there

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        return self._put(href, body, {"If-Match": etag} if etag else {})

    def _put(self, href: str, body: bytes, condition: dict[str, str]) -> Written:
        headers = {"Content-Type": "text/calendar; charset=utf-8", **condition}
        response = self._client.put(href, body.decode("utf-8"), headers)
        if response.status == 412:
            raise PreconditionFailed(href)
        if response.status not in (200, 201, 204):
            raise WriteRefused(response.status)
        etag = response.headers.get("ETag")
        if not etag:  # docs/protocol.md: a PUT without an ETag in the answer means GET it again
            etag = self._client.request(href, "GET").headers.get("ETag")
        return Written(href, etag)

    def delete(self, href: str, etag: str | None) -> None:
        response = self._client.delete(href, {"If-Match": etag} if etag else {})
        if response.status in GONE:
            raise ItemNotFound(href)
        if response.status == 412:
            raise PreconditionFailed(href)
        if response.status not in (200, 204):
            raise WriteRefused(response.status)


@contextmanager
def open_caldav_store(
    address: StoreAddress, *, allow_private: bool, limits: FetchLimits, max_items: int = 20_000,
) -> Iterator[CalDAVStore]:
    """A CalDAV calendar as a store, for one conversation on one guarded session."""
    try:
        with dav_client(address.url, address.username, address.password, allow_private=allow_private,
                        limits=limits) as (client, _resolver):
            assert isinstance(client.session, GuardedSession)
            client.session.max_items = max_items
            yield CalDAVStore(client, address.url, max_items)
    except StoreUnavailable:
        raise
    except FetchError as exc:
        raise StoreUnavailable(exc.kind, str(exc)) from exc
