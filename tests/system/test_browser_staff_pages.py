"""Issue 15, in a real browser (Chromium through Playwright, as in tests/system/test_browser.py):
the self-service page's privacy sentences and the staff member's two-way opt-out (which two-way
sync honours), where a booking has reached (staff calendar, customer email), cancelling in a page
dialog, the settings page with its confirmation beside the Save button, working hours that keep
what was typed, the /staff list, pages that stay short with many rows, and axe-core on every
admin and staff page. Screenshots at desktop and phone width go to test-output/screenshots/."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Invitation, Staff
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.linked_helpers import WEEK_NINE_TO_FIVE, Linked, at
from tests.mail_helpers import deliver, with_mail
from tests.servers import CalDAVServer, SmtpSink
from tests.system import test_browser
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import DESKTOP, PHONE, Page, company_settings
from tests.system.test_browser_plain_words import WIDE_ELEMENTS, conflict_and_failed_emails

pytestmark = pytest.mark.slow

browser = test_browser.browser  # noqa: F811 - the fixtures of tests/system/test_browser.py
live = test_browser.live
tab = test_browser.tab

SIDEWAYS = "document.scrollingElement.scrollWidth"
HEIGHT = "document.scrollingElement.scrollHeight"


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True, smtp_url=smtp_server.url)


def _self_service(tab: Page, browser: Any, live: str, staff: dict[str, Any],  # noqa: F811
                  viewport: dict[str, int] = PHONE) -> Page:
    """The staff member's own page, opened through a connect link the admin made."""
    tab.open(f"/staff/{staff['id']}")
    tab.page.get_by_role("button", name="Create link").click()
    link = tab.page.get_by_label(f"Self-service link of {staff['name']}").input_value()
    staff_tab = Page(browser, live, viewport)  # another browser: no admin session
    staff_tab.open(re.sub(r"^https?://[^/]+", "", link))
    return staff_tab


