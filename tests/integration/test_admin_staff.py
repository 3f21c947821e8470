"""A staff member's page: working hours, calendar connections (ICS, CalDAV with discovery),
edit, delete, Sync now (page and JSON), the company switches, and the self-service link."""

from __future__ import annotations

import json
import re
import time
from html import unescape
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars import adding as calendar_setup
from calsync.feeds.settings import Settings
from calsync.feeds.sources.caldav_source import RemoteCalendar
from calsync.models import Company, Connection, Staff
from tests.admin_helpers import Browser, busy_ics, text_of
from tests.conftest import Api
from tests.servers import CalDAVServer, CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()


def connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as session:
        return list(session.scalars(select(Connection).order_by(Connection.id)))


def add_ics(admin: Browser, staff_id: int, url: str, name: str = "Personal") -> Any:
    return admin.post(f"/staff/{staff_id}/calendars/ics", {"url": url, "name": name})


def test_the_page_shows_hours_feed_and_forms(admin: Browser, staff: dict[str, Any]) -> None:
    html = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "Zoë Müller" in html and "Europe/Berlin" in html
    assert 'name="hours-mon" value="09:00–17:00"' in html
    assert 'name="hours-sat" value=""' in html
    assert re.search(r'value="https://cal\.example\.test/feeds/[^"]+\.ics"', html)
    assert "By its ICS address" in html and "From a CalDAV server" in html
    assert "No calendar connected" in html


def test_working_hours_are_saved(admin: Browser, api: Api, staff: dict[str, Any]) -> None:
    form = {f"hours-{d}": "" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    form.update({"hours-mon": "8:00-12:00, 13:00–17:30", "hours-sat": "10:00 - 14:00"})
    resp = admin.post(f"/staff/{staff['id']}/hours", form)
    assert resp.headers["Location"] == f"/staff/{staff['id']}#hours-saved"
    hours = api.get(f"/staff/{staff['id']}").get_json()["working_hours"]
    assert hours["mon"] == [["08:00", "12:00"], ["13:00", "17:30"]]
    assert hours["sat"] == [["10:00", "14:00"]] and hours.get("tue", []) == []
    assert "Working hours saved" in text_of(admin.get(f"/staff/{staff['id']}"))


@pytest.mark.parametrize(("text", "message"), [
    ("09:00-25:00", "is not a time of day"),
    ("17:00-09:00", "ends before it starts"),
    ("09:00-12:00, 11:00-13:00", "overlaps"),
    ("nine to five", "Write each period as 09:00–17:00"),
    ("9-17", "Write times like 09:00–17:00."),  # a plain sentence, not "HH:MM, got '9'"
])
def test_invalid_working_hours_say_what_is_wrong(admin: Browser, api: Api, staff: dict[str, Any],
                                                 text: str, message: str) -> None:
    resp = admin.post(f"/staff/{staff['id']}/hours", {"hours-mon": text, "hours-tue": "10:00-11:00"})
    # The page comes back at once: the typed text in the field, the error beside it, the other
    # days as typed too; nothing saved.
    assert resp.status_code == 422
    html = text_of(resp)
    error = re.search(r'<p class="field-error" id="hours-mon-error">([^<]*)</p>', html)
    assert error and message in error.group(1)
    assert f'name="hours-mon" value="{text}"' in html and 'aria-invalid="true"' in html
    assert 'name="hours-tue" value="10:00-11:00"' in html
    assert api.get(f"/staff/{staff['id']}").get_json()["working_hours"]["mon"] == [["09:00", "17:00"]]


def test_add_an_ics_calendar_and_sync_it_now(app: Flask, admin: Browser, staff: dict[str, Any],
                                             calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/calendar/ical/private-abcdef0123456789/basic.ics", busy_ics(3))
    resp = add_ics(admin, staff["id"], url)
    conn = connections(app)[0]
    assert resp.headers["Location"] == f"/staff/{staff['id']}#connection-{conn.id}"
    # Read once when added, then synced at once: no "not synced yet" card.
    html = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "Calendar 'Personal' added. 'Personal' synced: 3 busy times read." in unescape(html)
    assert "Not synced yet" not in html and "private-abcdef0123456789" not in html
    # Without JavaScript: the form posts, the page comes back with the result.
    calendar_http.add("/calendar/ical/private-abcdef0123456789/basic.ics", busy_ics(4))
    resp = admin.post(f"/connections/{conn.id}/sync")
    assert resp.headers["Location"] == f"/staff/{staff['id']}#connection-{conn.id}"
    html = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "'Personal' synced: 4 busy times read." in unescape(html)
    assert re.search(r'data-field="last-sync"><time [^>]+>just now</time>', html)
    assert 'data-field="busy-count">4<' in html


def test_sync_now_as_json_for_the_script(app: Flask, admin: Browser, staff: dict[str, Any],
                                         calendar_http: CalendarHTTPServer) -> None:
    add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(2)))
    conn = connections(app)[0]
    resp = admin.post_json(f"/connections/{conn.id}/sync")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body | {"last_success_at": None} == {
        "id": conn.id, "status": "ok", "status_label": "OK", "last_sync": "just now",
        "last_success_at": None, "busy_count": 2, "last_error": None,
        "message": "'Personal' synced: nothing changed since the last sync (2 busy times).",
        "failed": False, "failures": 0,
    }
    # A failing calendar answers with its error sentence, still as JSON.
    calendar_http.routes.pop("/c.ics")
    body = admin.post_json(f"/connections/{conn.id}/sync").get_json()
    assert body["status"] == "error" and body["busy_count"] == 2
    assert "not found" in body["last_error"] and body["message"].startswith("'Personal' did not sync")


