"""The web pages in a real browser: Playwright driving Debian's Chromium against the app served by
waitress on a loopback port. Log in, flip a toggle, add a calendar and Sync now without a reload,
open a staff connect link and connect a CalDAV calendar; a screenshot of each main page goes to
test-output/screenshots/ (git-ignored) for a human to look at.

Chromium missing: skipped on a developer machine, a failure in CI (CI or CALSYNC_CI set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.bench.served_wsgi import ServedWSGI
from calsync.feeds.company_settings import CompanySettings
from calsync.feeds.settings import Settings
from calsync.models import Company, Connection
from tests.admin_helpers import ADMIN_EMAIL, ADMIN_PASSWORD, busy_ics, make_admin
from tests.conftest import Api
from tests.servers import CalDAVServer, CalendarHTTPServer

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests."
    if os.environ.get("CI") or os.environ.get("CALSYNC_CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=10_000)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    """The app on a loopback port, served by waitress in a thread."""
    server = ServedWSGI(app)
    yield server.url
    server.close()


class Page:
    """A browser tab that fails the test on a script error, a CSP violation or a native dialog box."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int] = DESKTOP, **context: Any) -> None:
        self.context = browser.new_context(viewport=viewport, locale="en-GB", timezone_id="Europe/Berlin",
                                           **context)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(str(exc)))
        # Every question is asked in a page dialog (issue 15), never in the browser's own box.
        self.page.on("dialog", self._native_dialog)

    def _console(self, message: Any) -> None:
        # A 4xx answer is a page like any other here (a refused form); CSP violations
        # ("Refused to ...") and script errors are what must not happen.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def _native_dialog(self, dialog: Any) -> None:
        self.problems.append(f"the browser's own {dialog.type} box: {dialog.message}")
        dialog.dismiss()

    def open(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def shot(self, name: str, full_page: bool = True) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)

    def log_in(self) -> None:
        self.open("/")
        assert self.page.url.startswith(self.base + "/login")
        self.page.get_by_label("Email").fill(ADMIN_EMAIL)
        self.page.get_by_label("Password").fill(ADMIN_PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(self.base + "/")

    def close(self) -> None:
        assert self.problems == [], self.problems
        self.context.close()


@pytest.fixture
def tab(browser: Any, live: str, app: Flask) -> Iterator[Page]:
    make_admin(app)
    page = Page(browser, live)
    yield page
    page.close()


def company_settings(app: Flask) -> CompanySettings:
    with app.extensions["calsync"].sessions() as session:
        company = session.scalars(select(Company)).first()
        assert company is not None
        return CompanySettings.model_validate(company.settings or {})


def test_log_in_flip_a_toggle_and_see_it_persist(tab: Page, app: Flask, api: Api) -> None:
    api.make_staff()
    api.post("/groups", {"name": "Colour team", "staff_ids": [1]})
    tab.open("/")
    tab.shot("01-login", full_page=False)
    # The login form starts in the email field.
    assert tab.page.evaluate("document.activeElement.id") == "email"
    tab.log_in()
    page = tab.page
    # Keyboard users meet the skip link first, then the main navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Calendar sync"
    expect(page.get_by_role("heading", name="Calendar sync", level=1)).to_be_visible()
    tab.shot("02-calendar-sync")
    # The settings have a page of their own, in the main navigation.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    # The bidirectional toggle when the two-way engine has added it, else another on/off one.
    name = "bidirectional_sync" if "bidirectional_sync" in CompanySettings.model_fields else "show_cancelled"
    toggle = page.locator(f"#set-{name}")
    assert not toggle.is_checked()
    toggle.check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible()
    page.reload()
    assert page.locator(f"#set-{name}").is_checked()
    assert getattr(company_settings(app), name) is True
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Calendar sync").click()
    # The copy button puts the feed URL on the clipboard (each link's address is folded away).
    page.get_by_text("Link and subscribe buttons").first.click()
    first_url = page.locator("input.url").first
    page.get_by_role("button", name="Copy").first.click()
    expect(page.get_by_role("button", name="Copied").first).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == first_url.input_value()
    # Phone-sized.
    page.set_viewport_size(PHONE)
    page.reload()
    tab.shot("03-calendar-sync-phone")


def test_add_an_ics_calendar_and_sync_it_without_a_reload(tab: Page, api: Api, app: Flask,
                                                         calendar_http: CalendarHTTPServer) -> None:
    staff = api.make_staff()
    url = calendar_http.add("/private/basic.ics", busy_ics(3))
    tab.log_in()
    page = tab.page
    page.get_by_role("link", name="Zoë Müller").first.click()
    page.get_by_text("By its ICS address").click()
    page.get_by_label("Calendar address").fill(url)
    page.get_by_label("Name (optional)").first.fill("Personal")
    page.get_by_role("button", name="Add calendar").click()
    card = page.locator("article.conn", has_text="Personal")
    # Read once when it was added, and synced at once (issue 15): no "not synced yet" card.
    assert card.locator('[data-field="status"]').inner_text() == "OK"
    assert card.locator('[data-field="busy-count"]').inner_text() == "3"
    calendar_http.add("/private/basic.ics", busy_ics(4))
    page.evaluate("window.notReloaded = true")
    card.get_by_role("button", name="Sync now").click()
    card.locator('[data-field="busy-count"]', has_text="4").wait_for()
    assert card.locator('[data-field="last-sync"]').inner_text() == "just now"
    assert card.locator('[data-field="status"]').inner_text() == "OK"
    assert "synced: 4 busy times read" in card.locator('[data-field="result"]').inner_text()
    assert page.evaluate("window.notReloaded") is True  # updated in place
    expect(page.locator("#live")).to_have_text("'Personal' synced: 4 busy times read.")
    page.reload()
    card = page.locator("article.conn", has_text="Personal")
    assert card.locator('[data-field="busy-count"]').inner_text() == "4"
    tab.shot("04-staff-member")
    page.set_viewport_size(PHONE)
    tab.shot("05-staff-member-phone")
    with app.extensions["calsync"].sessions() as session:
        [conn] = session.scalars(select(Connection)).all()
        assert (conn.staff_id, conn.status, conn.busy_count) == (staff["id"], "ok", 4)


def test_a_staff_member_opens_the_connect_link_and_connects_a_calendar(
    tab: Page, browser: Any, live: str, api: Api, app: Flask, radicale: CalDAVServer,
) -> None:
    staff = api.make_staff()
    radicale.calendar("work", "Work Zoë")
    radicale.calendar("private", "Private")
    tab.log_in()
    tab.open(f"/staff/{staff['id']}")
    tab.page.get_by_role("button", name="Create link").click()
    link = tab.page.get_by_label("Self-service link of Zoë Müller").input_value()
    path = re.sub(r"^https?://[^/]+", "", link)
    assert path.startswith("/connect/")

    staff_tab = Page(browser, live)  # another browser, no admin session
    try:
        page = staff_tab.page
        staff_tab.open(path)
        page.wait_for_url(live + "/connect/")
        expect(page.get_by_role("heading", name="Hello, Zoë Müller")).to_be_visible()
        expect(page.get_by_role("link", name="Apple Calendar")).to_be_visible()
        assert page.get_by_role("navigation", name="Main").count() == 0
        staff_tab.shot("06-self-service")
        page.get_by_text("From a CalDAV server").click()
        page.get_by_label("Server address").fill(radicale.base_url + "/")
        page.get_by_label("User name").fill(radicale.username)
        page.get_by_label("Password").fill(radicale.password)
        page.get_by_role("button", name="Look up calendars").click()
        expect(page.get_by_role("heading", name="Choose calendars")).to_be_visible()
        staff_tab.shot("07-choose-calendars")
        page.get_by_label("Work Zoë: busy time").check()
        page.get_by_label("Work Zoë: linked").check()
        page.get_by_role("button", name="Connect chosen calendars").click()
        page.wait_for_url(re.compile(r".*/connect/#connections$"))
        card = page.locator("article.conn", has_text="Work Zoë")
        assert card.locator('[data-field="status"]').inner_text() == "OK"  # synced once connected
        card.get_by_role("button", name="Sync now").click()
        card.locator('[data-field="status"]', has_text="OK").wait_for()
        assert card.locator('[data-field="last-sync"]').inner_text() == "just now"
        staff_tab.shot("08-self-service-connected")
        page.set_viewport_size(PHONE)
        staff_tab.shot("09-self-service-phone")
    finally:
        staff_tab.close()
    with app.extensions["calsync"].sessions() as session:
        [conn] = session.scalars(select(Connection)).all()
        assert (conn.staff_id, conn.kind, conn.roles) == (staff["id"], "caldav", ["conflict", "linked"])


def test_health_and_appointment_pages(tab: Page, api: Api, app: Flask,
                                      calendar_http: CalendarHTTPServer) -> None:
    zoe = api.make_staff()
    api.make_staff(name="Ana Ortega", email="ana@example.com")
    ok = calendar_http.add("/ok.ics", busy_ics(2))
    for name, url in (("Personal", ok), ("Old work calendar", calendar_http.base_url + "/gone.ics")):
        api.post(f"/staff/{zoe['id']}/connections", {"kind": "ics", "url": url, "name": name})
    for conn_id in (1, 2, 2, 2):
        api.post(f"/connections/{conn_id}/sync")
    tab.log_in()
    page = tab.page
    page.get_by_role("link", name="Sync health").click()
    expect(page.get_by_text("has failed to sync 3 times in a row")).to_be_visible()
    tab.shot("10-sync-health")
    page.get_by_role("link", name="Failing 1").click()
    assert page.locator(".cell-title").all_inner_texts() == ["Old work calendar"]
    page.get_by_role("button", name="Sync all now").click()
    expect(page.get_by_text("2 calendars queued")).to_be_visible()

    page.get_by_role("link", name="Appointments").click()
    page.get_by_role("link", name="New appointment").click()
    # Zoë has a calendar that never synced, so she cannot be booked: the page says so.
    page.get_by_label("Staff member").select_option(label="Zoë Müller (Europe/Berlin)")
    page.get_by_label("Date").fill("2030-01-07")  # a Monday
    page.get_by_label("Start").fill("10:00")
    page.get_by_label("End", exact=True).fill("10:45")
    page.get_by_label("Service").fill("Colour & style")
    page.get_by_label("Name", exact=True).fill("Chloé Lefèvre")
    page.get_by_role("button", name="Book").click()
    expect(page.get_by_text("Zoë Müller can't be booked: the calendar 'Old work calendar' has not "
                            "synced since it was added")).to_be_visible()
    assert page.get_by_label("Service").input_value() == "Colour & style"
    page.get_by_label("Staff member").select_option(label="Ana Ortega (Europe/Berlin)")
    tab.shot("11-new-appointment")
    page.get_by_role("button", name="Book").click()
    expect(page.get_by_text("Booked Colour & style for Chloé Lefèvre.")).to_be_visible()
    page.get_by_label("Start").fill("14:00")
    page.get_by_label("End", exact=True).fill("14:45")
    page.get_by_role("button", name="Move appointment").click()
    expect(page.get_by_text("Moved by an admin from")).to_be_visible()
    tab.shot("12-appointment")
    page.get_by_role("link", name="Appointments").first.click()
    page.get_by_label("From").fill("2030-01-01")
    page.get_by_label("To").fill("2030-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("Chloé Lefèvre")).to_be_visible()
    tab.shot("13-appointments")
