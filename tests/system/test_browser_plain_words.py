"""Admin pages that speak plainly (issue 15), in a real browser (Chromium through Playwright, as in
tests/system/test_browser.py): settings in plain words with two-way options that follow the
two-way switch, connection cards that say what each calendar is for, and an Outbox whose
attempts and labels mean what they say. Screenshots at desktop and phone width go to
test-output/screenshots/."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Staff, utcnow
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.linked_helpers import Linked, at
from tests.mail_helpers import deliver, with_mail
from tests.servers import CalDAVServer, CalendarHTTPServer, SmtpSink
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import PHONE, Page, company_settings

pytestmark = pytest.mark.slow

# The browser, the app on a loopback port and a logged-out admin tab: tests/system/test_browser.py.
browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    # Feed links on a loopback address, as on a laptop demo: the page warns about it.
    return with_mail(settings, allow_private_networks=True, smtp_url=smtp_server.url,
                     base_url="http://127.0.0.1:8000")


def test_settings_speak_plainly_and_two_way_options_follow_the_switch(tab: Page, app: Flask) -> None:
    tab.log_in()
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    form = page.locator("#settings")
    text = form.inner_text()
    for jargon in ("REFRESH-INTERVAL", "X-PUBLISHED-TTL", "STATUS:CANCELLED", "RFC 7986"):
        assert jargon not in text, jargon
    stale = page.get_by_label("Stale calendars")
    assert stale.locator("option").all_inner_texts() == [
        "Keep the last known busy times", "Stop bookings until it syncs again"]
    mode = page.get_by_label("Default sync mode")
    assert "Only when someone presses Sync now" in mode.locator("option").all_inner_texts()

    # "1 day", and the unit follows what is typed.
    back = page.get_by_label("Read staff calendars back")
    unit = back.locator("xpath=following-sibling::span[@class='unit']")
    expect(unit).to_have_text("day")
    back.fill("3")
    expect(unit).to_have_text("days")
    back.fill("1")
    expect(unit).to_have_text("day")

    # What a deletion in a staff calendar does only matters with two-way sync.
    two_way = page.locator("#set-bidirectional_sync")
    deletion = page.get_by_label("Deletion in a staff calendar")
    assert not two_way.is_checked()
    expect(deletion).to_be_disabled()
    two_way.check()
    expect(deletion).to_be_enabled()
    deletion.select_option(label="Put the booking back in the calendar")
    tab.shot("plain-settings")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible()
    saved = company_settings(app)
    assert (saved.bidirectional_sync, saved.calendar_delete_action) == (True, "restore")

    # Two-way off again: the disabled choice is not sent, and is kept rather than refused.
    page.locator("#set-bidirectional_sync").uncheck()
    expect(page.get_by_label("Deletion in a staff calendar")).to_be_disabled()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible()
    saved = company_settings(app)
    assert (saved.bidirectional_sync, saved.calendar_delete_action) == (False, "restore")
    page.set_viewport_size(PHONE)
    page.locator("#settings").scroll_into_view_if_needed()
    tab.shot("plain-settings-phone", full_page=False)


def _does(page: object, name: str) -> list[str]:
    card = page.locator("article.conn", has_text=name)  # type: ignore[attr-defined]
    return card.locator('[data-field="does"] li').all_inner_texts()  # type: ignore[no-any-return]


def test_connection_cards_say_what_each_calendar_does(
    tab: Page, browser: Any, live: str, app: Flask, api: Api, radicale: CalDAVServer,  # noqa: F811
    calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)  # two-way on, a calendar with busy time and bookings
    api.post(f"/staff/{linked.staff['id']}/connections",
             {"kind": "ics", "url": calendar_http.add("/p.ics", busy_ics(1)), "name": "Personal"})
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{linked.staff['id']}")
    work = page.locator("article.conn").filter(has_not_text="Personal").first
    work_name = work.locator("h3").inner_text()
    assert _does(page, work_name) == [
        "Busy time is read",
        "Bookings are written here",
        "Two-way: moves and deletions here change the booking and email the customer",
    ]
    assert _does(page, "Personal") == ["Busy time is read"]
    tab.shot("plain-connection-cards")
    assert_accessible(page, axe_source)
    page.set_viewport_size(PHONE)
    tab.shot("plain-connection-cards-phone")

    # The staff member's own page says the same of their calendars.
    page.get_by_role("button", name="Create link").click()
    link = page.get_by_label(f"Self-service link of {linked.staff['name']}").input_value()
    staff_tab = Page(browser, live, PHONE)  # another browser, no admin session
    try:
        staff_tab.open(re.sub(r"^https?://[^/]+", "", link))
        assert _does(staff_tab.page, work_name)[-1].startswith("Two-way: moves and deletions here")
        assert staff_tab.page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        assert_accessible(staff_tab.page, axe_source)
        staff_tab.shot("plain-self-service-cards-phone")
    finally:
        staff_tab.close()

    # The staff member opted out of two-way sync: their calendar no longer claims it.
    with app.extensions["calsync"].sessions() as s:
        staff = s.scalars(select(Staff).where(Staff.id == linked.staff["id"])).one()
        staff.bidirectional_opt_out = True
        s.commit()
    page.reload()
    assert _does(page, work_name) == ["Busy time is read", "Bookings are written here"]
    # Two-way off for the company: the same.
    with app.extensions["calsync"].sessions() as s:
        s.scalars(select(Staff).where(Staff.id == linked.staff["id"])).one().bidirectional_opt_out = False
        s.commit()
    api.patch("/settings", {"bidirectional_sync": False})
    page.reload()
    assert _does(page, work_name) == ["Busy time is read", "Bookings are written here"]


def test_outbox_counts_every_attempt_and_names_alerts_plainly(
    tab: Page, app: Flask, api: Api, smtp_server: SmtpSink, calendar_http: CalendarHTTPServer
) -> None:
    zoe = api.make_staff()
    # A calendar that worked and then keeps failing opens an alert, emailed to the admins and
    # the staff member (a just-added calendar's first failures are shown on the page instead).
    url = calendar_http.add("/gone.ics", busy_ics(1))
    conn = api.post(f"/staff/{zoe['id']}/connections", {"kind": "ics", "url": url, "name": "Old"}).get_json()
    api.post(f"/connections/{conn['id']}/sync")
    calendar_http.add("/gone.ics", status=404)
    for _ in range(3):
        api.post(f"/connections/{conn['id']}/sync")
    smtp_server.refuse = "451 4.3.0 Try again later"
    assert deliver(app).failed_attempts >= 1
    smtp_server.refuse = None
    # Not due again yet; deliver as if the retry time had come.
    assert deliver(app, utcnow() + timedelta(minutes=5)).sent >= 1
    tab.log_in()
    page = tab.page
    page.get_by_role("link", name="Outbox").click()
    row = page.locator("tr[id^=email-]").first
    expect(row.locator('[data-field="status"]')).to_have_text("Sent")
    expect(row.locator('[data-field="attempts"]')).to_have_text("2 attempts")  # one failed, one went out
    expect(row.locator('[data-field="sent-note"]')).to_have_text("Sent")
    expect(row.locator('[data-field="kind"]')).to_have_text("Calendar alert")
    body = page.locator("main").inner_text()
    assert "Admin alert" not in body and "never sent twice" not in body
    tab.shot("plain-outbox")
    page.set_viewport_size(PHONE)
    tab.shot("plain-outbox-phone")


def test_new_links_are_limited_and_a_loopback_base_url_is_flagged(tab: Page, app: Flask, api: Api) -> None:
    api.make_staff()
    tab.log_in()
    page = tab.page
    banner = page.locator('[data-field="base-url-warning"]')
    expect(banner).to_contain_text("Google and Outlook cannot reach this address, so subscriptions "
                                   "from them will fail")
    expect(banner).to_contain_text("http://127.0.0.1:8000")
    owner = page.locator("tbody", has_text="Zoë Müller")
    owner.locator("summary", has_text="New link").click()
    privacy = owner.get_by_label("Privacy")
    assert privacy.input_value() == "limited"
    expect(owner.get_by_text("Full also shows customers’ names")).to_be_visible()
    tab.shot("plain-new-link-limited")
    owner.get_by_label("Name").fill("Front desk")
    owner.get_by_role("button", name="Create link").click()
    row = page.locator("tr[id^=token-]", has_text="Front desk")
    expect(row.locator(".badge-privacy")).to_have_text("limited")
    page.set_viewport_size(PHONE)
    page.reload()
    tab.shot("plain-calendar-sync-warning-phone", full_page=False)


# The innermost elements that stick out past the right edge: what to fix when a page is too wide.
WIDE_ELEMENTS = """(limit) => Array.from(document.querySelectorAll('body *'))
  .filter(el => el.getBoundingClientRect().right > limit + 0.5 && el.getClientRects().length)
  .filter(el => !Array.from(el.children).some(c => c.getBoundingClientRect().right > limit + 0.5))
  .slice(0, 8)
  .map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + '.' + el.className + ' ' +
             Math.round(el.getBoundingClientRect().right))"""


def conflict_and_failed_emails(app: Flask, linked: Linked,
                               smtp_server: SmtpSink) -> tuple[dict[str, Any], int]:
    """An open conflict (a move in the staff calendar onto another booking) and the emails the
    mail server refused (two confirmations and the conflict notice), so that both badges of the
    navigation show: the first booking, and how many emails were given up."""
    first = linked.book(at(2, 10))
    linked.book(at(2, 12))
    linked.sync()
    linked.move_in_calendar(first["uid"], at(2, 12, 30))
    linked.sync()
    smtp_server.refuse = "554 5.7.1 Mailbox unavailable"
    failed = deliver(app).gave_up
    smtp_server.refuse = None
    return first, failed


def test_errors_say_what_to_do_in_plain_words(
    tab: Page, app: Flask, api: Api, calendar_http: CalendarHTTPServer
) -> None:
    zoe = api.make_staff()
    shared = calendar_http.add("/unshared.ics", status=403)
    api.post(f"/staff/{zoe['id']}/connections", {"kind": "ics", "url": shared, "name": "Unshared"})
    tab.log_in()
    page = tab.page

    # An ICS address has no password: the refusal says what to do with the address instead.
    tab.open(f"/staff/{zoe['id']}")
    card = page.locator("article.conn", has_text="Unshared")
    card.get_by_role("button", name="Sync now").click()
    error = card.locator('[data-field="result"]')  # said once, where Sync now answers
    expect(error).to_contain_text("Copy the calendar's current address again")
    assert "password" not in error.inner_text().lower()

    # Outside working hours: no "availability endpoint", only what to choose.
    page.get_by_role("link", name="Book").click()
    page.get_by_label("Date").fill("2030-01-07")
    page.get_by_label("Start").fill("03:00")
    page.get_by_label("End", exact=True).fill("03:30")
    page.get_by_label("Service").fill("Cut")
    page.get_by_label("Name", exact=True).fill("Chloé Lefèvre")
    page.get_by_role("button", name="Book").click()
    expect(page.get_by_text("does not work at that time; choose a time within their working hours.")
           ).to_be_visible()
    assert "endpoint" not in page.locator("main").inner_text()

    # No feed link to invite with: the page names the place where one is made.
    tab.open("/")
    links = page.locator("tbody", has_text="Zoë Müller").locator("tr[id^=token-]")
    for left in reversed(range(links.count())):
        links.first.get_by_role("button", name="Revoke").click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke the link").click()
        expect(links).to_have_count(left)
    tab.open(f"/staff/{zoe['id']}/invite")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("Create a link under Calendar sync (New link next to Zoë Müller)")
           ).to_be_visible()
    tab.shot("plain-invite-without-link")