def test_sync_now_without_the_csrf_header_is_refused(app: Flask, admin: Browser, staff: dict[str, Any],
                                                     calendar_http: CalendarHTTPServer) -> None:
    add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(2)))
    conn = connections(app)[0]  # read once when it was added
    resp = admin.client.post(f"/connections/{conn.id}/sync", headers={"Accept": "application/json"})
    assert resp.status_code == 400 and "reload" in resp.get_json()["error"]
    assert connections(app)[0].last_attempt_at == conn.last_attempt_at


def test_a_blocked_address_is_refused_with_a_sentence(app: Flask, admin: Browser, staff: dict[str, Any],
                                                      settings: Settings) -> None:
    services = app.extensions["calsync"]
    services.settings = settings.model_copy(update={"allow_private_networks": False})
    resp = add_ics(admin, staff["id"], "http://127.0.0.1:9/private.ics")
    assert resp.status_code == 422
    html = text_of(resp)
    assert "That calendar address is not allowed" in html
    # The form comes back open with what was typed.
    assert 'value="http://127.0.0.1:9/private.ics"' in html
    assert '<details class="disclosure" id="add-ics" open>' in html
    assert connections(app) == []


def test_company_switches_hide_and_refuse_a_kind(app: Flask, admin: Browser, api: Api, staff: dict[str, Any],
                                                 calendar_http: CalendarHTTPServer) -> None:
    api.patch("/settings", {"ics_subscriptions": False})
    html = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "By its ICS address" not in html and "From a CalDAV server" in html
    resp = add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(1)))
    assert resp.status_code == 422 and "switched off" in text_of(resp)
    api.patch("/settings", {"caldav_connections": False})
    html = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "Connecting calendars is switched off" in html
    resp = admin.post(f"/staff/{staff['id']}/calendars/discover",
                      {"caldav_url": "http://127.0.0.1:9/", "username": "u", "password": "p"})
    assert resp.status_code == 422 and "CalDAV connections are switched off" in text_of(resp)
    assert connections(app) == []


