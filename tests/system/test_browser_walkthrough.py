"""What a new admin's walkthrough in Chromium found misleading (issue 15), each fixed and held
here in a real browser: Enter after an ICS error checks the address again instead of saving it
unchecked; the Reschedule form keeps what was typed beside its error; the cancel dialog does not
promise an email no mail server will send; Sync health filters and labels a calendar that never
synced the same way everywhere and names every calendar that blocks a staff member; settings
selects are not cut off; the Calendar sync page stays short on a phone. Screenshots at desktop
and phone width go to test-output/screenshots/."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Connection
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.servers import CalendarHTTPServer
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import PHONE, Page

pytestmark = pytest.mark.slow
BERLIN = ZoneInfo("Europe/Berlin")
# The lists narrower than their longest option (plus room for the arrow): cut off ("Remove it…").
NARROW_SELECTS = """() => Array.from(document.querySelectorAll('.setting select')).filter(select => {
    const probe = document.createElement('span');
    probe.style.font = getComputedStyle(select).font;
    probe.style.position = 'absolute';
    probe.style.whiteSpace = 'nowrap';
    document.body.appendChild(probe);
    let widest = 0;
    for (const option of select.options) {
      probe.textContent = option.text;
      widest = Math.max(widest, probe.offsetWidth);
    }
    probe.remove();
    select.dataset.widest = widest;
    return select.getBoundingClientRect().width < widest + 16;
  }).map(select => select.id + ": " + Math.round(select.getBoundingClientRect().width) + " px for " +
                   select.dataset.widest + " px")"""

browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})  # the loopback servers


def _connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(Connection).order_by(Connection.id)))


def _open_ics_form(page: Any) -> None:
    if not page.get_by_label("Calendar address").is_visible():
        page.get_by_text("By its ICS address").click()


def test_enter_after_an_ics_error_checks_again_and_save_anyway_saves_only_the_checked_address(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    _open_ics_form(page)
    gone = calendar_http.base_url + "/gone.ics"
    page.get_by_label("Calendar address").fill(gone)
    page.get_by_label("Calendar address").press("Enter")
    error = page.locator('[data-field="add-error"]')
    expect(error).to_contain_text("The calendar was not found at that address")
    expect(error.get_by_role("button", name="Save anyway as not yet reachable")).to_be_visible()
    # The one "Add calendar" button a person (or a screen reader) finds is the visible one.
    expect(page.get_by_role("button", name="Add calendar")).to_have_count(1)

    # Enter again (in the address, then in the name): the address is checked again, not saved.
    page.get_by_label("Calendar address").press("Enter")
    expect(error).to_contain_text("The calendar was not found at that address")
    page.locator("#ics-name").fill("Work")
    page.locator("#ics-name").press("Enter")
    expect(error).to_contain_text("The calendar was not found at that address")
    assert _connections(app) == []
    assert page.locator("#ics-name").input_value() == "Work"
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-ics-enter")

    # A different address typed over the checked one: "Save anyway" checks it rather than
    # saving it unread.
    other = calendar_http.base_url + "/other-gone.ics"
    page.get_by_label("Calendar address").fill(other)
    error.get_by_role("button", name="Save anyway as not yet reachable").click()
    expect(error).to_contain_text("The address was changed after it was checked")
    assert _connections(app) == []
    assert page.get_by_label("Calendar address").input_value() == other

    # Now it was checked: "Save anyway" saves it, as not yet reachable.
    error.get_by_role("button", name="Save anyway as not yet reachable").click()
    expect(page.get_by_text("Calendar 'Work' saved as not yet reachable.")).to_be_visible()
    [conn] = _connections(app)
    assert (conn.extra or {}).get("saved_unreachable") is True
    assert calendar_http.hits.get("/gone.ics") == 3 and calendar_http.hits.get("/other-gone.ics") == 2
    # The saved address is the one typed last: once it is there, it syncs.
    calendar_http.add("/other-gone.ics", busy_ics(2))
    api.post(f"/connections/{conn.id}/sync")
    [conn] = _connections(app)
    assert (conn.status, conn.busy_count) == ("ok", 2)


def _workday(after_days: int = 3) -> date:
    day = datetime.now(BERLIN).date() + timedelta(days=after_days)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _book(api: Api, staff_id: int, day: date, start: str = "10:00", end: str = "10:30") -> int:
    begin = datetime.fromisoformat(f"{day.isoformat()}T{start}").replace(tzinfo=BERLIN)
    finish = datetime.fromisoformat(f"{day.isoformat()}T{end}").replace(tzinfo=BERLIN)
    resp = api.book(staff_id, begin.isoformat(), finish.isoformat())
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["id"])


def test_reschedule_keeps_what_was_typed_and_cancel_promises_no_email_without_a_mail_server(
    tab: Page, app: Flask, api: Api, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    appointment_id = _book(api, zoe["id"], _workday())
    tab.log_in()
    page = tab.page
    tab.open(f"/appointments/{appointment_id}")
    expect(page.locator("h1 [data-field='status']")).to_have_text("Confirmed")
    card = page.locator("#reschedule")
    expect(card.locator('[data-field="move-told"]')).to_have_text(
        "The email telling Chloé Lefèvre (chloe@example.com) the new time waits in the outbox, "
        "because no mail server is set up (CALSYNC_SMTP_URL).")
    later = _workday(10).isoformat()
    card.get_by_label("Date").fill(later)
    card.get_by_label("Start").fill("20:00")
    card.get_by_label("End").fill("21:00")
    card.get_by_role("button", name="Move appointment").click()
    # The error beside the card, what was typed still there.
    expect(card.locator('[data-field="move-error"]')).to_contain_text("does not work at that time")
    assert card.get_by_label("Date").input_value() == later
    assert (card.get_by_label("Start").input_value(), card.get_by_label("End").input_value()) == (
        "20:00", "21:00")
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-reschedule-error")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    card.scroll_into_view_if_needed()
    tab.shot("walkthrough-reschedule-error-phone", full_page=False)
    page.set_viewport_size(test_browser.DESKTOP)

    card.get_by_label("Start").fill("15:00")
    card.get_by_label("End").fill("15:30")
    card.get_by_role("button", name="Move appointment").click()
    expect(page.locator(".flash")).to_contain_text("Appointment moved.")
    expect(page.locator(".flash")).to_contain_text("waits in the outbox, because no mail server is set up")

    # Cancelling: the page dialog says the email waits; its button promises no email.
    page.get_by_role("button", name="Cancel appointment…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("The email telling Chloé Lefèvre (chloe@example.com) that it is "
                                   "cancelled waits in the outbox, because no mail server is set up")
    expect(dialog).not_to_contain_text("is emailed at")
    tab.shot("walkthrough-cancel-dialog-no-mail", full_page=False)
    dialog.get_by_role("button", name="Cancel the appointment", exact=True).click()
    expect(page.locator(".flash")).to_contain_text(
        "Appointment cancelled. The email to Chloé Lefèvre (chloe@example.com) waits in the outbox")
    expect(page.locator("h1 [data-field='status']")).to_have_text("Cancelled")
    tab.open("/outbox")
    expect(page.get_by_role("button", name=re.compile("^Retry"))).to_have_count(0)
    expect(page.locator('[data-field="waits-note"]').first).to_have_text("Waits for a mail server")
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-outbox-no-mail")


def test_settings_lists_are_not_cut_off_and_units_agree(
    tab: Page, app: Flask, axe_source: str,  # noqa: F811
) -> None:
    tab.log_in()
    page = tab.page
    tab.open("/settings")
    # Each list is at least as wide as its longest option: nothing ends in "…".
    narrow = page.evaluate(NARROW_SELECTS)
    assert narrow == []
    tab.shot("walkthrough-settings-lists")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(test_browser.DESKTOP)
    # A refused Save keeps "1" beside "day", not "days".
    page.locator("#set-sync_window_past_days").fill("1")
    page.locator("#set-feed_refresh_minutes").fill("1")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#error-feed_refresh_minutes")).to_contain_text("Enter 5 or more.")
    expect(page.locator('[data-unit-of="set-sync_window_past_days"]')).to_have_text("day")
    assert "1 days" not in page.locator("main").inner_text()
    assert_accessible(page, axe_source)


def test_sync_health_marks_every_blocking_calendar_and_says_each_error_once(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    ids = []
    for n in range(3):
        conn = api.post(f"/staff/{zoe['id']}/connections", {
            "kind": "ics", "url": f"{calendar_http.base_url}/gone-{n}.ics", "name": f"Work {n}"}).get_json()
        for _ in range(3):
            with app.extensions["calsync"].sessions.begin() as s:
                s.get(Connection, conn["id"]).lease_until = None
            api.post(f"/connections/{conn['id']}/sync")
        ids.append(conn["id"])
    tab.log_in()
    page = tab.page
    tab.open("/health")
    expect(page.get_by_role("link", name="Not synced yet 3")).to_be_visible()
    for conn_id in ids:
        row = page.locator(f"#connection-{conn_id}")
        expect(row.locator('[data-field="status"]')).to_have_text("Not yet reachable")
        expect(row.locator('[data-field="unbookable"]')).to_be_visible()
    first = page.locator(f"#connection-{ids[0]}")
    expect(first.locator('[data-field="unbookable"]')).to_contain_text(
        "and 2 more calendars have not synced either")
    assert first.inner_text().lower().count("the calendar was not found at that address") == 1
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-health-blocking")
    page.get_by_role("link", name="Not synced yet 3").click()
    expect(page.locator("tr[id^=connection-]")).to_have_count(3)
    # The booking form says it before anything is typed, with the way to fix it.
    tab.open(f"/appointments/new?staff={zoe['id']}")
    note = page.locator('[data-field="unbookable"]')
    expect(note).to_contain_text("Zoë Müller can't be booked: the calendar 'Work 0'")
    expect(note.get_by_role("link", name="Fix")).to_have_attribute(
        "href", f"/staff/{zoe['id']}#connection-{ids[0]}")
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-booking-form-blocked")


def test_calendar_sync_stays_short_on_a_phone_and_the_block_wraps_below_new_link(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    members = [api.make_staff(name=f"Staff member {n:02d}", email=f"s{n}@example.com") for n in range(25)]
    api.post(f"/staff/{members[0]['id']}/connections", {
        "kind": "ics", "url": calendar_http.base_url + "/gone.ics", "name": "Work"})
    tab.log_in()
    page = tab.page
    page.set_viewport_size(PHONE)
    tab.open("/")
    expect(page.locator("#feeds-staff tr.owner")).to_have_count(25)
    tab.shot("walkthrough-calendar-sync-phone-full")
    height = page.evaluate("document.scrollingElement.scrollHeight")
    assert height < 6000, height
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    # The red note is under the name and "New link", the row's full width, not squeezed beside it.
    owner = page.locator(f"#owner-staff-{members[0]['id']}")
    note = owner.locator('[data-field="unbookable"]')
    button = owner.locator("summary", has_text="New link")
    note_box, button_box, row_box = note.bounding_box(), button.bounding_box(), owner.bounding_box()
    assert note_box and button_box and row_box
    assert note_box["y"] >= button_box["y"] + button_box["height"]
    assert note_box["width"] > 0.8 * row_box["width"]
    note.scroll_into_view_if_needed()
    tab.shot("walkthrough-calendar-sync-phone", full_page=False)
    # A link's address and subscribe buttons are one tap away; a new link shows them at once.
    first_link = owner.locator("tr[id^=token-]").first
    expect(first_link.locator("input.url")).to_be_hidden()
    first_link.get_by_text("Link and subscribe buttons").click()
    expect(first_link.locator("input.url")).to_be_visible()
    expect(first_link.get_by_role("link", name="Apple Calendar")).to_be_visible()
    button.click()
    owner.get_by_label("Name").fill("Front desk")
    owner.get_by_role("button", name="Create link").click()
    made = page.locator("tr[id^=token-]", has_text="Front desk")
    expect(made.locator("input.url")).to_be_visible()
    assert_accessible(page, axe_source)
    page.set_viewport_size(test_browser.DESKTOP)
    tab.open("/")
    assert page.evaluate("document.scrollingElement.scrollHeight") < 6000
    assert_accessible(page, axe_source)
    tab.shot("walkthrough-calendar-sync")


def test_the_navigation_never_breaks_a_link_over_two_lines(tab: Page, app: Flask) -> None:
    tab.log_in()
    page = tab.page
    for width in (1280, 1024, 820, 700, 390):
        page.set_viewport_size({"width": width, "height": 800})
        tab.open("/health")
        broken = page.evaluate("""() => Array.from(document.querySelectorAll('.main-nav a')).filter(a => {
            const range = document.createRange(); range.selectNodeContents(a);
            return new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size > 1;
          }).map(a => a.textContent.trim())""")
        assert broken == [], (width, broken)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width, width
    page.set_viewport_size({"width": 820, "height": 800})
    tab.shot("walkthrough-nav-820", full_page=False)
