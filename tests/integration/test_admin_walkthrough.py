"""What a new admin's walkthrough found misleading (issue 15), held in the plain HTML: a refused
Reschedule keeps what was typed; no email is promised when no mail server is set up; a calendar
that never synced has one label and one filter; every calendar that blocks a staff member is
counted and marked, on the staff member's clock; errors said once; the settings' units agree
with a refused number; the appointments list says how many pages it has; Retry only where it
does something; the add-calendar choice says "If you save it anyway"; a missing CalDAV address
is not called a web page; working hours, badges and the booking form speak plainly."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.settings import Settings
from calsync.models import Connection, OutboxEmail
from tests.admin_helpers import Browser, busy_ics, text_of, words_of
from tests.clock import day_at
from tests.conftest import Api
from tests.integration.test_admin_appointments import form, workday
from tests.integration.test_admin_sync import settings_form
from tests.mail_helpers import with_mail
from tests.servers import CalendarHTTPServer, SmtpSink

WEB_PAGE = b"<!doctype html><html><head><title>Salon</title></head><body>Welcome</body></html>"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})  # the loopback servers


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()



def _booked(app: Flask, admin: Browser, staff: dict[str, Any], **kw: str) -> int:
    resp = admin.post("/appointments/new", form(staff["id"], workday(), **kw))
    assert resp.status_code == 302, words_of(text_of(resp))
    return int(resp.headers["Location"].rsplit("/", 1)[1])


def _broken(app: Flask, api: Api, calendar_http: CalendarHTTPServer, staff_id: int, name: str) -> int:
    """A calendar that has never synced and keeps failing (404)."""
    conn = api.post(f"/staff/{staff_id}/connections", {
        "kind": "ics", "url": f"{calendar_http.base_url}/{name.lower().replace(' ', '-')}.ics",
        "name": name}).get_json()
    for _ in range(3):
        with app.extensions["calsync"].sessions.begin() as s:
            s.get(Connection, conn["id"]).lease_until = None
        sync_connection(app.extensions["calsync"].sync, conn["id"])
    return int(conn["id"])


# 2 -------------------------------------------------------------------------------------------


def test_a_refused_reschedule_keeps_what_was_typed_beside_the_card(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    appointment_id = _booked(app, admin, staff)
    page = f"/appointments/{appointment_id}"
    day = workday(10).isoformat()
    resp = admin.post(f"{page}/reschedule", {"date": day, "start": "20:00", "end": "21:00"}, page=page)
    # No redirect that forgets the typing: the page again, the error in the Reschedule card.
    assert resp.status_code == 422
    html = text_of(resp)
    card = html.split('id="reschedule"', 1)[1].split("</section>", 1)[0]
    assert 'data-field="move-error"' in card and "does not work at that time" in card
    assert f'name="date" required value="{day}"' in card
    assert 'name="start" required value="20:00"' in card and 'name="end" required value="21:00"' in card
    assert card.count('aria-invalid="true"') == 3
    # A time that cannot be read is kept as typed too.
    resp = admin.post(f"{page}/reschedule", {"date": day, "start": "25:99", "end": "26:00"}, page=page)
    assert resp.status_code == 422 and 'name="start" required value="25:99"' in text_of(resp)
    assert "Give the start as a date and a time" in text_of(resp)


# 3 and 15 ------------------------------------------------------------------------------------


def test_without_a_mail_server_no_email_is_promised(app: Flask, admin: Browser,
                                                    staff: dict[str, Any]) -> None:
    appointment_id = _booked(app, admin, staff)
    page = f"/appointments/{appointment_id}"
    words = words_of(text_of(admin.get(page)))
    waits = ("The email telling Chloé Lefèvre (chloe@example.com) that it is cancelled waits in the "
             "outbox, because no mail server is set up (CALSYNC_SMTP_URL).")
    assert waits in words and "is emailed at" not in words
    # The Reschedule card says what the customer hears of a move.
    assert ("The email telling Chloé Lefèvre (chloe@example.com) the new time waits in the outbox, "
            "because no mail server is set up") in words
    assert "Cancel the appointment and email" not in words  # the dialog's button promises nothing
    heading = re.search(r"<h1>.*?</h1>", text_of(admin.get(page)), re.S)
    assert heading and 'data-field="status">Confirmed<' in heading.group(0)
    admin.post(f"{page}/cancel", page=page)
    after = text_of(admin.get(page))
    assert ("Appointment cancelled. The email to Chloé Lefèvre (chloe@example.com) waits in the outbox, "
            "because no mail server is set up (CALSYNC_SMTP_URL).") in words_of(after)
    # Status badges in words, not the stored value.
    assert re.search(r'data-field="status">Cancelled<', after)
    listing = text_of(admin.get(f"/appointments?staff={staff['id']}&from=2000-01-01&to=2100-01-01"))
    assert re.search(r'data-field="status">Cancelled<', listing) and ">cancelled<" not in listing


def test_a_customer_without_email_is_not_promised_one(app: Flask, admin: Browser,
                                                      staff: dict[str, Any]) -> None:
    appointment_id = _booked(app, admin, staff, customer_email="")
    words = words_of(text_of(admin.get(f"/appointments/{appointment_id}")))
    assert "Chloé Lefèvre has no email address, so nobody is told: let them know yourself." in words


class TestWithAMailServer:
    @pytest.fixture
    def smtp(self) -> Iterator[SmtpSink]:
        server = SmtpSink()
        server.start()
        yield server
        server.stop()

    @pytest.fixture
    def settings(self, settings: Settings, smtp: SmtpSink) -> Settings:
        return with_mail(settings, allow_private_networks=True, smtp_url=smtp.url)

    def test_the_customer_is_emailed(self, app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
        appointment_id = _booked(app, admin, staff)
        page = f"/appointments/{appointment_id}"
        words = words_of(text_of(admin.get(page)))
        assert "Chloé Lefèvre is emailed at chloe@example.com that it is cancelled." in words
        assert "Chloé Lefèvre is emailed the new time at chloe@example.com." in words
        assert "Cancel the appointment and email Chloé Lefèvre" in words
        assert "waits in the outbox" not in words
        day = workday(10).isoformat()
        admin.post(f"{page}/reschedule", {"date": day, "start": "11:00", "end": "11:30"}, page=page)
        assert "Chloé Lefèvre is emailed the new time at chloe@example.com." in words_of(
            text_of(admin.get(page)).split('class="flashes"', 1)[1].split("</div>", 1)[0])

    def test_outbox_offers_retry_for_a_waiting_email(self, app: Flask, admin: Browser,
                                                     staff: dict[str, Any]) -> None:
        _booked(app, admin, staff)
        html = text_of(admin.get("/outbox"))
        assert ">Retry</button>" in html and 'data-field="waits-note"' not in html


# 11 ------------------------------------------------------------------------------------------


def test_without_a_mail_server_retry_is_offered_only_for_failed_emails(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    _booked(app, admin, staff)
    _booked(app, admin, staff, start="14:00", end="14:30")
    with app.extensions["calsync"].sessions.begin() as s:
        failed = s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).first()
        failed.status, failed.last_error, failed.attempts = "failed", "550 No such user", 8
        failed_id = failed.id
    html = text_of(admin.get("/outbox"))
    rows = dict(re.findall(r'<tr id="email-(\d+)">(.*?)</tr>', html, re.S))
    assert len(rows) == 2
    for email_id, row in rows.items():
        if int(email_id) == failed_id:
            assert ">Retry</button>" in row
        else:  # waiting, never tried: Retry would change nothing
            assert ">Retry</button>" not in row
            assert 'data-field="waits-note">Waits for a mail server<' in row


# 4, 5, 9, 10 ---------------------------------------------------------------------------------


def test_a_calendar_that_never_synced_has_one_label_and_one_filter(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    broken = _broken(app, api, calendar_http, staff["id"], "Work")
    label = re.compile(r'badge-error" data-field="status">Not yet reachable<')
    for path in (f"/staff/{staff['id']}", "/staff", "/health"):
        html = text_of(admin.get(path))
        assert label.search(html), path
        assert 'data-field="status">Failing<' not in html, path
    # "Not synced yet" lists it: it has never synced, whatever its status.
    html = text_of(admin.get("/health?show=pending"))
    assert re.search(r'Not synced yet <span class="count">1</span>', html)
    assert f'id="connection-{broken}"' in html


def test_every_blocking_calendar_is_counted_and_marked_on_the_staff_clock(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    ids = [_broken(app, api, calendar_http, staff["id"], f"Work {n}") for n in range(3)]
    with app.extensions["calsync"].sessions.begin() as s:
        added = s.get(Connection, ids[0]).created_at
    berlin = added.astimezone(ZoneInfo("Europe/Berlin"))
    html = text_of(admin.get("/health"))
    words = words_of(html)
    headline = (f"Zoë Müller can't be booked: the calendar 'Work 0' has not synced since it was added on "
                f"{berlin:%d %b %Y, %H:%M} {berlin.tzname()}, because the calendar was not found at "
                "that address (it may have been deleted or its secret address reset); and 2 more "
                "calendars have not synced either.")
    assert headline in words
    assert "UTC because" not in words and "because:" not in words
    for conn_id in ids:  # each blocking row says so, with a Fix link to its card
        row = html.split(f'<tr id="connection-{conn_id}">', 1)[1].split("</tr>", 1)[0]
        assert 'data-field="unbookable"' in row
        assert f'href="/staff/{staff["id"]}#connection-{conn_id}">Fix<' in row
    # The row whose sentence names its error does not say the error twice.
    first = words_of(html.split(f'<tr id="connection-{ids[0]}">', 1)[1].split("</tr>", 1)[0])
    assert first.count("the calendar was not found at that address") + first.count(
        "The calendar was not found at that address") == 1
    # One more calendar: singular.
    with app.extensions["calsync"].sessions.begin() as s:
        s.delete(s.get(Connection, ids[2]))
    assert "; and 1 more calendar has not synced either." in words_of(text_of(admin.get("/health")))
    assert "; and 1 more calendar has not synced either." in words_of(text_of(admin.get("/")))


def test_health_names_each_kind_of_calendar(app: Flask, admin: Browser, api: Api, staff: dict[str, Any],
                                            calendar_http: CalendarHTTPServer) -> None:
    ok = calendar_http.add("/ok.ics", busy_ics(1))
    ids = {}
    for name in ("Plain", "Gmail", "Outlook"):
        ids[name] = api.post(f"/staff/{staff['id']}/connections",
                             {"kind": "ics", "url": ok, "name": name}).get_json()["id"]
    with app.extensions["calsync"].sessions.begin() as s:
        s.get(Connection, ids["Gmail"]).kind = "google"
        s.get(Connection, ids["Outlook"]).kind = "microsoft"
    html = text_of(admin.get("/health"))
    for name, kind in (("Plain", "ICS"), ("Gmail", "Google"), ("Outlook", "Microsoft")):
        row = words_of(html.split(f'<tr id="connection-{ids[name]}">', 1)[1].split("</tr>", 1)[0])
        assert f"Zoë Müller · {kind} ·" in row, row


# 6 -------------------------------------------------------------------------------------------


def test_after_a_refused_save_one_day_is_one_day(admin: Browser) -> None:
    fields = settings_form(text_of(admin.get("/settings")))
    fields["sync_window_past_days"] = "1"
    fields["feed_refresh_minutes"] = "1"  # refused: Enter 5 or more
    resp = admin.post("/settings", fields, page="/settings")
    assert resp.status_code == 422
    html = text_of(resp)
    unit = re.search(r'data-unit-of="set-sync_window_past_days">([^<]*)<', html)
    assert unit and unit.group(1) == "day"
    assert "1 days" not in words_of(html)


# 8 -------------------------------------------------------------------------------------------


def test_the_appointments_list_says_how_many_pages_it_has(app: Flask, admin: Browser, api: Api,
                                                          staff: dict[str, Any]) -> None:
    api.patch(f"/staff/{staff['id']}", {"working_hours": {d: [["00:00", "24:00"]] for d in
                                                         ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
    start = day_at(2, 0)
    for n in range(120):
        begin = start + timedelta(minutes=30 * n)
        assert api.book(staff["id"], begin.isoformat(), (begin + timedelta(minutes=30)).isoformat()
                        ).status_code == 201
    html = text_of(admin.get("/appointments"))
    assert "Page 1 of 3" in html and 'rel="next"' in html and "Later ›" in html
    last = text_of(admin.get("/appointments?page=3"))
    assert "Page 3 of 3" in last and 'rel="next"' not in last and "‹ Earlier" in last
    assert len(re.findall(r'<tr class="">', last)) + len(re.findall(r'<tr class="is-cancelled">', last)) == 20
    # A page past the end is the last page, not an empty list.
    assert "Page 3 of 3" in text_of(admin.get("/appointments?page=9"))
    empty = text_of(admin.get(f"/appointments?staff={staff['id']}&from=2000-01-01&to=2000-01-02"))
    assert "Page 1 of" not in empty and "No appointments in these dates" in empty


# 12, 13 --------------------------------------------------------------------------------------


def test_save_anyway_says_what_it_would_do_and_a_missing_caldav_address_is_not_a_web_page(
    admin: Browser, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    page = f"/staff/{staff['id']}"
    resp = admin.post(f"{page}/calendars/ics", {"url": calendar_http.base_url + "/gone.ics", "name": "Work"},
                      page=page)
    consequence = re.search(r'data-field="consequence">([^<]*)<', text_of(resp))
    assert consequence and unescape(consequence.group(1)).startswith(
        "If you save it anyway, Zoë Müller can't be booked until it syncs")
    # The address it checked rides along, for "Save anyway" to save that one only.
    assert f'name="checked_url" value="{calendar_http.base_url}/gone.ics"' in text_of(resp)

    calendar_http.add("/salon/index.html", WEB_PAGE)
    for path, said, not_said in (
        ("/nothing/here/", "Nothing was found at that address (404)", "web page"),
        ("/salon/index.html", "This address is a web page, not a CalDAV server", "(404)"),
    ):
        resp = admin.post(f"{page}/calendars/discover", {
            "caldav_url": calendar_http.base_url + path, "username": "zoe", "password": "secret"}, page=page)
        assert resp.status_code == 422
        error = words_of(text_of(resp).split('data-field="add-error"', 1)[1].split("</div>", 1)[0])
        assert said in error and not_said not in error, error


# 17 ------------------------------------------------------------------------------------------


def test_the_booking_form_says_up_front_why_a_staff_member_cannot_be_booked(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    broken = _broken(app, api, calendar_http, staff["id"], "Work")
    html = text_of(admin.get(f"/appointments/new?staff={staff['id']}"))
    note = html.split('data-field="unbookable"', 1)[1].split("</p>", 1)[0]
    assert "Zoë Müller can&#39;t be booked: the calendar &#39;Work&#39; has not synced" in note
    assert f'href="/staff/{staff["id"]}#connection-{broken}">Fix<' in note
    # Another staff member, or none chosen: no note.
    assert 'data-field="unbookable"' not in text_of(admin.get("/appointments/new"))
    # Booking anyway: the note says it once, beside its Fix link, not again as a message.
    resp = admin.post("/appointments/new", form(staff["id"], workday()))
    assert resp.status_code == 422
    assert words_of(text_of(resp)).count("can't be booked") == 1


def test_breadcrumbs_lead_back_through_the_staff_list(app: Flask, admin: Browser, api: Api,
                                                      staff: dict[str, Any],
                                                      calendar_http: CalendarHTTPServer) -> None:
    conn = api.post(f"/staff/{staff['id']}/connections", {
        "kind": "ics", "url": calendar_http.add("/ok.ics", busy_ics(1)), "name": "Work"}).get_json()
    for path, here in ((f"/staff/{staff['id']}/invite", "Invite to sync"),
                       (f"/connections/{conn['id']}/edit", "Work")):
        crumbs = text_of(admin.get(path)).split('class="crumbs"', 1)[1].split("</nav>", 1)[0]
        assert '<a href="/staff">Staff</a>' in crumbs
        assert f'<a href="/staff/{staff["id"]}">Zoë Müller</a>' in crumbs
        assert f'aria-current="page">{here}<' in crumbs