def test_edit_a_connection(app: Flask, admin: Browser, staff: dict[str, Any],
                           calendar_http: CalendarHTTPServer) -> None:
    add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(1)))
    conn = connections(app)[0]
    page = text_of(admin.get(f"/connections/{conn.id}/edit"))
    assert 'value="linked"' in page and "An ICS address can only be read" in page
    resp = admin.post(f"/connections/{conn.id}/edit", {
        "name": "Home", "roles": "conflict", "sync_mode": "manual", "interval_minutes": "60",
        "all_day": "ignore", "treat_all_busy": "on"})
    assert resp.status_code == 302
    saved = connections(app)[0]
    assert (saved.name, saved.sync_mode, saved.interval_minutes, saved.all_day, saved.treat_all_busy) == (
        "Home", "manual", 60, "ignore", True)
    # A role that needs writing is refused for an ICS address, with the reason.
    resp = admin.post(f"/connections/{conn.id}/edit", {"name": "Home", "roles": ["conflict", "linked"],
                                                       "sync_mode": "manual", "interval_minutes": "60"})
    assert resp.status_code == 200 and "read-only" in text_of(resp)
    assert connections(app)[0].roles == ["conflict"]
    resp = admin.post(f"/connections/{conn.id}/edit", {"name": "Home", "roles": "conflict",
                                                       "interval_minutes": "often"})
    assert "Enter the interval in minutes" in text_of(resp)


def test_delete_a_connection(app: Flask, admin: Browser, staff: dict[str, Any],
                             calendar_http: CalendarHTTPServer) -> None:
    add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(1)))
    conn = connections(app)[0]
    resp = admin.post(f"/connections/{conn.id}/delete")
    assert resp.headers["Location"] == f"/staff/{staff['id']}#connections"
    assert connections(app) == []
    assert "removed" in text_of(admin.get(f"/staff/{staff['id']}"))


# --- CalDAV with discovery --------------------------------------------------------------------


def discover(admin: Browser, staff_id: int, server: CalDAVServer, **kw: str) -> Any:
    form = {"caldav_url": server.base_url + "/", "username": server.username, "password": server.password}
    form.update(kw)
    return admin.post(f"/staff/{staff_id}/calendars/discover", form)


def discovery_token(html: str) -> str:
    found = re.search(r'name="discovery" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_caldav_discovery_pick_and_connect(app: Flask, admin: Browser, staff: dict[str, Any],
                                           radicale: CalDAVServer) -> None:
    radicale.calendar("work", "Work Zoë")
    radicale.calendar("home", "Home")
    resp = discover(admin, staff["id"], radicale)
    html = text_of(resp)
    assert resp.status_code == 200 and "Choose calendars" in html
    assert "Work Zoë" in html and "Home" in html and "read &amp; write" in html
    assert radicale.password not in html  # the password travels sealed, never in the page
    names = re.findall(r'<th scope="row" data-label="Calendar">\s*<span class="cal-name">'
                       r'(?:<span[^>]*></span>)?([^<]+)<', html)
    work, home = names.index("Work Zoë"), names.index("Home")
    resp = admin.post(f"/staff/{staff['id']}/calendars/caldav", {
        "discovery": discovery_token(html), f"roles-{work}": ["conflict", "linked"],
        f"roles-{home}": "conflict"})
    assert resp.headers["Location"] == f"/staff/{staff['id']}#connections"
    made = {c.name: c for c in connections(app)}
    assert made["Work Zoë"].roles == ["conflict", "linked"] and made["Work Zoë"].writable is True
    assert made["Home"].roles == ["conflict"] and made["Home"].username == "zoe"
    page = text_of(admin.get(f"/staff/{staff['id']}"))
    assert "'Work Zoë' connected. 'Work Zoë' synced: 0 bookings written" in unescape(page)
    assert "CalDAV" in page and radicale.password not in page
    for conn in made.values():
        assert conn.password_sealed and conn.password_sealed not in page and conn.url_sealed not in page
    body = admin.post_json(f"/connections/{made['Home'].id}/sync").get_json()
    assert body["status"] == "ok" and body["busy_count"] == 0