def _start(appointment: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(appointment["start"]).astimezone(UTC)


def test_self_service_privacy_is_true_per_role_and_staff_can_opt_out_of_two_way(
    tab: Page, browser: Any, live: str, app: Flask, api: Api, radicale: CalDAVServer,  # noqa: F811
    axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)  # two-way on; the calendar "work" is linked
    booked = linked.book(at(2, 10))
    linked.sync()  # the booking is in the calendar
    tab.log_in()
    staff_tab = _self_service(tab, browser, live, linked.staff)
    try:
        page = staff_tab.page
        work = page.locator("article.conn h3").first.inner_text()
        privacy = page.locator('[data-field="privacy"]')
        expect(privacy).to_contain_text("the titles, places and notes of your events are never stored")
        expect(privacy).to_contain_text(f"‘{work}’ receives each of your bookings with the customer’s "
                                        "name, email address, phone number and any notes")
        expect(privacy).to_contain_text("Moving or deleting a booking there moves or cancels it, and the "
                                        "customer is emailed")
        expect(page.locator('#two-way [data-field="two-way-state"]')).to_contain_text("Two-way sync is on")
        assert page.evaluate(SIDEWAYS) <= PHONE["width"], page.evaluate(WIDE_ELEMENTS, PHONE["width"])
        assert_accessible(page, axe_source)
        staff_tab.shot("issue15-self-service-two-way-on-phone")

        page.get_by_role("button", name="Don’t let my calendar change bookings").click()
        confirmation = page.locator("#two-way [data-flash-here]")
        expect(confirmation).to_contain_text("Two-way sync is off for you")
        expect(confirmation).to_be_focused()  # read out, and where the person is looking
        expect(privacy).to_contain_text("Moving or deleting a booking there does not change it: it is put "
                                        "back as booked")
        expect(page.get_by_role("button", name="Let my calendar change bookings again")).to_be_visible()
        assert_accessible(page, axe_source)
        staff_tab.shot("issue15-self-service-opted-out-phone")
        page.set_viewport_size(DESKTOP)
        assert_accessible(page, axe_source)
        staff_tab.shot("issue15-self-service-opted-out")

        # The admin sees who opted out: on the staff page and in the staff list.
        admin = tab.page
        admin.reload()
        expect(admin.locator('[data-field="two-way-state"]')).to_contain_text(
            f"{linked.staff['name']} opted out of two-way sync")
        card = admin.locator("article.conn").first
        expect(card.locator('[data-field="does"]')).not_to_contain_text("Two-way")
        admin.get_by_role("navigation", name="Main").get_by_role("link", name="Staff").click()
        row = admin.locator(f"#staff-{linked.staff['id']}")
        expect(row.locator('[data-field="two-way"]')).to_contain_text("Opted out")
        tab.shot("issue15-staff-list-opted-out")

        # Two-way sync honours it: a move in the calendar is put back, the booking stays.
        linked.move_in_calendar(booked["uid"], at(2, 14))
        linked.sync()
        linked.sync()
        assert _start(linked.appointment(booked["id"])) == at(2, 10)
        assert linked.event_times(booked["uid"])[0] == at(2, 10)

        # Back in: the calendar's moves change bookings again.
        page.get_by_role("button", name="Let my calendar change bookings again").click()
        expect(page.locator("#two-way [data-flash-here]")).to_contain_text("Two-way sync is on for you")
        linked.move_in_calendar(booked["uid"], at(2, 14))
        linked.sync()
        assert _start(linked.appointment(booked["id"])) == at(2, 14)
    finally:
        staff_tab.close()
    admin.reload()
    expect(admin.locator(f"#staff-{linked.staff['id']}").locator('[data-field="two-way"]')).to_have_text("On")


def test_the_appointment_page_says_where_the_booking_is_and_cancelling_asks_in_a_page_dialog(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)  # the calendar is written at each sync (interval mode)
    tab.log_in()
    page = tab.page
    day = at(3, 10)
    tab.open(f"/appointments/new?staff={linked.staff['id']}")
    page.get_by_label("Date").fill(day.strftime("%Y-%m-%d"))
    page.get_by_label("Start").fill("10:00")
    page.get_by_label("End", exact=True).fill("11:00")
    page.get_by_label("Service").fill("Cut")
    page.get_by_label("Name", exact=True).fill("Chloé Lefèvre")
    page.get_by_label("Email (optional)").fill("chloe@example.com")
    page.get_by_role("button", name="Book").click()
    # When it reaches the staff calendar: at the calendar's next sync, and when that is.
    expect(page.get_by_text(re.compile(r"It is written to .+’s calendar|It is written to .+'s calendar"))
           ).to_contain_text("at its next sync, about")
    copy = page.locator('#staff-calendar [data-field="copy"]')
    expect(copy).to_have_attribute("data-state", "waiting")
    expect(copy).to_contain_text("Waiting")
    email = page.locator('#customer-email [data-field="email"]')
    expect(email).to_have_attribute("data-state", "waiting")
    expect(email).to_contain_text("Booking confirmation")
    main = page.locator("main").inner_text()
    assert "UID" not in main and "sequence" not in main.lower()
    tab.shot("issue15-appointment-waiting")

    linked.sync()
    assert deliver(app).sent >= 1
    page.reload()
    expect(copy).to_have_attribute("data-state", "written")
    expect(copy).to_contain_text("Up to date since")
    expect(email).to_have_attribute("data-state", "sent")
    expect(email).to_contain_text("Sent just now to chloe@example.com")
    assert_accessible(page, axe_source)
    tab.shot("issue15-appointment-written")

    # Cancel: a page dialog (not the browser's box) that says the customer will be emailed.
    page.get_by_role("button", name="Cancel appointment…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Chloé Lefèvre is emailed at chloe@example.com that it is cancelled")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    assert_accessible(page, axe_source)
    tab.shot("issue15-cancel-dialog", full_page=False)
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert linked.appointment(int(page.url.rsplit("/", 1)[1]))["status"] == "confirmed"

    page.set_viewport_size(PHONE)
    page.get_by_role("button", name="Cancel appointment…").click()
    expect(dialog).to_be_visible()
    assert page.evaluate(SIDEWAYS) <= PHONE["width"]
    tab.shot("issue15-cancel-dialog-phone", full_page=False)
    dialog.get_by_role("button", name="Cancel the appointment and email Chloé Lefèvre").click()
    expect(page.get_by_text("Appointment cancelled. Chloé Lefèvre is emailed at chloe@example.com.")
           ).to_be_visible()
    assert linked.appointment(int(page.url.rsplit("/", 1)[1]))["status"] == "cancelled"
    expect(copy).to_have_attribute("data-state", "waiting")  # the calendar is updated at its next sync
    cancellation = page.locator('#customer-email [data-field="email"]', has_text="Cancellation")
    expect(cancellation).to_have_attribute("data-state", "waiting")
    tab.shot("issue15-appointment-cancelled-phone")


def test_settings_have_their_own_page_and_say_saved_beside_the_button(tab: Page, app: Flask) -> None:
    tab.log_in()
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    assert "Settings" not in page.locator("#feeds-staff").all_inner_texts()  # no longer under the feeds
    # A value the server refuses: the page comes back with what was typed beside the error.
    page.get_by_label("Feed refresh interval").fill("2")
    page.locator("#set-show_cancelled").check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#error-feed_refresh_minutes")).to_have_text("Enter 5 or more.")
    expect(page.get_by_label("Feed refresh interval")).to_have_value("2")
    expect(page.locator("#set-show_cancelled")).to_be_checked()
    expect(page.locator("#settings-problems")).to_be_focused()
    assert company_settings(app).show_cancelled is False  # nothing half-saved
    tab.shot("issue15-settings-refused")

    page.get_by_label("Feed refresh interval").fill("30")
    button = page.get_by_role("button", name="Save settings")
    button.click()
    saved = page.locator("#settings-saved [data-flash-here]")
    expect(saved).to_contain_text("Settings saved")
    expect(saved).to_be_focused()
    _beside_and_in_view(page, saved, page.get_by_role("button", name="Save settings"), DESKTOP)
    assert (company_settings(app).feed_refresh_minutes, company_settings(app).show_cancelled) == (30, True)
    tab.shot("issue15-settings-saved", full_page=False)

    page.set_viewport_size(PHONE)
    page.get_by_role("button", name="Save settings").click()
    expect(saved).to_be_focused()
    _beside_and_in_view(page, saved, page.get_by_role("button", name="Save settings"), PHONE)
    assert page.evaluate(SIDEWAYS) <= PHONE["width"]
    tab.shot("issue15-settings-saved-phone", full_page=False)


def _beside_and_in_view(page: Any, message: Any, button: Any, viewport: dict[str, int]) -> None:
    """The confirmation is on screen, next to the button that was pressed."""
    box, near = message.bounding_box(), button.bounding_box()
    assert box and near
    scroll = page.evaluate("window.scrollY")
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (box, scroll)
    assert abs((box["y"] + box["height"] / 2) - (near["y"] + near["height"] / 2)) < 120, (box, near)


def test_invalid_working_hours_keep_what_was_typed_beside_the_error(tab: Page, api: Api) -> None:
    zoe = api.make_staff()
    tab.log_in()
    page = tab.page
    tab.open(f"/staff/{zoe['id']}")
    page.get_by_label("Monday").fill("09:00-25:00")
    page.get_by_label("Tuesday").fill("10:00–12:00, 11:00–13:00")
    page.get_by_label("Wednesday").fill("08:00-12:00")
    page.get_by_role("button", name="Save hours").click()
    expect(page.locator("#hours-mon-error")).to_contain_text("is not a time of day")
    expect(page.locator("#hours-tue-error")).to_contain_text("overlaps")
    expect(page.get_by_label("Monday")).to_have_value("09:00-25:00")
    expect(page.get_by_label("Tuesday")).to_have_value("10:00–12:00, 11:00–13:00")
    expect(page.get_by_label("Wednesday")).to_have_value("08:00-12:00")
    expect(page.get_by_label("Monday")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#hours [data-flash-here]")).to_be_focused()
    tab.shot("issue15-hours-refused")
    page.set_viewport_size(PHONE)
    assert page.evaluate(SIDEWAYS) <= PHONE["width"]
    page.locator("#hours").scroll_into_view_if_needed()
    tab.shot("issue15-hours-refused-phone", full_page=False)
    page.get_by_label("Monday").fill("09:00-17:00")
    page.get_by_label("Tuesday").fill("10:00–12:00")
    page.get_by_role("button", name="Save hours").click()
    saved = page.locator("#hours-saved [data-flash-here]")
    expect(saved).to_have_text("Working hours saved.")
    expect(saved).to_be_focused()
    _beside_and_in_view(page, saved, page.get_by_role("button", name="Save hours"), PHONE)
    assert api.get(f"/staff/{zoe['id']}").get_json()["working_hours"]["wed"] == [["08:00", "12:00"]]


def test_the_staff_list_and_long_lists_stay_a_few_screens_tall(
    tab: Page, app: Flask, api: Api, axe_source: str,  # noqa: F811
) -> None:
    members = [api.make_staff(name=f"Staff member {n:02d}", email=f"s{n}@example.com", timezone="UTC",
                              working_hours=WEEK_NINE_TO_FIVE) for n in range(60)]
    busy = members[0]
    for day in range(1, 16):
        for hour in range(9, 17):
            resp = api.book(busy["id"], iso(at(day, hour)), iso(at(day, hour, 45)))
            assert resp.status_code == 201, resp.get_json()
    with app.extensions["calsync"].sessions.begin() as s:
        s.scalars(select(Staff).where(Staff.id == members[1]["id"])).one().bidirectional_opt_out = True
    tab.log_in()
    page = tab.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Staff").click()
    rows = page.locator("tr[id^=staff-]")
    expect(rows).to_have_count(25)
    first = page.locator(f"#staff-{members[0]['id']}")
    expect(first.locator('[data-field="feed"]')).to_contain_text("1 link")
    expect(first.locator('[data-field="calendars"]')).to_have_text("None connected")
    expect(first.locator('[data-field="invitation"]')).to_contain_text("Not invited")
    expect(page.locator(f"#staff-{members[1]['id']}").locator('[data-field="two-way"]')
           ).to_contain_text("Opted out")
    text = page.locator("main").inner_text()
    assert not re.search(r"\b1 (links|days|hours|minutes|attempts|feeds)\b", text)
    assert_accessible(page, axe_source)
    tab.shot("issue15-staff-list")
    expect(page.locator(".pager")).to_contain_text("Page 1 of 3")
    page.get_by_role("link", name="Next ›").click()
    expect(rows).to_have_count(25)
    page.get_by_role("link", name="Next ›").click()
    expect(rows).to_have_count(10)

    # The issue saw a 13,000 px page; a page of any list now stays a few screens tall.
    too_tall: dict[str, int] = {}
    for viewport, limit in ((DESKTOP, 6000), (PHONE, 10000)):
        page.set_viewport_size(viewport)
        for path in ("/", "/staff", "/appointments", f"/appointments?staff={busy['id']}"):
            tab.open(path)
            height = page.evaluate(HEIGHT)
            if height > limit:
                too_tall[f"{path} at {viewport['width']} px"] = height
            assert page.evaluate(SIDEWAYS) <= viewport["width"], path
    assert not too_tall, too_tall
    tab.open("/appointments")
    expect(page.locator("main tbody tr")).to_have_count(50)
    page.get_by_role("link", name="Later ›").click()
    expect(page.locator("main tbody tr")).to_have_count(50)
    page.get_by_role("link", name="Later ›").click()
    expect(page.locator("main tbody tr")).to_have_count(20)  # 120 in all
    tab.shot("issue15-appointments-page-3-phone")
    tab.open("/")
    expect(page.locator("#feeds-staff tr.owner")).to_have_count(25)
    expect(page.locator("#feeds-staff .card-head")).to_contain_text("60 staff members, page 1 of 3")
    tab.shot("issue15-calendar-sync-paged-phone", full_page=False)


# Sample ids for the admin pages' address parameters; a page with a parameter not named here
# fails the test below, so a new page cannot skip the accessibility check.
def _pages(app: Flask, ids: dict[str, Any]) -> tuple[list[str], list[str]]:
    paths, unknown = [], []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or not rule.endpoint.startswith("admin."):
            continue
        if rule.endpoint in ("admin.logout",):
            continue
        missing = [a for a in rule.arguments if a not in ids]
        if missing:
            unknown.append(f"{rule.rule} (needs {', '.join(missing)})")
            continue
        paths.append(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(ids[m.group(1)]), rule.rule))
    return sorted(set(paths)), unknown


def sample_ids(tab: Page, app: Flask, linked: Linked, appointment_id: int) -> dict[str, Any]:
    """Values for the admin pages' address parameters (_pages), an invitation sent for them."""
    tab.open(f"/staff/{linked.staff['id']}/invite")
    tab.page.get_by_role("button", name="Send invitation").click()
    with app.extensions["calsync"].sessions() as s:
        invitation = s.scalar(select(Invitation.id))
    return {"staff_id": linked.staff["id"], "connection_id": linked.connection_id,
            "appointment_id": appointment_id, "invitation_id": invitation, "email_id": 1, "conflict_id": 1,
            "provider": "google"}


def test_every_admin_and_staff_page_has_no_accessibility_violations(
    tab: Page, browser: Any, live: str, app: Flask, api: Api, radicale: CalDAVServer,  # noqa: F811
    smtp_server: SmtpSink, axe_source: str,  # noqa: F811
) -> None:
    linked = Linked(app, api, radicale)
    first, _failed = conflict_and_failed_emails(app, linked, smtp_server)
    # The login page and an unknown page, logged out.
    tab.open("/login")
    assert_accessible(tab.page, axe_source)
    tab.log_in()
    page = tab.page
    ids = sample_ids(tab, app, linked, first["id"])
    paths, unknown = _pages(app, ids)
    assert not unknown, f"add sample values for these pages' parameters: {unknown}"
    extra = ["/outbox?status=failed", "/health?status=error", "/appointments?staff=1", "/no-such-page"]
    checked: list[str] = []
    for path in [*paths, *extra]:
        for viewport in (DESKTOP, PHONE):
            page.set_viewport_size(viewport)
            tab.open(path)
            assert_accessible(page, axe_source)
            checked.append(path)
    assert {"/", "/staff", "/settings", "/outbox", "/conflicts", "/health", "/appointments"} <= set(checked)
    # Pages reached by a form: a refused Save, an open dialog.
    page.set_viewport_size(DESKTOP)
    tab.open("/settings")
    page.get_by_label("Feed refresh interval").fill("1")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#error-feed_refresh_minutes")).to_be_visible()
    assert_accessible(page, axe_source)
    tab.open(f"/staff/{linked.staff['id']}")
    page.get_by_label("Monday").fill("nine to five")
    page.get_by_role("button", name="Save hours").click()
    expect(page.locator("#hours-mon-error")).to_be_visible()
    assert_accessible(page, axe_source)
    # The staff member's pages: their own page, and the page for a link that no longer works.
    staff_tab = _self_service(tab, browser, live, linked.staff, DESKTOP)
    try:
        assert_accessible(staff_tab.page, axe_source)
        staff_tab.page.set_viewport_size(PHONE)
        assert_accessible(staff_tab.page, axe_source)
        staff_tab.open("/connect/not-a-real-link")
        assert_accessible(staff_tab.page, axe_source)
        staff_tab.problems.clear()  # the refused link answers 403, which the console reports
    finally:
        staff_tab.close()
