"""Microsoft 365 / Outlook.com calendars (Microsoft Graph v1.0) as a calendar store — the
foundation of issue 12, verified against the contract fake in tests/fakes/microsoft_graph.py
only.

Requests, tokens, retries, the per-mailbox cap: microsoft_api.py; events <-> iCalendar and
busy time: microsoft_events.py.

- An item is one event instance as calendarView gives it (microsoft_events.py); its href is
  Graph's event id, its ETag Graph's @odata.etag (W/"<changeKey>").
- list: `calendarView/delta?startDateTime&endDateTime` (the sync window), following
  @odata.nextLink to the @odata.deltaLink, which is the sync token (the window is part of it:
  rolling the window forward means listing again). The listing names its window: an event
  missing from it may only lie outside (feeds.calendars.twoway.confirm_absent reads our
  bookings by id before any is taken for deleted). changes_since follows the deltaLink the
  same way; `@removed` items are gone from the view — deleted (reason `deleted`) or moved out
  of the window (`changed`: reported in Changes.left, not a deletion); 410 / syncStateNotFound
  is InvalidSyncToken.
- get: a delta round returns whole events; those that are not ours are kept from the round
  and read from it (a window move loads every event: one request per page, not per event).
  Ours are read with GET ($expand of our single-value extended properties, which a delta
  round cannot expand).
- create: a lookup of our UID (single-value extended property) first, so that an event already
  there is PreconditionFailed as the store contract asks; then POST with a `transactionId`
  derived from the UID, so a POST retried after a lost answer never makes a second event.
- update (PATCH) and delete send If-Match with the ETag; 412 is PreconditionFailed.
- Delegated access reads `/me/...`; the company-wide connection (application permissions)
  will read `/users/{address}/...` — `user` below.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from calsync.feeds.calendars.providers.base import Tokens
from calsync.feeds.calendars.providers.microsoft_api import (
    GraphApi,
    MicrosoftClient,
    MicrosoftEndpoints,
    expect_ok,
    graph_api,
    json_of,
)
from calsync.feeds.calendars.providers.microsoft_events import (
    EXPAND_OURS,
    UID_PROPERTY,
    Event,
    UnwritableBody,
    event_etag,
    from_ical,
    to_ical,
    uid_of,
)
from calsync.feeds.calendars.store import (
    Changes,
    InvalidSyncToken,
    Item,
    ItemNotFound,
    Listing,
    PreconditionFailed,
    StoreUnavailable,
    WriteRefused,
    Written,
)
from calsync.feeds.sources.fetch import FetchLimits

PAGE_SIZE = 100  # Prefer: odata.maxpagesize; Graph's own default for calendarView delta is 10-50
WINDOW_PAST = timedelta(days=30)
WINDOW_AHEAD = timedelta(days=400)


def transaction_id_for(uid: str) -> str:
    """Graph's `transactionId` for our UID: the same UID always gives the same id, so a POST
    retried after a lost answer returns the event created the first time. A digest keeps it
    short whatever the UID."""
    return "calsync-" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:40]


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"  # OData ABNF: a quote inside is doubled


class GraphCalendarStore:
    """One Microsoft Graph calendar as a CalendarStore (feeds.calendars.store)."""

    def __init__(self, api: GraphApi, calendar_id: str, *, user: str | None = None,
                 window: tuple[datetime, datetime] | None = None, max_items: int = 20_000) -> None:
        self.api = api
        owner = "/me" if user is None else f"/users/{quote(user, safe='@')}"
        self._calendar = f"{owner}/calendar" if calendar_id in ("", "primary") else \
            f"{owner}/calendars/{quote(calendar_id, safe='')}"
        now = datetime.now(UTC).replace(microsecond=0)
        self.window = window or (now - WINDOW_PAST, now + WINDOW_AHEAD)
        self._max_items = max_items
        self.page_size = PAGE_SIZE
        # Events as the last delta round gave them, for `get` without a request of its own
        # (not ours: see _reusable). Taken once; dropped when we write the event.
        self._listed: dict[str, Event] = {}

    def collection_tag(self) -> str | None:
        return None  # Graph has no CTag; the deltaLink does the job

    def _delta_url(self) -> str:
        start, end = self.window
        return self.api.url(f"{self._calendar}/calendarView/delta", {
            "startDateTime": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    def _round(self, url: str) -> tuple[dict[str, str], set[str], set[str], str]:
        """One delta round: changed ids with their ETags, removed ids, those of them that only
        left the window, the new deltaLink."""
        changed: dict[str, str] = {}
        removed: set[str] = set()
        left: set[str] = set()
        delta_link: str | None = None
        for page in self.api.pages(url, prefer=f"odata.maxpagesize={self.page_size}"):
            for ev in page.get("value") or []:
                event_id = str(ev.get("id", ""))
                if not event_id or ev.get("type") == "seriesMaster":
                    continue
                if "@removed" in ev:  # gone from this view
                    changed.pop(event_id, None)
                    self._listed.pop(event_id, None)
                    removed.add(event_id)
                    # {"reason": "deleted"}: deleted. "changed" (or anything else): it no longer
                    # matches the view — moved out of the window — and may well still exist.
                    reason = ev["@removed"].get("reason") if isinstance(ev["@removed"], dict) else None
                    if reason == "deleted":
                        left.discard(event_id)
                    else:
                        left.add(event_id)
                else:
                    removed.discard(event_id)
                    left.discard(event_id)
                    changed[event_id] = event_etag(ev)
                    if _reusable(ev):
                        self._listed[event_id] = _kept(ev)
                    else:
                        self._listed.pop(event_id, None)
            if len(changed) > self._max_items:
                raise StoreUnavailable("too_large", f"The calendar has more than {self._max_items} events.")
            delta_link = page.get("@odata.deltaLink") or delta_link
        if not delta_link or not self.api.owns(str(delta_link)):
            raise InvalidSyncToken()
        return changed, removed, left, str(delta_link)

    def list(self) -> Listing:
        """The events of the window only: one missing from it may just lie outside."""
        changed, _removed, _left, token = self._round(self._delta_url())
        return Listing(etags=changed, token=token, window=self.window)

    def changes_since(self, token: str) -> Changes:
        # The token must be a deltaLink of this calendar: it is a URL we send the bearer token to.
        if not token.startswith(self.api.url(f"{self._calendar}/calendarView/delta") + "?"):
            raise InvalidSyncToken()
        changed, removed, left, new_token = self._round(token)
        return Changes(changed=changed, deleted=removed, token=new_token, left=frozenset(left),
                       window=self.window)

    def _event_url(self, href: str, params: dict[str, str] | None = None) -> str:
        return self.api.url(f"{self._calendar}/events/{quote(href, safe='')}", params)

    def _read(self, href: str) -> Event | None:
        response = self.api.call("GET", self._event_url(href, {"$expand": EXPAND_OURS}))
        if response.status_code in (404, 410):
            return None
        expect_ok(response, 200)
        return json_of(response)

    def get(self, href: str) -> Item:
        ev = self._listed.pop(href, None) or self._read(href)
        if ev is None:
            raise ItemNotFound(href)
        return Item(href, event_etag(ev), to_ical([ev]))

    def get_many(self, hrefs: Iterable[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for href in hrefs:
            try:
                found[href] = self.get(href)
            except ItemNotFound:
                continue
        return found

    def _find_uid(self, uid: str) -> str | None:
        """The id of our event with this UID, if there is one (Graph's documented filter on a
        single-value extended property)."""
        where = (f"singleValueExtendedProperties/Any(ep: ep/id eq {_odata_string(UID_PROPERTY)} "
                 f"and ep/value eq {_odata_string(uid)})")
        response = self.api.call("GET", self.api.url(f"{self._calendar}/events",
                                                     {"$filter": where, "$select": "id"}))
        expect_ok(response, 200)
        found = json_of(response).get("value") or []
        return str(found[0]["id"]) if found else None

    def create(self, name: str, body: bytes) -> Written:
        event = _writable(body)
        uid = uid_of(event)
        existing = self._find_uid(uid)
        if existing is not None:
            raise PreconditionFailed(existing)  # If-None-Match: * — already there
        response = self.api.call("POST", self.api.url(f"{self._calendar}/events"),
                                 body={**event, "transactionId": transaction_id_for(uid)})
        if response.status_code not in (200, 201):
            raise WriteRefused(response.status_code)
        answer = json_of(response)
        return Written(str(answer["id"]), event_etag(answer))

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        self._listed.pop(href, None)
        response = self.api.call("PATCH", self._event_url(href), body=_writable(body),
                                 headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410, 412):
            raise PreconditionFailed(href)  # RFC 9110 §13.1.1: If-Match on a missing item fails too
        if response.status_code != 200:
            raise WriteRefused(response.status_code)
        return Written(href, event_etag(json_of(response)))

    def delete(self, href: str, etag: str | None) -> None:
        self._listed.pop(href, None)
        response = self.api.call("DELETE", self._event_url(href),
                                 headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410):
            raise ItemNotFound(href)
        if response.status_code == 412:
            raise PreconditionFailed(href)
        if response.status_code not in (200, 204):
            raise WriteRefused(response.status_code)


def _reusable(ev: Event) -> bool:
    """Whether a delta round's copy of an event reads as GET would give it: a delta round cannot
    $expand our extended properties, so only for events that are not ours (ours are created
    with our `transactionId`, which Graph returns with the event)."""
    return not str(ev.get("transactionId") or "").startswith("calsync-")


def _kept(ev: Event) -> Event:
    """What to_ical reads of an event: an HTML body is not (its bodyPreview is), and is big."""
    body = ev.get("body")
    if isinstance(body, dict) and body.get("contentType") != "text":
        return {k: v for k, v in ev.items() if k != "body"}
    return ev


def _writable(body: bytes) -> Event:
    try:
        return from_ical(body)
    except UnwritableBody:
        raise WriteRefused(400) from None


@contextmanager
def open_graph_store(endpoints: MicrosoftEndpoints, client: MicrosoftClient, tokens: Tokens, calendar_id: str,
                     *, mailbox: str, user: str | None = None, allow_private: bool, limits: FetchLimits,
                     window: tuple[datetime, datetime] | None = None, max_items: int = 20_000,
                     on_tokens: Callable[[Tokens], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> Iterator[GraphCalendarStore]:
    """One calendar of `mailbox` (the account's stable id: it keys the per-mailbox cap)."""
    with graph_api(endpoints, client, tokens, mailbox=mailbox, allow_private=allow_private, limits=limits,
                   on_tokens=on_tokens, sleep=sleep) as api:
        yield GraphCalendarStore(api, calendar_id, user=user, window=window, max_items=max_items)