def test_discovery_with_a_wrong_password_says_so(admin: Browser, staff: dict[str, Any],
                                                 radicale: CalDAVServer) -> None:
    resp = discover(admin, staff["id"], radicale, password="wrong")
    html = text_of(resp)
    assert resp.status_code == 422 and "rejected the user name or password" in html
    # What was typed comes back, except the password.
    assert f'value="{radicale.base_url}/"' in html and 'value="zoe"' in html and "wrong" not in html


def fake_discovery(monkeypatch: pytest.MonkeyPatch, server: CalDAVServer) -> None:
    """A server that lists one calendar we may write and one shared with us read-only."""
    found = [RemoteCalendar(server.url_of("work"), "Work", "#0a58caff", True),
             RemoteCalendar(server.url_of("work"), "Shared by a colleague", None, False)]
    monkeypatch.setattr(calendar_setup, "discover_calendars", lambda *a, **kw: found)


def test_read_only_calendars_cannot_be_linked_and_the_page_says_why(
    app: Flask, admin: Browser, staff: dict[str, Any], radicale: CalDAVServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    radicale.calendar("work")
    fake_discovery(monkeypatch, radicale)
    html = text_of(discover(admin, staff["id"], radicale, username="reader", password="reader-pass"))
    assert "read-only" in html and calendar_setup.READ_ONLY_REASON in html
    # "Linked" is one choice (a radio) among the calendars that can be written.
    assert re.search(r'type="radio" name="linked" value="1" id="r-1-linked" [^>]*disabled', html)
    assert re.search(r'name="roles-1" value="additional" id="r-1-additional" [^>]*disabled', html)
    assert not re.search(r'name="linked" value="0" [^>]*disabled', html)
    token = discovery_token(html)
    # A hand-made form that asks for it anyway is refused with the same reason.
    resp = admin.post(f"/staff/{staff['id']}/calendars/caldav", {"discovery": token, "roles-1": "linked"})
    assert resp.status_code == 422 and "Shared with you read-only" in text_of(resp)
    assert connections(app) == []
    resp = admin.post(f"/staff/{staff['id']}/calendars/caldav", {"discovery": token, "roles-1": "conflict"})
    assert resp.status_code == 302
    assert [(c.name, c.roles, c.writable) for c in connections(app)] == [
        ("Shared by a colleague", ["conflict"], False)]


def test_nothing_chosen_is_a_sentence(admin: Browser, staff: dict[str, Any], radicale: CalDAVServer) -> None:
    radicale.calendar("work")
    token = discovery_token(text_of(discover(admin, staff["id"], radicale)))
    resp = admin.post(f"/staff/{staff['id']}/calendars/caldav", {"discovery": token})
    assert resp.status_code == 422 and "Choose at least one calendar" in text_of(resp)


def test_the_discovery_token_is_bound_to_its_staff_member_and_expires(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], radicale: CalDAVServer,
) -> None:
    radicale.calendar("work")
    other = api.make_staff(name="Other", email="other@example.com")
    token = discovery_token(text_of(discover(admin, staff["id"], radicale)))
    resp = admin.post(f"/staff/{other['id']}/calendars/caldav", {"discovery": token, "roles-0": "conflict"})
    assert resp.status_code == 422 and "look the calendars up again" in text_of(resp)
    for forged in ("", "garbage", token[:-4] + "AAAA"):
        resp = admin.post(f"/staff/{staff['id']}/calendars/caldav",
                          {"discovery": forged, "roles-0": "conflict"})
        assert resp.status_code == 422
    later = time.time() + calendar_setup.DISCOVERY_MINUTES * 60 + 5
    app.extensions["calsync"].clock = lambda: later
    resp = admin.post(f"/staff/{staff['id']}/calendars/caldav", {"discovery": token, "roles-0": "conflict"})
    assert resp.status_code == 422 and "too old" in text_of(resp)
    assert connections(app) == []


