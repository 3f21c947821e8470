"""Issue 15 in a real browser (Chromium through Playwright, as in tests/system/test_browser.py),
the parts that need every page or a whole flow: every admin and staff page at 390 px without
sideways scrolling, with the whole navigation and its badges; the message after a form shown
beside what was done and on screen; every question asked in a page dialog that names the
consequence; when a booking, a move and a cancellation reach the staff calendar; Sync health,
Conflicts and the Outbox a page at a time. Screenshots at desktop and phone width go to
test-output/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Connection
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.linked_helpers import Linked, at
from tests.mail_helpers import with_mail
from tests.servers import CalDAVServer, CalendarHTTPServer, SmtpSink
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import DESKTOP, PHONE, Page
from tests.system.test_browser_plain_words import WIDE_ELEMENTS, conflict_and_failed_emails
from tests.system.test_browser_staff_pages import HEIGHT, SIDEWAYS, _pages, _self_service, sample_ids

pytestmark = pytest.mark.slow

browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab

SECTIONS = ("Calendar sync", "Staff", "Appointments", "Sync health", "Conflicts", "Outbox", "Settings")
LONG_NAME = "Terminkalender" * 5  # one word, no place to break it
LONG_EMAIL = "bartholomew.featherstonehaugh-cholmondeley@very-long-domain-name.example.com"


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True, smtp_url=smtp_server.url)


def _on_screen(page: Any, locator: Any) -> None:
    """Inside the window: no scrolling needed to read it. Waited for first: a page opened at a
    fragment (…/preview#preview) is scrolled there once it has loaded, which can come after
    the element is already in the page (CI drew that once)."""
    expect(locator).to_be_in_viewport(ratio=1)
    box = locator.bounding_box()
    assert box, locator
    size = page.viewport_size
    assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], (box, size)
    assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (box, size)


def _message_at(page: Any, place: str, text: str) -> None:
    """The message flashed for `place` (web.formatting.flash_at): shown there, focused, on screen,
    and not at the top of the page as well."""
    message = page.locator(f"#{place} [data-flash-here]")
    expect(message).to_contain_text(text)
    expect(message).to_be_focused()
    _on_screen(page, message)
    expect(page.locator(".flashes")).to_have_count(0)


def _fits(page: Any, where: str, problems: list[str]) -> None:
    """Nothing wider than a phone; else what sticks out, to fix."""
    width = page.evaluate(SIDEWAYS)
    if width > PHONE["width"]:
        problems.append(f"{where} is {width} px wide: {page.evaluate(WIDE_ELEMENTS, PHONE['width'])}")


def test_every_page_fits_a_phone_and_its_nav_reaches_every_section(
    tab: Page, browser: Any, live: str, app: Flask, api: Api, radicale: CalDAVServer,  # noqa: F811
    smtp_server: SmtpSink, calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)
    first, _failed = conflict_and_failed_emails(app, linked, smtp_server)
    # What makes pages wide: long names and addresses without a place to break them.
    long_booking = api.book(linked.staff["id"], iso(at(3, 10)), iso(at(3, 11)), service=LONG_NAME,
                            customer={"name": LONG_NAME, "email": LONG_EMAIL})
    assert long_booking.status_code == 201
    long_url = calendar_http.add("/" + "k" * 120 + "/basic.ics", busy_ics(1))
    api.post(f"/staff/{linked.staff['id']}/connections", {"kind": "ics", "url": long_url, "name": LONG_NAME})
    tab.log_in()
    page = tab.page
    paths, unknown = _pages(app, sample_ids(tab, app, linked, long_booking.get_json()["id"]))
    assert not unknown, f"add sample values for these pages' parameters: {unknown}"
    paths += [f"/appointments/{first['id']}", "/outbox?status=failed", "/health?show=errors",
              f"/appointments?staff={linked.staff['id']}"]

    page.set_viewport_size(PHONE)
    problems: list[str] = []
    for path in paths:
        tab.open(path)
        _fits(page, path, problems)
        nav = page.get_by_role("navigation", name="Main")
        for name in SECTIONS:
            _on_screen(page, nav.get_by_role("link", name=re.compile(f"^{name}")))
        expect(nav.get_by_role("link", name=re.compile("^Conflicts")).locator(".nav-count")).to_be_visible()
        expect(nav.get_by_role("link", name=re.compile("^Outbox")).locator(".nav-count")).to_be_visible()

    # The staff list: each calendar with its health, the invitation, two-way sync.
    tab.open("/staff")
    row = page.locator(f"#staff-{linked.staff['id']}")
    calendars = row.locator('[data-field="calendars"] li')
    expect(calendars).to_have_count(2)
    status = '[data-field="status"]'
    expect(calendars.filter(has_text=LONG_NAME).locator(status)).to_have_text("Not synced yet")
    expect(calendars.filter(has_not_text=LONG_NAME).locator(status)).to_have_text("OK")
    expect(row.locator('[data-field="invitation"]')).to_contain_text("Sent")
    expect(row.locator('[data-field="two-way"]')).to_have_text("On")
    tab.shot("issue15-phone-staff-list")

    # Pages as forms leave them: a preview, refused input, an open dialog.
    tab.open(f"/staff/{linked.staff['id']}/invite")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("heading", name="Preview")).to_be_visible()
    _fits(page, "the invitation's preview", problems)
    assert_accessible(page, axe_source)
    tab.shot("issue15-phone-invite-preview")
    tab.open(f"/staff/{linked.staff['id']}")
    page.get_by_text("By its ICS address").click()
    page.get_by_label("Calendar address").fill(calendar_http.base_url + "/" + "gone" * 30 + ".ics")
    page.get_by_role("button", name="Add calendar").click()
    expect(page.locator('[data-field="add-error"]')).to_be_visible()
    _fits(page, "a refused calendar address", problems)
    tab.open(f"/staff/{linked.staff['id']}")
    head = page.locator(".page-head")
    for name in ("Invite to sync", "Appointments", "Book"):
        _on_screen(page, head.get_by_role("link", name=name, exact=True))
    tab.shot("issue15-phone-staff-header", full_page=False)
    page.locator(f"#connection-{linked.connection_id}").get_by_role("button", name="Remove").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    _fits(page, "the Remove dialog", problems)
    _on_screen(page, page.get_by_role("dialog"))
    page.keyboard.press("Escape")
    tab.open("/settings")
    page.get_by_label("Feed refresh interval").fill("1")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#error-feed_refresh_minutes")).to_be_visible()
    _fits(page, "refused settings", problems)

    # The staff member's own page, and a link that no longer works (the calendar pick, the
    # admin's page, is checked in tests/system/test_browser_calendars.py).
    staff_tab = _self_service(tab, browser, live, linked.staff)
    try:
        own = staff_tab.page
        _fits(own, "the self-service page", problems)
        staff_tab.open("/connect/not-a-real-link")
        _fits(own, "a link that no longer works", problems)
        staff_tab.problems.clear()  # the refused link answers 403, which the console reports
    finally:
        staff_tab.close()
    assert not problems, "\n".join(problems)


def test_the_message_after_a_form_is_beside_what_was_done_and_on_screen(
    tab: Page, browser: Any, live: str, app: Flask, api: Api,  # noqa: F811
    calendar_http: CalendarHTTPServer, axe_source: str,  # noqa: F811
) -> None:
    members = [api.make_staff(name=f"Staff member {n:02d}", email=f"s{n}@example.com") for n in range(30)]
    zoe = members[-1]
    for n in range(4):  # a page long enough to scroll
        url = calendar_http.add(f"/c{n}.ics", busy_ics(1))
        api.post(f"/staff/{zoe['id']}/connections", {"kind": "ics", "url": url, "name": f"Calendar {n}"})
    tab.log_in()
    page = tab.page
    page.set_viewport_size(PHONE)

    # A refused address: the page comes back at its form, the error beside the address.
    tab.open(f"/staff/{zoe['id']}")
    page.get_by_text("By its ICS address").click()
    page.get_by_label("Calendar address").fill(calendar_http.base_url + "/gone.ics")
    page.get_by_role("button", name="Add calendar").click()
    _on_screen(page, page.get_by_label("Calendar address"))
    _on_screen(page, page.locator('[data-field="add-error"]'))
    tab.shot("issue15-add-error-in-view-phone", full_page=False)

    # A calendar added: said on its card, which the page scrolls to.
    page.get_by_label("Calendar address").fill(calendar_http.add("/new.ics", busy_ics(2)))
    page.get_by_label("Name (optional)").fill("New one")
    page.get_by_role("button", name="Add calendar").click()
    conn = page.locator("article.conn", has_text="New one")
    place = conn.get_attribute("id")
    _message_at(page, place, "Calendar 'New one' added. 'New one' synced: 2 busy times read.")
    assert_accessible(page, axe_source)
    tab.shot("issue15-message-on-the-card-phone", full_page=False)

    # Saved on its own page, then back on the card.
    conn.get_by_role("link", name="Edit").click()
    page.get_by_label("Name").fill("Renamed")
    page.get_by_role("button", name="Save").click()
    _message_at(page, place, "Calendar 'Renamed' saved.")

    # Removed: asked first, then said above the calendars that are left.
    page.locator(f"#{place}").get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove 'Renamed'").click()
    _message_at(page, "connections", "Calendar 'Renamed' removed")

    # The invitation's preview, shown rather than the top of the page; sent, and revoked: said
    # in the list of invitations.
    tab.open(f"/staff/{zoe['id']}/invite")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator('[data-field="preview-subject"]')).to_be_visible()
    _on_screen(page, page.get_by_role("heading", name="Preview"))
    # By keyboard: headless Chromium can hand a click just after scrolling to the preview's
    # sandboxed frame (a process of its own) instead of the button above it.
    page.get_by_role("button", name="Send invitation").press("Enter")
    page.wait_for_url(re.compile(r".*/staff/\d+#invitations$"))
    _message_at(page, "invitations", f"Invitation to {zoe['email']} written to the outbox")
    tab.shot("issue15-message-invitation-sent-phone", full_page=False)
    page.locator("#invitations").get_by_role("button", name=re.compile("^Revoke")).click()
    page.get_by_role("dialog").get_by_role("button", name="Stop this link").click()
    _message_at(page, "invitations", "has stopped working")

    # A self-service link made: the page shows it, not its top.
    tab.open(f"/staff/{zoe['id']}")
    page.get_by_role("button", name="Create link").click()
    made = page.locator('#connect-link [data-field="link-made"]')
    expect(made).to_be_focused()
    _on_screen(page, made)
    _on_screen(page, page.get_by_label(f"Self-service link of {zoe['name']}"))
    tab.shot("issue15-message-connect-link-phone", full_page=False)

    # A feed link made for someone on the second page of Calendar sync: the page stays there.
    page.set_viewport_size(DESKTOP)
    tab.open("/?staff_page=2")
    owner = page.locator(f"#owner-staff-{zoe['id']}")
    owner.locator("summary", has_text="New link").click()
    owner.get_by_label("Name").fill("Front desk")
    owner.get_by_role("button", name="Create link").click()
    assert "staff_page=2" in page.url
    row = page.locator("tr[id^=token-]", has_text="Front desk")
    _message_at(page, row.get_attribute("id"), "New feed link 'Front desk' created")
    tab.shot("issue15-message-new-feed-link", full_page=False)
    row.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Revoke 'Front desk'? Calendars subscribed with it stop updating.")
    dialog.get_by_role("button", name="Revoke the link").click()
    assert "staff_page=2" in page.url
    _message_at(page, f"owner-staff-{zoe['id']}", "Feed link 'Front desk' revoked")

    # Sync now on Sync health: back on its row.
    page.set_viewport_size(PHONE)
    tab.open("/health")
    health_row = page.locator("tr[id^=connection-]").last
    health_place = health_row.get_attribute("id")
    health_row.get_by_role("button", name="Sync now").click()
    _message_at(page, health_place, "synced")

    # The staff member's own page: the calendar they added, on its card.
    staff_tab = _self_service(tab, browser, live, zoe)
    try:
        own = staff_tab.page
        own.get_by_text("By its ICS address").click()
        own.get_by_label("Calendar address").fill(calendar_http.add("/mine.ics", busy_ics(1)))
        own.get_by_label("Name (optional)").fill("Mine")
        own.get_by_role("button", name="Add calendar").click()
        mine = own.locator("article.conn", has_text="Mine")
        _message_at(own, mine.get_attribute("id"), "Calendar 'Mine' added.")
        assert_accessible(own, axe_source)
        staff_tab.shot("issue15-message-self-service-card-phone", full_page=False)
    finally:
        staff_tab.close()


def test_questions_are_asked_in_a_page_dialog_that_says_what_follows(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)
    tab.log_in()
    page = tab.page

    # Removing a calendar: the page's own dialog, the safe choice focused, Escape keeps it.
    tab.open(f"/staff/{linked.staff['id']}")
    card = page.locator(f"#connection-{linked.connection_id}")
    name = card.locator("h3").inner_text()
    card.get_by_role("button", name="Remove").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_text(re.compile(
        f"Remove the calendar '{re.escape(name)}'\\? Its busy times will no longer block bookings, and "
        "bookings are no longer written into it."))
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    assert_accessible(page, axe_source)
    tab.shot("issue15-dialog-remove-calendar", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    card.get_by_role("button", name="Remove").click()
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert len(_connections(app)) == 1

    # A booking deleted in the staff calendar while it was moved here: keeping the calendar's
    # version cancels it, and the dialog says who is emailed.
    booked = linked.book(at(2, 10))
    linked.sync()
    linked.event(booked["uid"]).delete()
    api.patch(f"/appointments/{booked['id']}", {"start": iso(at(3, 10)), "end": iso(at(3, 11))})
    linked.sync()
    page.set_viewport_size(PHONE)
    tab.open("/conflicts")
    page.get_by_role("button", name="Keep calendar version").click()
    expect(dialog).to_contain_text("Cancel Haircut for Chloé Lefèvre, as it was deleted from the calendar? "
                                   "Chloé Lefèvre is emailed at chloe@example.com that it is cancelled.")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    _on_screen(page, dialog)
    assert page.evaluate(SIDEWAYS) <= PHONE["width"]
    assert_accessible(page, axe_source)
    tab.shot("issue15-dialog-conflict-cancel-phone", full_page=False)
    dialog.get_by_role("button", name="Cancel the booking and email Chloé Lefèvre").click()
    expect(page.get_by_text("Kept the calendar version: the booking is cancelled, as it was deleted from "
                            "the calendar. Chloé Lefèvre is emailed the cancellation.")).to_be_visible()
    assert linked.appointment(booked["id"])["status"] == "cancelled"


def _connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(Connection)))


def _book(tab: Page, staff_id: int, start: str, customer: str) -> None:
    """Book through the admin's form, on day 3, for 45 minutes."""
    tab.open(f"/appointments/new?staff={staff_id}")
    page = tab.page
    page.get_by_label("Date").fill(at(3, 10).strftime("%Y-%m-%d"))
    page.get_by_label("Start").fill(start)
    page.get_by_label("End", exact=True).fill(start[:2] + ":45")
    page.get_by_label("Service").fill("Cut")
    page.get_by_label("Name", exact=True).fill(customer)
    page.get_by_role("button", name="Book").click()


def test_each_change_says_when_it_reaches_the_staff_calendar(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)
    api.patch(f"/connections/{linked.connection_id}", {"sync_mode": "realtime"})
    no_calendar = api.make_staff(name="Ana Ortega", email="ana@example.com", timezone="UTC",
                                 working_hours={d: [["09:00", "17:00"]] for d in
                                                ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})
    tab.log_in()
    page = tab.page
    # Realtime: written at once.
    _book(tab, linked.staff["id"], "10:00", "Chloé Lefèvre")
    expect(page.locator(".flash")).to_contain_text(
        f"Booked Cut for Chloé Lefèvre. It is written to {linked.staff['name']}’s calendar ‘")
    expect(page.locator(".flash")).to_contain_text("’ at once (within a minute).")
    tab.shot("issue15-reach-at-once", full_page=False)
    # The background push has run by the time the page is read again: said as done.
    linked.sync()
    page.reload()
    expect(page.locator('#staff-calendar [data-field="copy"]')).to_have_attribute("data-state", "written")
    # Moved: the new time, at once; cancelled: taken out, at once.
    page.get_by_label("Start").fill("14:00")
    page.get_by_label("End", exact=True).fill("14:45")
    page.get_by_role("button", name="Move appointment").click()
    expect(page.locator(".flash")).to_contain_text(
        f"Appointment moved. The new time is written to {linked.staff['name']}’s calendar")
    expect(page.locator(".flash")).to_contain_text("at once (within a minute).")
    page.get_by_role("button", name="Cancel appointment…").click()
    page.get_by_role("dialog").get_by_role("button", name=re.compile("^Cancel the appointment")).click()
    expect(page.locator(".flash")).to_contain_text(
        f"It is taken out of {linked.staff['name']}’s calendar")

    # Only with Sync now: said so.
    api.patch(f"/connections/{linked.connection_id}", {"sync_mode": "manual"})
    _book(tab, linked.staff["id"], "11:00", "Léa Martin")
    expect(page.locator(".flash")).to_contain_text("when someone presses Sync now for this calendar.")

    # No calendar bookings are written to: when the feed shows it.
    _book(tab, no_calendar["id"], "10:00", "Noé Petit")
    expect(page.locator(".flash")).to_contain_text(
        "Ana Ortega has no calendar that bookings are written to; their feed shows it when their "
        "calendar app next refreshes it.")
    assert_accessible(page, axe_source)
    page.set_viewport_size(PHONE)
    assert page.evaluate(SIDEWAYS) <= PHONE["width"]
    tab.shot("issue15-reach-feed-only-phone", full_page=False)


def test_health_conflicts_and_outbox_stay_a_few_screens_tall(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, calendar_http: CalendarHTTPServer,  # noqa: F811
    axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)
    booked = [linked.book(at(day, hour)) for hour in (10, 12) for day in range(1, 31)]  # 60 emails
    linked.sync()
    for day in range(1, 13):  # twelve moves onto another booking: twelve conflicts
        linked.move_in_calendar(booked[day - 1]["uid"], at(day, 12, 30))
    linked.sync()
    for n in range(60):
        body = {"kind": "ics", "url": f"{calendar_http.base_url}/gone-{n}.ics", "name": f"Calendar {n:02d}"}
        api.post(f"/staff/{linked.staff['id']}/connections", json=body)
    tab.log_in()
    page = tab.page
    too_tall: dict[str, int] = {}
    for viewport, limit in ((DESKTOP, 6000), (PHONE, 10000)):
        page.set_viewport_size(viewport)
        for path in ("/health", "/conflicts", "/outbox"):
            tab.open(path)
            if (height := page.evaluate(HEIGHT)) > limit:
                too_tall[f"{path} at {viewport['width']} px"] = height
            assert page.evaluate(SIDEWAYS) <= viewport["width"], path
    assert not too_tall, too_tall

    tab.open("/health")
    rows = page.locator("tr[id^=connection-]")
    expect(rows).to_have_count(25)
    expect(page.locator(".pager")).to_contain_text("Page 1 of 3")  # 61 calendars
    page.get_by_role("link", name="Next ›").click()
    page.get_by_role("link", name="Next ›").click()
    expect(rows).to_have_count(11)
    assert_accessible(page, axe_source)
    tab.shot("issue15-health-page-3-phone", full_page=False)

    tab.open("/conflicts")
    expect(page.locator("#open-title .count-pill")).to_have_text("12")
    expect(page.locator("article.conflict")).to_have_count(10)
    page.get_by_role("link", name="Next ›").click()
    expect(page.locator("article.conflict")).to_have_count(2)
    # Deciding one on the second page comes back to the second page.
    page.locator("article.conflict").first.get_by_role("button", name="Keep platform version").click()
    assert "page=2" in page.url
    expect(page.get_by_text("Kept the platform version")).to_be_visible()
    expect(page.locator("article.conflict")).to_have_count(1)
    tab.shot("issue15-conflicts-page-2-phone")

    tab.open("/outbox")
    expect(page.locator("tr[id^=email-]")).to_have_count(25)
    expect(page.locator(".pager")).to_contain_text(re.compile(r"Page 1 of [34]"))  # 60 bookings, 12 conflicts
    page.get_by_role("link", name="Older ›").click()
    expect(page.locator(".pager")).to_contain_text("Page 2 of")
