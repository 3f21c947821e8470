"""The calendar store of a CalDAV calendar (RFC 4791), over the caldav library on the guarded
session of feeds.sources.caldav_source (address checks, caps, the sync's deadline).

- list: a sync-collection REPORT without a token (RFC 6578 §3.8: the whole collection, with a
  token for next time); on a server without it, caldav lists by calendar-query and makes up a
  "fake-" token, which is no token at all for us. A listing the server truncated (RFC 6578
  §3.6) and caldav could not page through is StoreUnavailable: every item missing from a
  listing counts as deleted, and a partial answer must never cancel a booking.
- changes_since: sync-collection with the token. Any refusal of the token (RFC 6578 §3.2
  "valid-sync-token", or a server without the REPORT) is InvalidSyncToken; the caller lists.
  Only a member reported with a 404 status is deleted (RFC 6578 §3.5.2).
- An item listed without an ETag (a server omitting DAV:getetag for some items, or caldav's
  calendar-query fallback when its ETag PROPFIND fails) is there all the same: it is read, and
  listed with a version made up from its body (MADE_UP), so a change still shows and its
  absence is never taken for a deletion. A write naming such a version reads the item first
  and goes ahead only if its body is still the one the version was made from.
- get_many: calendar-multiget REPORTs in batches (RFC 4791 §7.9), one by one where a batch
  cannot be read (caldav_source._load_batch).
- writes: PUT with If-None-Match: * or If-Match, DELETE with If-Match; a PUT answered without
  an ETag is followed by a GET to learn it (RFC 4791 §5.3.4 lets servers change what we wrote).
Transport failures come out as StoreUnavailable with the guarded session's sentence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from caldav.calendarobjectresource import Event
from caldav.lib import error as dav_error
from caldav.lib import vcal

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
# The prefix of a version made up from an item's body where the server gave no ETag: never a
# real ETag (those are quoted, RFC 9110 §8.8.3), so never sent to the server as one.
MADE_UP = "calsync-body-"


def made_up_etag(body: bytes | str) -> str:
    """A version for an item the server listed without an ETag: the hash of its body, as
    caldav hands bodies out (vcal.fix: line ends and known flaws normalised), so the same item
    read by multiget, by calendar-query or by GET gets the same version."""
    try:
        text = vcal.fix(body).encode("utf-8")
    except (UnicodeError, ValueError):  # not UTF-8 (caldav_source._load reads those raw)
        text = body if isinstance(body, bytes) else body.encode("utf-8", "replace")
    return MADE_UP + hashlib.sha256(text).hexdigest()[:40]


class CalDAVStore:
    """One calendar on an open guarded DAV client; made by open_caldav_store."""

    def __init__(self, client: Any, url: str, max_items: int) -> None:
        self._client = client
        self._url = normalise_calendar_url(url)
        self._calendar = client.calendar(url=self._url)
        self._max_items = max_items
        self._read: dict[str, bytes] = {}  # bodies read while listing, for the get_many after it

    def collection_tag(self) -> str | None:
        tag = self._calendar.get_properties([GetCTag()]).get(GetCTag.tag)
        return str(tag) if tag else None

    def list(self) -> Listing:
        found = self._calendar.objects_by_sync_token(sync_token=None, load_objects=False)
        if getattr(found, "truncated", False):
            raise StoreUnavailable("incomplete", "The calendar server sent only part of the calendar, so "
                                                 "nothing in it was taken as deleted; it will be read again.")
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
        """The present items with their ETags, and the members reported deleted: only those with
        a 404 status (caldav's deleted_urls; RFC 6578 §3.5.2). A member without an ETag that
        was not reported deleted is there: it gets a made-up version (_made_up)."""
        removed = getattr(found, "deleted_urls", None) or set()
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        unversioned: dict[str, Any] = {}
        for obj in found:
            etag = (getattr(obj, "props", None) or {}).get("{DAV:}getetag")
            if etag:
                changed[str(obj.url)] = str(etag)
            elif obj.url.canonical() in removed:
                deleted.add(str(obj.url))
            else:
                unversioned[str(obj.url)] = obj
            if len(changed) + len(unversioned) > self._max_items:
                raise FetchError("too_large", f"The calendar has more than {self._max_items} items.")
        changed.update(self._made_up(unversioned, deleted))
        return changed, deleted

    def _made_up(self, unversioned: dict[str, Any], deleted: set[str]) -> dict[str, str]:
        """Versions made up from the bodies of items listed without an ETag: the bodies a
        calendar-query listing brought along, else read by multiget, else one by one, where a
        404 is the only thing that makes an item deleted (added to `deleted`). Any other
        failure to read one propagates: the sync fails, nothing is taken as deleted."""
        bodies: dict[str, bytes] = {}
        for href, obj in unversioned.items():
            data = obj.data if getattr(obj, "_data", None) else None
            if data:
                bodies[href] = data.encode("utf-8") if isinstance(data, str) else data
        missing = [href for href in unversioned if href not in bodies]
        bodies.update({href: item.body for href, item in self.get_many(missing).items()})
        for href in unversioned:
            if href not in bodies:
                try:
                    bodies[href] = self.get(href).body
                except ItemNotFound:
                    deleted.add(href)
        self._read.update(bodies)
        return {href: made_up_etag(body) for href, body in bodies.items()}

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
        found: dict[str, bytes] = {}
        wanted = []
        for href in hrefs:
            if href in self._read:
                found[href] = self._read.pop(href)  # read just now, while listing
            else:
                wanted.append(href)
        objs = [Event(client=self._client, url=href, parent=self._calendar) for href in wanted]
        for start in range(0, len(objs), MULTIGET_BATCH):
            found.update(_load_batch(self._client, self._calendar, objs[start:start + MULTIGET_BATCH]))
        # A multiget answers with bodies, and the ETags came with the listing: the caller has
        # them. (caldav does not keep a multiget's ETags; None here is "as listed".)
        return {href: Item(href, None, body) for href, body in found.items()}

    def create(self, name: str, body: bytes) -> Written:
        href = self._url.rstrip("/") + "/" + name
        return self._put(href, body, {"If-None-Match": "*"})  # never replace what is there

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        try:
            condition = self._if_match(href, etag)
        except ItemNotFound:
            raise PreconditionFailed(href) from None  # gone since: what a 412 would say
        return self._put(href, body, condition)

    def _if_match(self, href: str, etag: str | None) -> dict[str, str]:
        """The condition of a write at `etag`. A made-up version is checked here, by reading
        the item (its body must still give that version), and the write is then conditional on
        the ETag that read brought, if any; raises PreconditionFailed or ItemNotFound."""
        if not etag:
            return {}
        if not etag.startswith(MADE_UP):
            return {"If-Match": etag}
        current = self.get(href)
        if made_up_etag(current.body) != etag:
            raise PreconditionFailed(href)
        return {"If-Match": current.etag} if current.etag else {}

    def _put(self, href: str, body: bytes, condition: dict[str, str]) -> Written:
        self._read.pop(href, None)
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
        self._read.pop(href, None)
        response = self._client.delete(href, self._if_match(href, etag))
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