def test_the_discovery_token_opens_only_with_the_credentials_key(app: Flask, admin: Browser,
                                                                 staff: dict[str, Any],
                                                                 radicale: CalDAVServer) -> None:
    radicale.calendar("work")
    token = discovery_token(text_of(discover(admin, staff["id"], radicale)))
    state = json.loads(app.extensions["calsync"].vault.open(token))
    assert state["p"] == radicale.password and state["s"] == staff["id"]


# --- the self-service link --------------------------------------------------------------------


def test_create_and_revoke_the_connect_link(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    resp = admin.post(f"/staff/{staff['id']}/connect-link")
    html = text_of(resp)
    found = re.search(r'value="https://cal\.example\.test(/connect/[^"]+)"', html)
    assert resp.status_code == 200 and found and "Valid until" in html
    link = found.group(1)
    visitor = app.test_client()
    assert visitor.get(link).headers["Location"] == "/connect/"
    assert "Hello, Zoë Müller" in text_of(visitor.get("/connect/"))
    admin.post(f"/staff/{staff['id']}/connect-link/revoke")
    assert "stopped working" in text_of(admin.get(f"/staff/{staff['id']}"))
    refused = visitor.get("/connect/")
    assert refused.status_code == 403 and "not valid" in text_of(refused)
    assert app.test_client().get(link).status_code == 403


# --- access -----------------------------------------------------------------------------------


def test_another_companys_staff_and_connections_are_404(app: Flask, admin: Browser,
                                                        calendar_http: CalendarHTTPServer) -> None:
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        other = Company(name="Other", timezone="UTC", settings={})
        session.add(other)
        session.flush()
        member = Staff(company_id=other.id, name="Stranger", email="s@example.com", timezone="UTC",
                       working_hours={})
        session.add(member)
        session.flush()
        conn = Connection(company_id=other.id, staff_id=member.id, kind="ics", name="Theirs",
                          url_sealed=services.vault.seal(calendar_http.add("/t.ics", busy_ics(1))),
                          url_display="x", roles=["conflict"], extra={})
        session.add(conn)
        session.flush()
        member_id, conn_id = member.id, conn.id
    assert admin.get(f"/staff/{member_id}").status_code == 404
    assert admin.get(f"/connections/{conn_id}/edit").status_code == 404
    assert admin.post_json(f"/connections/{conn_id}/sync").status_code == 404
    admin.post(f"/connections/{conn_id}/delete")
    assert admin.post(f"/staff/{member_id}/connect-link").status_code == 404
    assert [c.id for c in connections(app)] == [conn_id]
    assert calendar_http.hits.get("/t.ics") is None


STAFF_POSTS = ["/staff/{s}/hours", "/staff/{s}/calendars/ics", "/staff/{s}/calendars/discover",
               "/staff/{s}/calendars/caldav", "/connections/{c}/edit", "/connections/{c}/delete",
               "/connections/{c}/sync", "/staff/{s}/connect-link", "/staff/{s}/connect-link/revoke"]


@pytest.mark.parametrize("path", STAFF_POSTS)
def test_forms_without_csrf_token_are_refused(app: Flask, admin: Browser, staff: dict[str, Any],
                                              calendar_http: CalendarHTTPServer, path: str) -> None:
    add_ics(admin, staff["id"], calendar_http.add("/c.ics", busy_ics(1)))
    before = [(c.id, c.name, c.last_attempt_at) for c in connections(app)]
    url = path.format(s=staff["id"], c=before[0][0])
    resp = admin.client.post(url, data={"url": "http://127.0.0.1:1/x.ics", "name": "Evil",
                                        "hours-mon": "", "roles": "conflict"})
    assert resp.status_code == 400
    assert [(c.id, c.name, c.last_attempt_at) for c in connections(app)] == before
