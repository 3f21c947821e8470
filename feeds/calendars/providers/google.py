"""Google Calendar (API v3) as a calendar store and a provider — the foundation of issue 11,
verified against the contract fake in tests/fakes/google_calendar.py only.

Requests, tokens, retries and errors: google_api.py; events <-> iCalendar: google_events.py.

- list: events.list with singleEvents=false and showDeleted=true, following pageToken; the
  nextSyncToken comes on the last page only ("Synchronize resources efficiently").
- changes_since: events.list?syncToken=...; 410 Gone is InvalidSyncToken (the caller lists).
- An item is a series (google_events.py); its href is the master event's id.
- create: events.insert with an id derived from the UID: a retried insert is a 409, never a
  second event. A 409 on an event deleted earlier (Google keeps deleted ids) brings it back.
- update: events.patch (only the fields we own: reminders, colour and attendees the staff
  member added stay) with If-Match; delete with If-Match; 412 is PreconditionFailed.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

from calsync.feeds.calendars.providers.base import Channel, RemoteCalendar, Tokens
from calsync.feeds.calendars.providers.google_api import (
    PAGE_SIZE,
    PROVIDER,
    SCOPES,
    GoogleApi,
    GoogleClient,
    GoogleEndpoints,
    expect_status,
    google_api,
    json_of,
)
from calsync.feeds.calendars.providers.google_events import (
    Event,
    UnwritableBody,
    event_id_for,
    from_ical,
    is_master,
    master_etag,
    series_etag,
    series_key,
    to_ical,
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


class GoogleCalendarStore:
    """One Google calendar as a CalendarStore (feeds.calendars.store)."""

    def __init__(self, api: GoogleApi, calendar_id: str, max_items: int = 20_000) -> None:
        self.api = api
        self._events = f"/calendars/{quote(calendar_id, safe='')}/events"
        self._max_items = max_items
        self.page_size = PAGE_SIZE

    def collection_tag(self) -> str | None:
        return None  # Google has no CTag; the sync token does the job

    def list(self) -> Listing:
        series: dict[str, list[Event]] = {}
        token: str | None = None
        count = 0
        for page in self.api.pages(self._events, {"singleEvents": "false", "showDeleted": "true",
                                                  "maxResults": self.page_size}):
            for ev in page.get("items") or []:
                series.setdefault(series_key(ev), []).append(ev)
                count += 1
            if count > self._max_items:
                raise StoreUnavailable("too_large", f"The calendar has more than {self._max_items} events.")
            token = page.get("nextSyncToken")  # on the last page only: an earlier one has none
        etags = {key: series_etag(members, key) for key, members in series.items() if _alive(members, key)}
        return Listing(etags=etags, token=token)

    def changes_since(self, token: str) -> Changes:
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        series: dict[str, str] = {}  # key → iCalUID, for series to read whole
        new_token: str | None = None
        for page in self.api.pages(self._events, {"syncToken": token, "maxResults": self.page_size}):
            for ev in page.get("items") or []:
                key = series_key(ev)
                if is_master(ev) and ev.get("status") == "cancelled":
                    deleted.add(key)
                    changed.pop(key, None)
                    series.pop(key, None)
                elif is_master(ev) and not ev.get("recurrence"):
                    changed[key] = str(ev.get("etag", ""))
                elif key not in deleted:
                    series[key] = str(ev.get("iCalUID", ""))
            new_token = page.get("nextSyncToken") or new_token
        for key in series:  # a change to a series or one of its occurrences: its new version
            members = self._series(key)
            if members is None:
                deleted.add(key)
            else:
                changed[key] = series_etag(members, key)
        if not new_token:
            raise InvalidSyncToken()
        return Changes(changed=changed, deleted=deleted, token=new_token)

    def _series(self, key: str) -> builtins.list[Event] | None:
        response = self.api.call("GET", f"{self._events}/{quote(key, safe='')}")
        if response.status_code in (404, 410):
            return None
        expect_status(response, 200)
        master = json_of(response)
        if master.get("status") == "cancelled":
            return None
        if not master.get("recurrence"):
            return [master]
        members = [master]
        for page in self.api.pages(self._events, {"iCalUID": master.get("iCalUID", ""), "showDeleted": "true",
                                                  "singleEvents": "false", "maxResults": self.page_size}):
            members.extend(e for e in page.get("items") or [] if e.get("recurringEventId") == key)
        return members

    def get(self, href: str) -> Item:
        members = self._series(href)
        if members is None:
            raise ItemNotFound(href)
        return Item(href, series_etag(members, href), to_ical(members, href))

    def get_many(self, hrefs: Iterable[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for href in hrefs:
            try:
                found[href] = self.get(href)
            except ItemNotFound:
                continue
        return found

    def create(self, name: str, body: bytes) -> Written:
        event = _writable(body)
        event_id = event_id_for(event["iCalUID"])
        # sendUpdates=none: customers' invitations are sent by calsync itself (iTIP), as
        # SCHEDULE-AGENT=CLIENT asks of a CalDAV server.
        response = self.api.call("POST", self._events, params={"sendUpdates": "none"},
                                 body={**event, "id": event_id})
        if response.status_code == 409:
            existing = self.api.call("GET", f"{self._events}/{event_id}")
            if existing.status_code == 200 and json_of(existing).get("status") == "cancelled":
                # Our earlier copy was deleted and Google keeps its id: bring it back instead.
                return self._patch(event_id, event, str(json_of(existing).get("etag", "")))
            raise PreconditionFailed(event_id)  # already there: a retried insert, or someone's
        return self._written(event_id, response)

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        return self._patch(href, _writable(body), master_etag(etag))

    def _patch(self, href: str, event: Event, etag: str | None) -> Written:
        response = self.api.call("PATCH", f"{self._events}/{quote(href, safe='')}",
                                 params={"sendUpdates": "none"}, body=event,
                                 headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410, 412):
            raise PreconditionFailed(href)  # RFC 9110 §13.1.1: If-Match on a missing item fails too
        return self._written(href, response)

    def _written(self, href: str, response: Any) -> Written:
        if response.status_code not in (200, 201):
            raise WriteRefused(response.status_code)
        answer = json_of(response)
        if answer.get("recurrence"):
            return Written(href, self.get(href).etag)  # its occurrences are part of the version
        return Written(href, str(answer.get("etag", "")) or None)

    def delete(self, href: str, etag: str | None) -> None:
        etag = master_etag(etag)
        response = self.api.call("DELETE", f"{self._events}/{quote(href, safe='')}",
                                 params={"sendUpdates": "none"}, headers={"If-Match": etag} if etag else None)
        if response.status_code in (404, 410):
            raise ItemNotFound(href)
        if response.status_code == 412:
            raise PreconditionFailed(href)
        if response.status_code not in (200, 204):
            raise WriteRefused(response.status_code)


def _alive(members: list[Event], key: str) -> bool:
    master = next((e for e in members if e["id"] == key and is_master(e)), None)
    if master is not None:
        return master.get("status") != "cancelled"
    return any(e.get("status") != "cancelled" for e in members)


def _writable(body: bytes) -> Event:
    try:
        return from_ical(body)
    except UnwritableBody:
        raise WriteRefused(400) from None


@contextmanager
def open_google_store(endpoints: GoogleEndpoints, client: GoogleClient, tokens: Tokens, calendar_id: str, *,
                      allow_private: bool, limits: FetchLimits, max_items: int = 20_000,
                      on_tokens: Callable[[Tokens], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> Iterator[GoogleCalendarStore]:
    with google_api(endpoints, client, tokens, allow_private=allow_private, limits=limits,
                    on_tokens=on_tokens, sleep=sleep) as api:
        yield GoogleCalendarStore(api, calendar_id, max_items)


class GoogleProvider:
    """The CalendarProvider for Google (providers/base.py)."""

    name = PROVIDER

    def __init__(self, endpoints: GoogleEndpoints, client: GoogleClient, *, allow_private: bool = False,
                 limits: FetchLimits | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoints, self.client, self.allow_private = endpoints, client, allow_private
        self.limits = limits or FetchLimits()
        self._sleep = sleep

    def _api(self, tokens: Tokens | None) -> Any:
        return google_api(self.endpoints, self.client, tokens, allow_private=self.allow_private,
                          limits=self.limits, sleep=self._sleep)

    def authorise_url(self, *, state: str, code_challenge: str, redirect_uri: str) -> str:
        # access_type=offline + prompt=consent: Google issues a refresh token on every consent,
        # also to someone who connected before (Google's "Using OAuth 2.0 for Web Server
        # Applications").
        return self.endpoints.auth_url + "?" + urlencode({
            "response_type": "code", "client_id": self.client.client_id, "redirect_uri": redirect_uri,
            "scope": " ".join(SCOPES), "state": state, "code_challenge": code_challenge,
            "code_challenge_method": "S256", "access_type": "offline", "prompt": "consent",
            "include_granted_scopes": "true",
        })

    def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> Tokens:
        with self._api(None) as api:
            tokens: Tokens = api.token_request({"grant_type": "authorization_code", "code": code,
                                                "code_verifier": code_verifier, "redirect_uri": redirect_uri})
            return tokens

    def refresh(self, refresh_token: str) -> Tokens:
        with self._api(Tokens("", refresh_token, 0.0)) as api:
            api.refresh()
            tokens: Tokens = api.tokens
            return tokens

    def list_calendars(self, tokens: Tokens) -> list[RemoteCalendar]:
        found: list[RemoteCalendar] = []
        with self._api(tokens) as api:
            for page in api.pages("/users/me/calendarList", {"maxResults": 250}):
                for entry in page.get("items") or []:
                    name = entry.get("summaryOverride") or entry.get("summary") or entry["id"]
                    found.append(RemoteCalendar(
                        str(entry["id"]), str(name),
                        entry.get("backgroundColor"), str(entry.get("accessRole", "reader")),
                        bool(entry.get("primary"))))
        return found

    def open_store(self, tokens: Tokens, calendar_id: str) -> Any:
        return open_google_store(self.endpoints, self.client, tokens, calendar_id,
                                 allow_private=self.allow_private, limits=self.limits, sleep=self._sleep)

    def subscribe(self, tokens: Tokens, calendar_id: str, *, address: str, channel_token: str) -> Channel:
        with self._api(tokens) as api:
            response = api.call("POST", f"/calendars/{quote(calendar_id, safe='')}/events/watch",
                                body={"id": secrets.token_hex(16), "type": "web_hook", "address": address,
                                      "token": channel_token})
            expect_status(response, 200)
            answer = json_of(response)
            return Channel(str(answer["id"]), str(answer["resourceId"]), channel_token,
                           int(answer.get("expiration", 0)) / 1000)

    def renew(self, tokens: Tokens, calendar_id: str, old: Channel, *, address: str) -> Channel:
        new = self.subscribe(tokens, calendar_id, address=address, channel_token=old.token)
        self.stop(tokens, old)  # after the new one is up: no window without notifications
        return new

    def stop(self, tokens: Tokens, channel: Channel) -> None:
        with self._api(tokens) as api:
            response = api.call("POST", "/channels/stop",
                                body={"id": channel.id, "resourceId": channel.resource_id})
            expect_status(response, 200, 204, 404)  # 404: it had expired already

    def revoke(self, token: str) -> None:
        with self._api(None) as api:
            api.send("POST", self.endpoints.revoke_url, data={"token": token})
