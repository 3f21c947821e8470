"""Microsoft 365 / Outlook.com calendars (Microsoft Graph v1.0) as a calendar store — the
foundation of issue 12, verified against the contract fake in tests/fakes/microsoft_graph.py
only.

Requests, tokens, retries, the per-mailbox cap: microsoft_api.py; events <-> iCalendar and
busy time: microsoft_events.py.

- An item is one event instance as calendarView gives it (microsoft_events.py); its href is
  Graph's event id, its ETag Graph's @odata.etag (W/"<changeKey>").
- list: `calendarView/delta?startDateTime&endDateTime` (the sync window), following
  @odata.nextLink to the @odata.deltaLink, which is the sync token (the window is part of it:
  rolling the window forward means listing again). changes_since follows the deltaLink the
  same way; `@removed` items are deletions; 410 / syncStateNotFound is InvalidSyncToken.
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

    def collection_tag(self) -> str | None:
        return None  # Graph has no CTag; the deltaLink does the job

    def _delta_url(self) -> str:
        start, end = self.window
        return self.api.url(f"{self._calendar}/calendarView/delta", {
            "startDateTime": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    def _round(self, url: str) -> tuple[dict[str, str], set[str], str]:
        """One delta round: changed ids with their ETags, removed ids, the new deltaLink."""
        changed: dict[str, str] = {}
        removed: set[str] = set()
        delta_link: str | None = None
        for page in self.api.pages(url, prefer=f"odata.maxpagesize={self.page_size}"):
            for ev in page.get("value") or []:
                event_id = str(ev.get("id", ""))
                if not event_id or ev.get("type") == "seriesMaster":
                    continue
                if "@removed" in ev:  # {"reason": "deleted" | "changed"}: gone from this view
                    changed.pop(event_id, None)
                    removed.add(event_id)
                else:
                    removed.discard(event_id)
                    changed[event_id] = event_etag(ev)
            if len(changed) > self._max_items:
                raise StoreUnavailable("too_large", f"The calendar has more than {self._max_items} events.")
            delta_link = page.get("@odata.deltaLink") or delta_link
        if not delta_link or not self.api.owns(str(delta_link)):
            raise InvalidSyncToken()
        return changed, removed, str(delta_link)

    def list(self) -> Listing:
        changed, _removed, token = self._round(self._delta_url())
        return Listing(etags=changed, token=token)

    def changes_since(self, token: str) -> Changes:
        # The token must be a deltaLink of this calendar: it is a URL we send the bearer token to.
        if not token.startswith(self.api.url(f"{self._calendar}/calendarView/delta") + "?"):
            raise InvalidSyncToken()
        changed, removed, new_token = self._round(token)
        return Changes(changed=changed, deleted=removed, token=new_token)

    def _event_url(self, href: str, params: dict[str, str] | None = None) -> str:
        return self.api.url(f"{self._calendar}/events/{quote(href, safe='')}", params)

    def _read(self, href: str) -> Event | None:
        response = self.api.call("GET", self._event_url(href, {"$expand": EXPAND_OURS}))
        if response.status_code in (404, 410):
            return None
        expect_ok(response, 200)
        return json_of(response)

    def get(self, href: str) -> Item:
        ev = self._read(href)
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
        response = self.api.call("PATCH", self._event_url(href), body=_writable(body),
                                 headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410, 412):
            raise PreconditionFailed(href)  # RFC 9110 §13.1.1: If-Match on a missing item fails too
        if response.status_code != 200:
            raise WriteRefused(response.status_code)
        return Written(href, event_etag(json_of(response)))

    def delete(self, href: str, etag: str | None) -> None:
        response = self.api.call("DELETE", self._event_url(href),
                                 headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410):
            raise ItemNotFound(href)
        if response.status_code == 412:
            raise PreconditionFailed(href)
        if response.status_code not in (200, 204):
            raise WriteRefused(response.status_code)


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

