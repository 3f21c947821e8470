"""Adding staff calendars in a real browser (Chromium through Playwright, as in
tests/system/test_browser.py), issue 15: a calendar is read once when it is added and its error
is shown beside the address with what was typed kept; "Save anyway" says what it means; a staff
member blocked by a calendar is explained on every page that matters and in the booking error;
new calendars' failures are not emailed; the CalDAV choice has one linked calendar, keeps the
discovery after an error and offers to copy the upcoming bookings; "Sync now" says what it did.
Screenshots at desktop and phone width go to test-output/screenshots/."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Connection, LinkedItem
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.linked_helpers import Linked, at
from tests.mail_helpers import outbox, with_mail
from tests.servers import CalDAVServer, CalendarHTTPServer, SmtpSink
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import PHONE, Page

pytestmark = pytest.mark.slow

browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab

WEB_PAGE = b"<!doctype html><html><head><title>My calendar</title></head><body>Hello</body></html>"


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True, smtp_url=smtp_server.url)


def _connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(Connection).order_by(Connection.id)))


def _add_ics(page: Any, url: str, name: str) -> None:
    form = page.locator("form", has=page.get_by_label("Calendar address"))
    if not page.get_by_label("Calendar address").is_visible():
        page.get_by_text("By its ICS address").click()
    page.get_by_label("Calendar address").fill(url)
    form.get_by_label("Name (optional)").fill(name)
    page.get_by_role("button", name="Add calendar").click()


def test_a_calendar_is_read_when_added_and_its_error_is_shown_beside_the_address(
    tab: Page, browser: Any, live: str, app: Flask, api: Api, calendar_http: CalendarHTTPServer,  # noqa: F811
    settings: Settings, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    page_url = calendar_http.add("/about.html", WEB_PAGE)
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    cases = [
        (calendar_http.base_url + "/gone.ics", "The calendar was not found at that address"),
        (page_url, "This address is a web page, not a calendar"),
        ("http://127.0.0.1:1/closed.ics", "The calendar server refused the connection"),
    ]
    for url, sentence in cases:
        _add_ics(page, url, "Work")
        error = page.locator('[data-field="add-error"]')
        expect(error).to_contain_text(sentence)
        # What was typed is kept, the field says it is wrong, and nothing was saved.
        assert page.get_by_label("Calendar address").input_value() == url
        assert page.get_by_label("Name (optional)").first.input_value() == "Work"
        assert page.get_by_label("Calendar address").get_attribute("aria-invalid") == "true"
        expect(error.get_by_role("button", name="Save anyway as not yet reachable")).to_be_visible()
        form_text = page.locator("form", has=page.get_by_label("Calendar address")).inner_text().lower()
        assert "password" not in form_text  # an ICS address has none
        assert _connections(app) == []
    tab.shot("calendars-add-error")
    assert_accessible(page, axe_source)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    page.locator('[data-field="add-error"]').scroll_into_view_if_needed()
    tab.shot("calendars-add-error-phone", full_page=False)
    page.set_viewport_size(test_browser.DESKTOP)

    # A forbidden (private) address is refused outright: no "Save anyway" for it.
    services = app.extensions["calsync"]
    services.settings = settings.model_copy(update={"allow_private_networks": False})
    try:
        _add_ics(page, "http://10.0.0.7/cal.ics", "Intranet")
        error = page.locator('[data-field="add-error"]')
        expect(error).to_contain_text("That calendar address is not allowed: it is a private network address")
        expect(error.get_by_role("button", name="Save anyway as not yet reachable")).to_have_count(0)
    finally:
        services.settings = settings
    assert _connections(app) == []

    # The staff member's own page checks the same way.
    page.get_by_role("button", name="Create link").click()
    link = page.get_by_label("Self-service link of Zoë Müller").input_value()
    staff_tab = Page(browser, live, PHONE)  # another browser, no admin session, phone-sized
    try:
        own = staff_tab.page
        staff_tab.open(re.sub(r"^https?://[^/]+", "", link))
        _add_ics(own, page_url, "Mine")
        expect(own.locator('[data-field="add-error"]')).to_contain_text(
            "This address is a web page, not a calendar")
        assert own.get_by_label("Calendar address").input_value() == page_url
        assert own.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        assert_accessible(own, axe_source)
        own.locator('[data-field="add-error"]').scroll_into_view_if_needed()
        staff_tab.shot("calendars-self-service-add-error-phone", full_page=False)
        own.get_by_role("button", name="Save anyway as not yet reachable").click()
        expect(own.locator('[data-field="unbookable"]')).to_contain_text(
            "Zoë Müller can't be booked: the calendar 'Mine' has not synced since it was added")
    finally:
        staff_tab.close()
    with app.extensions["calsync"].sessions.begin() as s:
        for conn in s.scalars(select(Connection)):
            s.delete(conn)

    # A working address is read at once: the card shows its busy times, not "not synced yet".
    _add_ics(page, calendar_http.add("/ok.ics", busy_ics(3)), "Personal")
    card = page.locator("article.conn", has_text="Personal")
    expect(card.locator('[data-field="status"]')).to_have_text("OK")
    expect(card.locator('[data-field="busy-count"]')).to_have_text("3")
    added = "Calendar 'Personal' added. 'Personal' synced: 3 busy times read."
    expect(page.get_by_text(added)).to_be_visible()


def test_save_anyway_explains_the_block_everywhere_and_sends_no_alert_emails(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    # Five broken addresses, each saved explicitly as not yet reachable.
    for n in range(5):
        _add_ics(page, f"{calendar_http.base_url}/gone-{n}.ics", f"Work {n}")
        error = page.locator('[data-field="add-error"]')
        expect(error.locator('[data-field="consequence"]')).to_contain_text(
            "Zoë Müller can't be booked until it syncs")
        expect(error.locator('[data-field="consequence"]')).to_contain_text(
            "If it still has not synced 24 hours after it was added, bookings go ahead without it.")
        if n == 0:
            tab.shot("calendars-save-anyway")
        error.get_by_role("button", name="Save anyway as not yet reachable").click()
        expect(page.get_by_text(f"Calendar 'Work {n}' saved as not yet reachable.")).to_be_visible()
    conns = _connections(app)
    assert [(c.name, c.status) for c in conns] == [(f"Work {n}", "error") for n in range(5)]
    # Each keeps failing in the background: an alert each, shown on the pages, never emailed.
    for conn in conns:
        for _ in range(3):
            with app.extensions["calsync"].sessions.begin() as s:
                s.get(Connection, conn.id).lease_until = None
            api.post(f"/connections/{conn.id}/sync")
    assert [e for e in outbox(app) if e.kind == "alert"] == []

    first = conns[0]
    tab.open(f"/staff/{zoe['id']}")
    card = page.locator(f"#connection-{first.id}")
    expect(card.locator('[data-field="status"]')).to_have_text("Not yet reachable")
    banner = page.locator('[data-field="unbookable"]')
    expect(banner).to_contain_text("Zoë Müller can't be booked: the calendar 'Work 0' has not synced "
                                   "since it was added on")
    expect(banner).to_contain_text("because the calendar was not found at that address")
    tab.shot("calendars-unbookable-staff")
    assert_accessible(page, axe_source)
    banner.get_by_role("link", name="Fix").click()
    assert page.url.endswith(f"#connection-{first.id}")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    page.locator('[data-field="unbookable"]').scroll_into_view_if_needed()
    tab.shot("calendars-unbookable-staff-phone", full_page=False)
    page.set_viewport_size(test_browser.DESKTOP)

    # Sync health and the Calendar sync list say the same, with a link to fix it.
    tab.open("/health")
    line = page.locator(f"#connection-{first.id} [data-field='unbookable']")
    expect(line).to_contain_text("Zoë Müller can't be booked: the calendar 'Work 0'")
    expect(line.get_by_role("link", name="Fix")).to_have_attribute(
        "href", f"/staff/{zoe['id']}#connection-{first.id}")
    tab.shot("calendars-unbookable-health")
    assert_accessible(page, axe_source)
    tab.open("/")
    owner = page.locator('[data-field="unbookable"]')
    expect(owner).to_contain_text("Zoë Müller can't be booked: the calendar 'Work 0'")
    tab.shot("calendars-unbookable-calendar-sync")

    # The booking error says why and what to do, in the admin form and in the API.
    tab.open(f"/appointments/new?staff={zoe['id']}")
    page.get_by_label("Date").fill("2030-01-07")
    page.get_by_label("Start").fill("10:00")
    page.get_by_label("End", exact=True).fill("10:30")
    page.get_by_label("Service").fill("Cut")
    page.get_by_label("Name", exact=True).fill("Chloé Lefèvre")
    page.get_by_role("button", name="Book").click()
    expect(page.get_by_text("Zoë Müller can't be booked: the calendar 'Work 0' has not synced")
           ).to_be_visible()
    main = page.locator("main").inner_text()
    assert "try again in a minute" not in main
    tab.shot("calendars-unbookable-booking")
    refused = api.book(zoe["id"], "2030-01-07T10:00:00+01:00", "2030-01-07T10:30:00+01:00")
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error.startswith("Zoë Müller can't be booked: the calendar 'Work 0' has not synced since")
    assert "; and 4 more calendars have not synced either." in error
    assert "Fix or remove them on Zoë Müller's staff page; from " in error
    assert "bookings go ahead without them." in error


def test_caldav_choice_keeps_the_discovery_links_one_calendar_and_copies_bookings(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, calendar_http: CalendarHTTPServer,
    axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff(working_hours={d: [["00:00", "24:00"]] for d in
                                        ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}, timezone="UTC")
    radicale.calendar("work", "Work Zoë")
    radicale.calendar("home", "Home")
    for day in (3, 4):
        assert api.book(zoe["id"], iso(at(day, 10)), iso(at(day, 11))).status_code == 201
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    page.get_by_text("From a CalDAV server").click()

    # A web page where the CalDAV server should be: said so beside the field, typing kept.
    page.get_by_label("Server address").fill(calendar_http.add("/index.html", WEB_PAGE))
    page.get_by_label("User name").fill(radicale.username)
    page.get_by_label("Password").fill(radicale.password)
    page.get_by_role("button", name="Look up calendars").click()
    expect(page.locator('[data-field="add-error"]')).to_contain_text(
        "This address is a web page, not a CalDAV server")
    assert page.get_by_label("User name").input_value() == radicale.username
    assert page.get_by_label("Server address").input_value().endswith("/index.html")
    tab.shot("calendars-caldav-web-page")

    page.get_by_label("Server address").fill(radicale.base_url + "/")
    page.get_by_label("Password").fill(radicale.password)
    page.get_by_role("button", name="Look up calendars").click()
    expect(page.get_by_role("heading", name="Choose calendars")).to_be_visible()
    # "Linked" is one choice among the calendars (radio buttons, with "none").
    assert page.get_by_label("Work Zoë: linked").get_attribute("type") == "radio"
    assert page.get_by_label("No linked calendar for now").is_checked()
    page.get_by_label("Home: linked").check()
    page.get_by_label("Work Zoë: linked").check()
    assert not page.get_by_label("Home: linked").is_checked()
    # An error (nothing to read busy time from, say a hand-made choice) keeps the list and the choice.
    page.get_by_label("No linked calendar for now").check()
    page.get_by_role("button", name="Connect chosen calendars").click()
    expect(page.locator('[data-field="choose-error"]')).to_have_text(
        "Choose at least one calendar to connect.")
    expect(page.get_by_role("heading", name="Choose calendars")).to_be_visible()
    page.get_by_label("Work Zoë: busy time").check()
    page.get_by_label("Work Zoë: linked").check()
    copy = page.get_by_label("Copy Zoë Müller’s 2 upcoming bookings into the linked calendar")
    assert not copy.is_checked()  # offered, not imposed
    copy.check()
    tab.shot("calendars-choose")
    assert_accessible(page, axe_source)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    tab.shot("calendars-choose-phone")
    page.set_viewport_size(test_browser.DESKTOP)
    discovery_page = page.content()
    page.get_by_role("button", name="Connect chosen calendars").click()
    expect(page.get_by_text("'Work Zoë' connected. 'Work Zoë' synced: 2 bookings written, 0 moves "
                            "applied, 0 conflicts opened")).to_be_visible()
    [work] = _connections(app)
    with app.extensions["calsync"].sessions() as s:
        assert len(s.scalars(select(LinkedItem).where(LinkedItem.connection_id == work.id)).all()) == 2
    assert len(radicale.calendar("work").events()) == 2

    # The same form sent again (a double click, the back button): no false "already has a
    # linked calendar", nothing duplicated.
    token = re.search(r'name="discovery" value="([^"]+)"', discovery_page)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', discovery_page)
    assert token and csrf
    again = page.request.post(f"{tab.base}/staff/{zoe['id']}/calendars/caldav", form={
        "csrf_token": unescape(csrf.group(1)), "discovery": unescape(token.group(1)),
        "roles-0": "conflict", "linked": "0"}, headers={"Origin": tab.base, "Sec-Fetch-Site": "same-origin"})
    assert "already has a linked calendar" not in again.text()
    assert len(_connections(app)) == 1

    # Later the staff page offers to copy bookings made elsewhere before the calendar was linked.
    with app.extensions["calsync"].sessions.begin() as s:
        for item in s.scalars(select(LinkedItem)):
            s.delete(item)
    tab.open(f"/staff/{zoe['id']}")
    offer = page.locator('[data-field="copy-offer"]')
    expect(offer).to_contain_text("2 upcoming bookings are not in this calendar yet.")
    offer.get_by_role("button", name="Copy them into 'Work Zoë'").click()
    expect(page.get_by_text("2 upcoming bookings queued for 'Work Zoë'. 'Work Zoë' synced: 2 bookings "
                            "written")).to_be_visible()
    expect(page.locator('[data-field="copy-offer"]')).to_have_count(0)


def test_sync_now_says_what_the_sync_did(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)  # two-way on, the calendar "work" linked and synced
    first = linked.book(at(2, 10))
    other = linked.book(at(2, 14))
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{linked.staff['id']}")
    card = page.locator(f"#connection-{linked.connection_id}")
    card.get_by_role("button", name="Sync now").click()
    expect(card.locator('[data-field="result"]')).to_contain_text(
        "synced: 2 bookings written, 0 moves applied, 0 conflicts opened, 0 busy times read.")
    # The staff member drags one booking in their calendar, and one onto the other booking.
    linked.move_in_calendar(first["uid"], at(2, 12))
    card.get_by_role("button", name="Sync now").click()
    expect(card.locator('[data-field="result"]')).to_contain_text("1 move applied, 0 conflicts opened")
    linked.move_in_calendar(other["uid"], at(2, 12, 30))
    card.get_by_role("button", name="Sync now").click()
    expect(card.locator('[data-field="result"]')).to_contain_text("1 conflict opened")
    tab.shot("calendars-sync-now-counts")
    assert_accessible(page, axe_source)
    page.set_viewport_size(PHONE)
    card.scroll_into_view_if_needed()
    tab.shot("calendars-sync-now-counts-phone", full_page=False)
