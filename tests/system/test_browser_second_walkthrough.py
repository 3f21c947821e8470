"""What a second walkthrough of the admin pages in Chromium found misleading (issue 15), each fixed
and held here in a real browser at desktop and phone width, axe-core finding nothing: a start
time that has passed is refused beside the booking form, and the cancel dialog of an appointment
that took place offers to cancel without emailing the customer; the navigation is one row from
1280 px and tidy rows below; "Wednesday" whole on a phone; "Sync now" on a failing calendar says
so once, as an error, with the failures counted; the appointments list stays short on a phone;
the New link choices are whole; the settings lists are not cut off on a phone. Screenshots go
to test-output/screenshots/."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Appointment, Connection, OutboxEmail, utcnow
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.servers import CalendarHTTPServer
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import PHONE, Page
from tests.system.test_browser_walkthrough import NARROW_SELECTS

pytestmark = pytest.mark.slow
BERLIN = ZoneInfo("Europe/Berlin")

browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})  # the loopback servers


def _book(api: Api, staff_id: int, begin: datetime, minutes: int = 30) -> int:
    resp = api.book(staff_id, begin.isoformat(), (begin + timedelta(minutes=minutes)).isoformat())
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["id"])


def _workday(after_days: int = 3) -> datetime:
    day = datetime.now(BERLIN).date() + timedelta(days=after_days)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, tzinfo=BERLIN)


def _failing(app: Flask, api: Api, calendar_http: CalendarHTTPServer, staff_id: int, times: int = 3) -> int:
    """A calendar that synced once and has now failed `times` times in a row (404)."""
    url = calendar_http.add("/work.ics", busy_ics(2))
    conn = api.post(f"/staff/{staff_id}/connections", {"kind": "ics", "url": url, "name": "Work"}).get_json()
    api.post(f"/connections/{conn['id']}/sync")
    calendar_http.routes.pop("/work.ics")
    for _ in range(times):
        with app.extensions["calsync"].sessions.begin() as s:
            s.get(Connection, conn["id"]).lease_until = None
        api.post(f"/connections/{conn['id']}/sync")
    return int(conn["id"])


def _emails(app: Flask) -> list[str]:
    with app.extensions["calsync"].sessions() as s:
        return [e.kind for e in s.scalars(select(OutboxEmail).order_by(OutboxEmail.id))]


def test_a_time_that_has_passed_is_refused_and_a_past_appointment_is_cancelled_quietly(
    tab: Page, app: Flask, api: Api, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    tab.log_in()
    page = tab.page
    tab.open(f"/appointments/new?staff={zoe['id']}")
    expect(page.locator('[data-field="book-told"]')).to_contain_text(
        "a confirmation with a calendar invitation is written for them")
    yesterday = (datetime.now(BERLIN) - timedelta(days=1)).date().isoformat()
    page.get_by_label("Date").fill(yesterday)
    page.get_by_label("Start").fill("10:00")
    page.get_by_label("End").fill("10:30")
    page.get_by_label("Service").fill("Haircut")
    page.get_by_label("Name", exact=True).fill("Chloé Lefèvre")
    page.get_by_label("Email (optional)").fill("chloe@example.com")
    page.get_by_role("button", name="Book").click()
    error = page.locator('[data-field="book-error"]')
    expect(error).to_contain_text("Not booked: The start time, 10:00 on")
    expect(error).to_contain_text("has already passed")
    expect(error).to_be_focused()  # read out, and in view
    assert page.get_by_label("Date").input_value() == yesterday
    assert page.get_by_label("Name", exact=True).input_value() == "Chloé Lefèvre"
    expect(page.get_by_label("Date")).to_have_attribute("aria-invalid", "true")
    assert _emails(app) == []
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-book-past")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    tab.shot("second-walkthrough-book-past-phone", full_page=False)
    page.set_viewport_size(test_browser.DESKTOP)

    # An appointment that took place: the dialog says so and, by default, emails nobody.
    appointment_id = _book(api, zoe["id"], _workday())
    with app.extensions["calsync"].sessions.begin() as s:
        item = s.get(Appointment, appointment_id)
        item.start_at = utcnow().replace(microsecond=0) - timedelta(days=3)
        item.end_at = item.start_at + timedelta(minutes=30)
    before = _emails(app)
    tab.open(f"/appointments/{appointment_id}")
    expect(page.locator('[data-field="cancel-past"]')).to_contain_text("This appointment is in the past")
    page.get_by_role("button", name="Cancel appointment…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This appointment is in the past: it was on")
    box = dialog.get_by_label("Also email Chloé Lefèvre (chloe@example.com) that it is cancelled")
    expect(box).not_to_be_checked()
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-cancel-past", full_page=False)
    page.set_viewport_size(PHONE)
    tab.shot("second-walkthrough-cancel-past-phone", full_page=False)
    page.set_viewport_size(test_browser.DESKTOP)
    dialog.get_by_role("button", name="Cancel the appointment", exact=True).click()
    expect(page.locator(".flash")).to_contain_text(
        "Appointment cancelled. Chloé Lefèvre was not emailed, as the appointment was in the past.")
    expect(page.locator(".timeline")).to_contain_text("without emailing the customer")
    assert _emails(app) == before

    # Ticked: the email is written.
    other = _book(api, zoe["id"], _workday() + timedelta(hours=4))
    with app.extensions["calsync"].sessions.begin() as s:
        item = s.get(Appointment, other)
        item.start_at = utcnow().replace(microsecond=0) - timedelta(days=2)
        item.end_at = item.start_at + timedelta(minutes=30)
    tab.open(f"/appointments/{other}")
    page.get_by_role("button", name="Cancel appointment…").click()
    page.get_by_role("dialog").get_by_label("Also email Chloé Lefèvre (chloe@example.com) that it is "
                                            "cancelled").check()
    page.get_by_role("dialog").get_by_role("button", name="Cancel the appointment", exact=True).click()
    expect(page.locator("h1 [data-field='status']")).to_have_text("Cancelled")
    assert _emails(app) == [*before, "booked", "cancelled"]


NAV_ROWS = """() => {
  const top = el => Math.round(el.getBoundingClientRect().top);
  return {links: Array.from(document.querySelectorAll('.main-nav a')).map(top),
          brand: document.querySelector('.brand').getBoundingClientRect(),
          account: document.querySelector('.account button').getBoundingClientRect(),
          firstLink: document.querySelector('.main-nav a').getBoundingClientRect(),
          who: (el => ({scroll: el.scrollWidth, client: el.clientWidth}))(document.querySelector('.who'))};
}"""


# What sticks out on the right (the outermost element of each), for the failure message.
OVERFLOWING = """() => { const width = document.documentElement.clientWidth, wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect(), parent = el.parentElement.getBoundingClientRect();
    if (box.width && box.right > width + 1 && parent.right <= width + 1)
      wide.push(el.tagName + '.' + el.className + ' ' + Math.round(box.right));
  }
  return wide.slice(0, 8);
}"""


def test_the_navigation_is_one_row_from_1280_and_tidy_rows_below(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    _failing(app, api, calendar_http, zoe["id"], times=1)  # Sync health's badge
    _book(api, zoe["id"], _workday())
    with app.extensions["calsync"].sessions.begin() as s:  # Outbox's badge
        for email in s.scalars(select(OutboxEmail)):
            email.status, email.last_error = "failed", "550 No such user"
    tab.log_in()
    page = tab.page
    for width in (1440, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        tab.open("/health")
        expect(page.get_by_role("link", name="Sync health 1 failing")).to_be_visible()
        expect(page.get_by_role("link", name="Outbox 1 failed")).to_be_visible()
        rows = page.evaluate(NAV_ROWS)
        assert len(set(rows["links"])) == 1, (width, rows["links"])  # every link on one row
        # ... the row of the name and the account, not a row of its own.
        middle = rows["firstLink"]["top"] + rows["firstLink"]["height"] / 2
        for other in (rows["brand"], rows["account"]):
            assert other["top"] < middle < other["top"] + other["height"], (width, rows)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width, page.evaluate(OVERFLOWING)
        tab.shot(f"second-walkthrough-nav-{width}", full_page=False)
    assert_accessible(page, axe_source)
    # Narrower: the links on rows of their own below the name, not against the top edge.
    for width in (1024, 820):
        page.set_viewport_size({"width": width, "height": 800})
        tab.open("/health")
        rows = page.evaluate(NAV_ROWS)
        assert min(rows["links"]) >= rows["brand"]["bottom"], (width, rows)
        if width == 1024:
            assert len(set(rows["links"])) == 1, (width, rows["links"])
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width, page.evaluate(OVERFLOWING)
        tab.shot(f"second-walkthrough-nav-{width}", full_page=False)
    page.set_viewport_size(PHONE)
    tab.open("/health")
    rows = page.evaluate(NAV_ROWS)
    assert min(rows["links"]) >= rows["brand"]["bottom"]
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    tab.shot("second-walkthrough-nav-phone", full_page=False)


def test_day_names_are_whole_on_a_phone(tab: Page, app: Flask, api: Api, axe_source: str) -> None:  # noqa: F811
    zoe = api.make_staff()
    tab.log_in()
    page = tab.page
    page.set_viewport_size(PHONE)
    tab.open(f"/staff/{zoe['id']}")
    labels = page.locator(".hours-row label")
    expect(labels).to_have_count(7)
    broken = page.evaluate("""() => Array.from(document.querySelectorAll('.hours-row label')).filter(l => {
        const line = parseFloat(getComputedStyle(l).lineHeight);
        return l.scrollWidth > l.clientWidth || l.getBoundingClientRect().height > line * 1.5;
      }).map(l => l.textContent)""")
    assert broken == []
    page.locator("#hours-wed").scroll_into_view_if_needed()
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-hours-phone", full_page=False)


def test_sync_now_on_a_failing_calendar_says_it_once_as_an_error(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    conn_id = _failing(app, api, calendar_http, zoe["id"])
    with app.extensions["calsync"].sessions.begin() as s:
        s.get(Connection, conn_id).lease_until = None
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    card = page.locator(f"#connection-{conn_id}")
    expect(card.locator('[data-field="failures"]')).to_have_text("3")
    expect(card.locator('[data-field="last-error"]')).to_be_visible()
    page.evaluate("window.notReloaded = true")
    card.get_by_role("button", name="Sync now").click()
    result = card.locator('[data-field="result"]')
    expect(result).to_contain_text("Tried again just now — still failing: The calendar was not found")
    expect(result).to_have_class("note note-error")
    expect(card.locator('[data-field="last-error"]')).to_be_hidden()
    expect(card.locator('[data-field="failures"]')).to_have_text("4")
    # Said once: no other box on the card repeats the error.
    shown = card.locator(".note:visible, .flash:visible", has_text="was not found")
    expect(shown).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-sync-now-failing")
    page.set_viewport_size(PHONE)
    card.scroll_into_view_if_needed()
    tab.shot("second-walkthrough-sync-now-failing-phone", full_page=False)


def test_the_appointments_list_is_short_on_a_phone(
    tab: Page, app: Flask, api: Api, axe_source: str,  # noqa: F811
) -> None:
    zoe = api.make_staff()
    api.patch(f"/staff/{zoe['id']}", {"working_hours": {d: [["07:00", "21:00"]] for d in
                                                      ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
    start = datetime.now(BERLIN).replace(hour=7, minute=0, second=0, microsecond=0) + timedelta(days=1)
    ids = []
    for n in range(42):
        resp = api.book(zoe["id"], (start + timedelta(days=n // 14, hours=n % 14)).isoformat(),
                        (start + timedelta(days=n // 14, hours=n % 14, minutes=45)).isoformat(),
                        service="Deep-tissue massage with hot stones" if n % 3 == 0 else "Haircut")
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["id"])
    api.post(f"/appointments/{ids[1]}/cancel")
    tab.log_in()
    page = tab.page
    page.set_viewport_size(PHONE)
    tab.open("/appointments")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(42)
    height = page.evaluate("document.scrollingElement.scrollHeight")
    assert height < 3500, height
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    # Each row two lines; the badge only on the cancelled one.
    expect(page.locator("tbody .status-cell:visible")).to_have_count(1)
    expect(page.locator("tr.is-cancelled .status-cell")).to_be_visible()
    tallest = max(box["height"] for box in (rows.nth(i).bounding_box() for i in range(42)) if box)
    assert tallest < 70, tallest
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-appointments-phone")
    page.set_viewport_size(test_browser.DESKTOP)
    tab.open("/appointments")
    expect(page.locator("thead")).to_be_visible()  # the desktop table as before
    assert_accessible(page, axe_source)


def test_new_link_choices_and_settings_lists_are_whole_on_a_phone(
    tab: Page, app: Flask, api: Api, axe_source: str,  # noqa: F811
) -> None:
    api.make_staff()
    tab.log_in()
    page = tab.page
    page.set_viewport_size(PHONE)
    tab.open("/")
    owner = page.locator("tbody", has_text="Zoë Müller")
    owner.locator("summary", has_text="New link").click()
    privacy = owner.get_by_label("Privacy")
    assert privacy.locator("option").all_inner_texts() == [
        "Full: with customer details", "Limited: service only", "Busy: no details"]
    assert privacy.input_value() == "limited"
    expect(owner.get_by_text("Full also shows customers’ names")).to_be_visible()
    narrow = page.evaluate(NARROW_SELECTS.replace(".setting select", "details[open] .popover-body select"))
    assert narrow == []
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-new-link-phone", full_page=False)
    tab.open("/settings")
    assert page.evaluate(NARROW_SELECTS) == []
    page.locator("#set-calendar_delete_action").scroll_into_view_if_needed()
    assert_accessible(page, axe_source)
    tab.shot("second-walkthrough-settings-phone", full_page=False)
