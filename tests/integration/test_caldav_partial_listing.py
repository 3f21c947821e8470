"""A CalDAV server's partial answer never cancels a booking (feeds.calendars.caldav_store).

Servers omit DAV:getetag for some items (in a sync-collection answer, or in the PROPFIND that
caldav's calendar-query fallback uses for ETags, which may fail outright). Such an item is still
in the calendar: two-way sync must not take it for deleted — the appointment stays confirmed and
no CANCEL is queued for the customer — while a real deletion (a 404 in the sync-collection
answer, or gone from a listing) still cancels. Radicale and Xandikos sit behind EtaglessProxy,
which takes the ETags of chosen items out of their answers."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask
from lxml import etree

from calsync.feeds.calendars.caldav_store import MADE_UP, open_caldav_store
from calsync.feeds.calendars.push import item_name
from calsync.feeds.calendars.store import PreconditionFailed, StoreAddress
from calsync.feeds.settings import Settings
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import ItipMethod
from tests.conftest import Api
from tests.linked_helpers import Linked, at
from tests.mail_helpers import outbox, with_mail
from tests.servers import CalDAVServer, ForwardingProxy, SmtpSink

DAV = "{DAV:}"


class EtaglessProxy(ForwardingProxy):
    """Forwards to a real CalDAV server, taking DAV:getetag out of every multistatus answer for
    the items whose href contains one of `hide` ("" hides every item's), and their ETag header
    out of GET answers where `hide_get_etag`.

    `how`: "omit" drops the property; "not_found" reports it in a propstat of its own with a
    404 status (the server says the item has no such property).
    `sync`: "all" passes sync-collection through; "initial" refuses it with a token (403
    valid-sync-token), so every sync lists in full by sync-collection without one; "none"
    refuses it altogether, so caldav falls back to calendar-query.
    `fail_etag_propfind`: a Depth: 1 PROPFIND (caldav's fallback asking for the ETags) is
    answered 500.
    `truncate`: every sync-collection answer leaves the hidden items out altogether and says it
    was truncated (RFC 6578 §3.6: a 507 for the collection), without a newer token."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("://", 1)[1].rstrip("/")
        self.hide: set[str] = set()
        self.how = "omit"
        self.hide_get_etag = False
        self.sync = "all"
        self.fail_etag_propfind = False
        self.truncate = False
        super().__init__()

    def url_of(self, server: CalDAVServer, slug: str = "work") -> str:
        return server.url_of(slug).replace(server.base_url, self.base_url)

    def hidden(self, href: str) -> bool:
        return any(part in href for part in self.hide)

    def count(self, method: str, status: int | None = None) -> int:
        return sum(1 for m, _p, s in self.requests if m == method and (status is None or s == status))

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if h.command == "REPORT" and b"sync-collection" in body:
            token = re.search(rb"sync-token>([^<]+)<", body)
            if self.sync == "none" or (self.sync == "initial" and token):
                answer = b'<?xml version="1.0"?><d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>'
                self._reply(h, 403, {"Content-Type": "application/xml"}, answer)
                return
        if h.command == "PROPFIND" and h.headers.get("Depth") == "1" and self.fail_etag_propfind \
                and b"getetag" in body:
            self._reply(h, 500, {"Content-Type": "text/plain"}, b"PROPFIND failed")
            return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        finally:
            conn.close()
        if resp.status == 207 and self.truncate and b"sync-collection" in body:
            data = self._truncated(data, h.path)
        elif resp.status == 207 and self.hide:
            data = self._strip(data)
        if h.command == "GET" and self.hide_get_etag and self.hidden(h.path):
            out = {k: v for k, v in out.items() if k.lower() != "etag"}
        self._reply(h, resp.status, out, data)

    def _strip(self, data: bytes) -> bytes:
        root = etree.fromstring(data)
        for response in root.iter(f"{DAV}response"):
            href = response.findtext(f"{DAV}href") or ""
            if not self.hidden(href):
                continue
            removed = False
            for etag in list(response.iter(f"{DAV}getetag")):
                etag.getparent().remove(etag)
                removed = True
            if removed and self.how == "not_found":
                propstat = etree.SubElement(response, f"{DAV}propstat")
                etree.SubElement(etree.SubElement(propstat, f"{DAV}prop"), f"{DAV}getetag")
                etree.SubElement(propstat, f"{DAV}status").text = "HTTP/1.1 404 Not Found"
        return etree.tostring(root, xml_declaration=True, encoding="utf-8")  # type: ignore[no-any-return]

    def _truncated(self, data: bytes, path: str) -> bytes:
        root = etree.fromstring(data)
        for response in list(root.iter(f"{DAV}response")):
            if self.hidden(response.findtext(f"{DAV}href") or ""):
                root.remove(response)
        marker = etree.Element(f"{DAV}response")
        etree.SubElement(marker, f"{DAV}href").text = path
        etree.SubElement(marker, f"{DAV}status").text = "HTTP/1.1 507 Insufficient Storage"
        token = root.find(f"{DAV}sync-token")
        if token is not None:
            token.addprevious(marker)
        else:
            root.append(marker)
        return etree.tostring(root, xml_declaration=True, encoding="utf-8")  # type: ignore[no-any-return]



@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True,
                     smtp_url=f"smtp://{smtp_server.host}:{smtp_server.port}",
                     mail_from="bookings@salon.example")


@pytest.fixture
def proxy(caldav_server: CalDAVServer) -> Iterator[EtaglessProxy]:
    made = EtaglessProxy(caldav_server.base_url)
    yield made
    made.close()


@pytest.fixture
def linked(app: Flask, api: Api, caldav_server: CalDAVServer, proxy: EtaglessProxy) -> Linked:
    caldav_server.calendar("work")
    return Linked(app, api, caldav_server, url=proxy.url_of(caldav_server))


def cancels(app: Flask) -> list[int | None]:
    """The appointments a CANCEL was queued for (to the customer)."""
    return [m.appointment_id for m in outbox(app) if m.method == ItipMethod.CANCEL]


def booked_and_synced(linked: Linked, hour: int = 10) -> dict[str, Any]:
    appt = linked.book(at(2, hour))
    assert linked.sync().status == "ok"  # our copy is created
    assert linked.sync().status == "ok"  # listed in full once (a create resets the token)
    return appt


@pytest.mark.parametrize("how", ["omit", "not_found"])
def test_a_booking_listed_in_full_without_its_etag_is_not_cancelled(
    app: Flask, linked: Linked, proxy: EtaglessProxy, how: str
) -> None:
    proxy.sync = "initial"  # every sync lists the whole calendar (sync-collection, no token)
    appt = booked_and_synced(linked)
    proxy.hide, proxy.how = {item_name(appt["uid"])}, how
    for _ in range(2):
        assert linked.sync().status == "ok"
        assert linked.appointment(appt["id"])["status"] == "confirmed"
    assert cancels(app) == []
    assert linked.event_times(appt["uid"]) == (at(2, 10), at(2, 11))
    # Each listing reads it once, to make up its version; the sync reads it no second time.
    gets = proxy.count("GET")
    assert linked.sync().status == "ok"
    assert proxy.count("GET") - gets == 1


def test_a_move_listed_without_an_etag_is_still_applied(
    app: Flask, linked: Linked, proxy: EtaglessProxy
) -> None:
    proxy.sync = "initial"
    appt = booked_and_synced(linked)
    proxy.hide = {item_name(appt["uid"])}
    assert linked.sync().status == "ok"
    linked.move_in_calendar(appt["uid"], at(3, 14))
    assert linked.sync().status == "ok"
    moved = linked.appointment(appt["id"])
    assert moved["status"] == "confirmed" and moved["sequence"] == 1
    assert cancels(app) == []
    # The write back (new SEQUENCE) goes through although the server gives the item no ETag.
    assert linked.sync().status == "ok"
    assert linked.event(appt["uid"]).icalendar_component["SEQUENCE"] == 1


@pytest.mark.parametrize("how", ["omit", "not_found"])
def test_a_change_reported_without_an_etag_is_not_taken_for_a_deletion(
    app: Flask, linked: Linked, proxy: EtaglessProxy, how: str
) -> None:
    appt = booked_and_synced(linked)  # sync-collection passes through: the next sync is incremental
    linked.move_in_calendar(appt["uid"], at(3, 14))
    proxy.hide, proxy.how = {item_name(appt["uid"])}, how
    reports = proxy.count("REPORT")
    assert linked.sync().status == "ok"
    assert proxy.count("REPORT") > reports
    moved = linked.appointment(appt["id"])
    assert moved["status"] == "confirmed" and moved["start"].startswith(at(3, 14).strftime("%Y-%m-%dT%H:%M"))
    assert cancels(app) == []


def test_the_fallback_listing_without_any_etag_cancels_nothing(
    app: Flask, linked: Linked, proxy: EtaglessProxy
) -> None:
    # No sync-collection: caldav lists by calendar-query, and its PROPFIND for the ETags fails.
    proxy.sync, proxy.fail_etag_propfind = "none", True
    appt = booked_and_synced(linked)
    proxy.hide = {""}
    # The staff member adds an event of their own: the calendar's CTag moves, the sync lists.
    linked.calendar.save_event(event("private-1", hour=8).decode())
    assert linked.sync().status == "ok"
    assert proxy.count("PROPFIND", 500) == 1  # the fallback really lost its ETags
    assert linked.sync().status in ("ok", "unchanged")
    assert linked.appointment(appt["id"])["status"] == "confirmed"
    assert cancels(app) == []


@pytest.mark.parametrize("sync", ["all", "initial", "none"])
def test_a_real_deletion_still_cancels(app: Flask, linked: Linked, proxy: EtaglessProxy, sync: str) -> None:
    proxy.sync = sync
    kept = linked.book(at(2, 12))  # another booking: not every one of ours vanishes at once
    appt = booked_and_synced(linked)
    proxy.hide = {item_name(appt["uid"])}  # the deleted one had no ETag either
    assert linked.sync().status in ("ok", "unchanged")
    linked.event(appt["uid"]).delete()
    assert linked.sync().status == "ok"
    assert linked.appointment(appt["id"])["status"] == "cancelled"
    assert linked.appointment(kept["id"])["status"] == "confirmed"
    assert cancels(app) == [appt["id"]]


def test_a_truncated_listing_fails_the_sync_and_cancels_nothing(
    app: Flask, linked: Linked, proxy: EtaglessProxy
) -> None:
    kept, appt = linked.book(at(2, 12)), linked.book(at(2, 10))
    assert linked.sync().status == "ok"  # our copies are created: the next sync lists in full
    proxy.hide, proxy.truncate = {item_name(appt["uid"])}, True
    outcome = linked.sync()
    assert outcome.status == "error" and "only part of the calendar" in (outcome.error or "")
    assert linked.appointment(appt["id"])["status"] == "confirmed"
    assert linked.appointment(kept["id"])["status"] == "confirmed"
    assert cancels(app) == []
    proxy.truncate = False
    linked.event(appt["uid"]).delete()  # the answer is whole again: a deletion is one
    assert linked.sync().status == "ok"
    assert cancels(app) == [appt["id"]]


# --- the store itself ---------------------------------------------------------------------------


def event(uid: str, hour: int = 9) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:20270104T{hour:02d}0000Z\r\n"
        f"DTEND:20270104T{hour + 1:02d}0000Z\r\nSUMMARY:Haircut\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def open_store(server: CalDAVServer, proxy: EtaglessProxy) -> Any:
    address = StoreAddress(proxy.url_of(server, "partial"), server.username, server.password)
    return open_caldav_store(address, allow_private=True, limits=FetchLimits())


def test_the_store_lists_an_item_without_an_etag_with_a_made_up_version(
    caldav_server: CalDAVServer, proxy: EtaglessProxy
) -> None:
    caldav_server.calendar("partial", "Partial")
    with open_store(caldav_server, proxy) as store:
        a, b = store.create("a.ics", event("a")), store.create("b.ics", event("b"))
    proxy.hide, proxy.hide_get_etag = {"/b.ics"}, True
    with open_store(caldav_server, proxy) as store:
        listing = store.list()
        assert listing.etags[a.href] == a.etag
        made_up = listing.etags[b.href]
        assert made_up.startswith(MADE_UP)
        assert b"UID:b" in store.get_many([b.href])[b.href].body  # read while listing: no request
        assert store.list().etags[b.href] == made_up  # the same body, the same version
        # A write at the made-up version goes through while the body is unchanged ...
        store.update(b.href, event("b", hour=10), made_up)
    with open_store(caldav_server, proxy) as store:
        moved = store.list().etags[b.href]
        assert moved.startswith(MADE_UP) and moved != made_up
        # ... and is refused once it changed: never an overwrite of someone else's change.
        with pytest.raises(PreconditionFailed):
            store.update(b.href, event("b", hour=11), made_up)
        with pytest.raises(PreconditionFailed):
            store.delete(b.href, made_up)
        store.delete(b.href, moved)
        assert set(store.list().etags) == {a.href}


def test_only_a_404_in_a_sync_collection_answer_is_a_deletion(
    caldav_server: CalDAVServer, proxy: EtaglessProxy
) -> None:
    caldav_server.calendar("partial", "Partial")
    with open_store(caldav_server, proxy) as store:
        a, b = store.create("a.ics", event("a")), store.create("b.ics", event("b"))
        token = store.list().token
        assert token
        store.update(a.href, event("a", hour=10), a.etag)
        store.delete(b.href, b.etag)
    proxy.hide = {""}  # no ETag for anything: the changed item is still there
    with open_store(caldav_server, proxy) as store:
        changes = store.changes_since(token)
    assert changes.deleted == {b.href}
    assert set(changes.changed) == {a.href} and changes.changed[a.href].startswith(MADE_UP)
