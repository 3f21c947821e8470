"""The connections API: discovery, adding calendars (with their checks), sync now, busy time,
and how busy time and pending connections change availability and booking."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from calsync.feeds.settings import Settings
from tests.clock import day_at
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, iso
from tests.servers import CalDAVServer, CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


def at(days: int, hour: int) -> datetime:
    return day_at(days, hour)


def busy_ics(*spans: tuple[datetime, datetime]) -> bytes:
    out = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
    for i, (a, b) in enumerate(spans):
        out += (
            f"BEGIN:VEVENT\r\nUID:b{i}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{a:%Y%m%dT%H%M%SZ}\r\n"
            f"DTEND:{b:%Y%m%dT%H%M%SZ}\r\nSUMMARY:Therapy session\r\nEND:VEVENT\r\n"
        )
    return (out + "END:VCALENDAR\r\n").encode()


@pytest.fixture
def staff(api: Api) -> dict:
    return api.make_staff(working_hours=ALL_DAY, timezone="UTC")


def test_ics_connection_lifecycle_and_its_effect_on_booking(
    api: Api, staff: dict, calendar_http: CalendarHTTPServer
) -> None:
    secret_path = "/calendar/ical/zoe%40example.com/private-0123456789abcdef0123/basic.ics"
    url = calendar_http.add(secret_path, busy_ics((at(2, 10), at(2, 12))))
    created = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url, "name": "Private"})
    assert created.status_code == 201, created.get_json()
    conn = created.get_json()
    assert conn["status"] == "pending" and conn["roles"] == ["conflict"]
    assert "private-0123456789abcdef0123" not in json.dumps(conn)  # the secret part is hidden
    # Pending: not bookable, no slots, and the reason says why.
    refused = api.book(staff["id"], iso(at(3, 9)), iso(at(3, 10)))
    assert refused.status_code == 409 and "not synced yet" in refused.get_json()["error"]
    avail = api.get(
        f"/staff/{staff['id']}/availability?start={iso(at(2, 0))}&end={iso(at(3, 0))}".replace("+", "%2B")
    ).get_json()
    assert avail["slots"] == [] and "not synced yet" in avail["blocked"]
    synced = api.post(f"/connections/{conn['id']}/sync").get_json()
    assert synced["status"] == "ok" and synced["busy_count"] == 1 and synced["last_success_at"]
    busy = api.get(
        f"/staff/{staff['id']}/busy?start={iso(at(0, 0))}&end={iso(at(9, 0))}".replace("+", "%2B")
    ).get_json()["busy"]
    assert busy == [
        {
            "start": iso(at(2, 10)).replace("+00:00", "Z"),
            "end": iso(at(2, 12)).replace("+00:00", "Z"),
            "connection_id": conn["id"],
        }
    ]
    taken = api.book(staff["id"], iso(at(2, 11)), iso(at(2, 11) + timedelta(minutes=30)))
    assert taken.status_code == 409
    message = taken.get_json()["error"]
    assert "busy" in message and "own calendar" in message and "Therapy" not in message
    assert api.book(staff["id"], iso(at(2, 12)), iso(at(2, 13))).status_code == 201
    avail = api.get(
        f"/staff/{staff['id']}/availability?start={iso(at(2, 9))}&end={iso(at(2, 13))}&duration=60".replace(
            "+", "%2B"
        )
    ).get_json()
    assert [s["start"][11:16] for s in avail["slots"]] == ["09:00"]
    assert {"calendar", "appointment"} == {b["kind"] for b in avail["busy"]}
    listed = api.get(f"/staff/{staff['id']}/connections").get_json()["connections"]
    assert [c["id"] for c in listed] == [conn["id"]]
    assert (
        api.patch(f"/connections/{conn['id']}", {"sync_mode": "manual"}).get_json()["sync_mode"] == "manual"
    )
    assert api.delete(f"/connections/{conn['id']}").status_code == 204
    assert api.get(f"/connections/{conn['id']}").status_code == 404
    assert api.book(staff["id"], iso(at(2, 10)), iso(at(2, 11))).status_code == 201  # busy time gone


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/c.ics",
        "ftp://example.com/c.ics",
        "not a url",
        "http://[::ffff:10.0.0.1]/c.ics",
    ],
)
def test_blocked_or_malformed_urls_are_refused_with_422(app, api: Api, staff: dict, url: str) -> None:  # type: ignore[no-untyped-def]
    """An address is a field like any other: refused with 422 naming it (README's one rule; it
    was 400 here while every other invalid field was 422)."""
    services = app.extensions["calsync"]
    services.settings = services.settings.model_copy(update={"allow_private_networks": False})
    resp = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url})
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"].endswith(".")
    assert [e["field"] for e in resp.get_json()["errors"]] == ["url"]
    assert api.get(f"/staff/{staff['id']}/connections").get_json() == {"connections": []}


def test_an_ics_address_cannot_be_linked(api: Api, staff: dict, calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/c.ics", busy_ics())
    resp = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url, "roles": ["linked"]})
    assert resp.status_code == 422
    assert "read-only" in resp.get_json()["error"] and "CalDAV" in resp.get_json()["error"]


def test_caldav_discovery_lists_calendars_with_write_access(api: Api, caldav_server: CalDAVServer) -> None:
    caldav_server.calendar("work", "Work Zoë")
    resp = api.post(
        "/caldav/discover",
        {
            "url": caldav_server.base_url + "/",
            "username": caldav_server.username,
            "password": caldav_server.password,
        },
    )
    assert resp.status_code == 200, resp.get_json()
    calendars = resp.get_json()["calendars"]
    work = next(c for c in calendars if c["url"].rstrip("/").endswith("/work"))
    assert work["name"] == "Work Zoë" and work["writable"] is True


def test_a_read_only_caldav_calendar_is_refused_for_writing_roles(
    api: Api, staff: dict, radicale: CalDAVServer
) -> None:
    radicale.calendar("work")
    url = radicale.url_of("work")
    body = {"kind": "caldav", "url": url, "username": "reader", "password": "reader-pass"}
    refused = api.post(f"/staff/{staff['id']}/connections", body | {"roles": ["conflict", "linked"]})
    assert refused.status_code == 422
    assert "read-only" in refused.get_json()["error"] and "write access" in refused.get_json()["error"]
    allowed = api.post(f"/staff/{staff['id']}/connections", body)
    assert allowed.status_code == 201 and allowed.get_json()["writable"] is False


def test_wrong_caldav_password_is_refused_at_creation(api: Api, staff: dict, radicale: CalDAVServer) -> None:
    radicale.calendar()
    resp = api.post(
        f"/staff/{staff['id']}/connections",
        {
            "kind": "caldav",
            "url": radicale.url_of(),
            "username": radicale.username,
            "password": "not-the-password",
        },
    )
    assert resp.status_code == 422
    assert "user name or password" in resp.get_json()["error"]


def test_passwords_never_come_back(api: Api, staff: dict, radicale: CalDAVServer) -> None:
    radicale.calendar()
    created = api.post(
        f"/staff/{staff['id']}/connections",
        {
            "kind": "caldav",
            "url": radicale.url_of(),
            "username": radicale.username,
            "password": radicale.password,
            "roles": ["conflict", "linked"],
        },
    )
    assert created.status_code == 201, created.get_json()
    cid = created.get_json()["id"]
    responses = [
        created,
        api.get(f"/connections/{cid}"),
        api.post(f"/connections/{cid}/sync"),
        api.get(f"/staff/{staff['id']}/connections"),
    ]
    for resp in responses:
        assert radicale.password not in resp.get_data(as_text=True)
    assert responses[2].get_json()["status"] == "ok"


def test_a_second_linked_calendar_is_refused(api: Api, staff: dict, radicale: CalDAVServer) -> None:
    radicale.calendar("work")
    radicale.calendar("home", "Home")
    body = {
        "kind": "caldav",
        "username": radicale.username,
        "password": radicale.password,
        "roles": ["linked"],
    }
    assert (
        api.post(f"/staff/{staff['id']}/connections", body | {"url": radicale.url_of("work")}).status_code
        == 201
    )
    second = api.post(f"/staff/{staff['id']}/connections", body | {"url": radicale.url_of("home")})
    assert second.status_code == 422 and "already has a linked calendar" in second.get_json()["error"]


def test_connections_of_unknown_staff_and_ids_are_404(api: Api) -> None:
    assert api.get("/staff/999/connections").status_code == 404
    assert api.post("/connections/999/sync").status_code == 404
    assert api.patch("/connections/999", {"name": "x"}).status_code == 404


def test_busy_time_from_staff_calendars_never_reaches_a_feed(
    api: Api, staff: dict, calendar_http: CalendarHTTPServer
) -> None:
    url = calendar_http.add("/c.ics", busy_ics((at(2, 10), at(2, 12))))
    conn = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url}).get_json()
    assert api.post(f"/connections/{conn['id']}/sync").get_json()["busy_count"] == 1
    booked = api.book(staff["id"], iso(at(3, 9)), iso(at(3, 10))).get_json()
    group = api.post("/groups", {"name": "All", "staff_ids": [staff["id"]]}).get_json()
    for scope, scope_id in (("staff", staff["id"]), ("group", group["id"])):
        for privacy in ("full", "limited", "busy"):
            body = api.client.get(api.feed_url(scope, scope_id, privacy)).get_data(as_text=True)
            assert body.count("BEGIN:VEVENT") == 1 and booked["uid"] in body
            assert "Therapy" not in body and f"{at(2, 10):%Y%m%dT%H%M}" not in body
