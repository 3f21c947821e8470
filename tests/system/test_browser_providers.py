""""Connect Google Calendar" and "Connect Outlook / Microsoft 365" in a real browser (Playwright
driving Debian's Chromium, like tests/system/test_browser.py): a staff member on the
self-service page clicks the button, allows access on the contract fake's consent / sign-in
page, picks roles for the account's calendars back on calsync and syncs. The pages pass
axe-core; screenshots go to test-output/screenshots/ (30-3x: Google, 35-3x: Microsoft).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.onboarding.connect_links import connect_sealer, make_connect_token
from calsync.feeds.settings import Settings
from calsync.models import Connection, Staff
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake, serve_google_fake
from tests.fakes.microsoft_graph import ServedGraph, serve_graph_fake
from tests.provider_helpers import with_google, with_microsoft
from tests.system.axe import assert_accessible, axe_source  # noqa: F401 - axe_source is a fixture
from tests.system.test_browser import Page, browser, live  # noqa: F401 - the browser fixtures

pytestmark = pytest.mark.slow


@pytest.fixture
def google() -> Iterator[ServedFake]:
    with serve_google_fake() as served:
        served.fake.consent_screen = True  # a page to click, as Google shows one
        served.fake.add_calendar("team@group.calendar.google.com", "Team rota", access_role="reader")
        yield served


@pytest.fixture
def graph() -> Iterator[ServedGraph]:
    with serve_graph_fake() as served:
        served.fake.sign_in_screen = True
        yield served


@pytest.fixture
def settings(settings: Settings, google: ServedFake, graph: ServedGraph) -> Settings:
    return with_microsoft(with_google(settings, google), graph)


@pytest.fixture
def staff_page(browser: Any, live: str, app: Flask, api: Api) -> Iterator[Page]:  # noqa: F811
    """Zoë's browser on her self-service page. The app's public base URL is the live server's,
    so the providers send her back to it (the registered redirect URI)."""
    services = app.extensions["calsync"]
    services.settings = services.settings.model_copy(update={"base_url": live})
    zoe = api.make_staff(timezone="UTC")
    with services.sessions.begin() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        token = make_connect_token(session, staff, connect_sealer(services.settings.secret_key))
    # The Microsoft fake is https with the test CA (tests/fakes/tls.py), which this browser
    # context alone accepts; calsync itself trusts it through CALSYNC_MICROSOFT_CA_FILE.
    tab = Page(browser, live, ignore_https_errors=True)
    tab.open(f"/connect/{token}")
    tab.page.wait_for_url(live + "/connect/")
    yield tab
    tab.close()


def connections(app: Flask) -> list[tuple[str, str, list[str]]]:
    with app.extensions["calsync"].sessions() as session:
        rows = session.scalars(select(Connection).order_by(Connection.id))
        return [(c.kind, c.name, c.roles) for c in rows]


def test_connect_google_calendar_through_the_consent_screen(staff_page: Page, app: Flask, axe_source: str  # noqa: F811
                                                            ) -> None:
    page = staff_page.page
    button = page.get_by_role("link", name="Connect Google Calendar")
    expect(button).to_be_visible()
    expect(page.get_by_role("link", name="Connect Outlook / Microsoft 365")).to_be_visible()
    assert_accessible(page, axe_source)
    staff_page.shot("30-provider-buttons")
    button.click()
    expect(page.get_by_role("heading", name="calsync wants to access your Google Account")).to_be_visible()
    expect(page.get_by_text("calendar.events")).to_be_visible()
    staff_page.shot("31-google-consent-fake")
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_role("heading", name="Choose calendars from Google Calendar")).to_be_visible()
    expect(page.get_by_label("Team rota: linked")).to_be_disabled()  # read-only: busy time only
    assert_accessible(page, axe_source)
    staff_page.shot("32-google-choose-calendars")
    page.get_by_label("Zoe: busy time").check()
    page.get_by_label("Zoe: linked").check()
    page.get_by_label("Team rota: busy time").check()
    page.get_by_role("button", name="Connect chosen calendars").click()
    page.wait_for_url(re.compile(r".*/connect/#connections$"))
    card = page.locator("article.conn", has_text="Zoe")
    expect(card.get_by_text("Google", exact=True)).to_be_visible()
    card.get_by_role("button", name="Sync now").click()
    card.locator('[data-field="status"]', has_text="OK").wait_for()
    assert_accessible(page, axe_source)
    staff_page.shot("33-google-connected")
    assert connections(app) == [("google", "Zoe", ["conflict", "linked"]),
                                ("google", "Team rota", ["conflict"])]


def test_connect_outlook_through_the_sign_in(staff_page: Page, app: Flask, axe_source: str  # noqa: F811
                                             ) -> None:
    page = staff_page.page
    page.get_by_role("link", name="Connect Outlook / Microsoft 365").click()
    expect(page.get_by_role("heading", name="Let calsync access your info?")).to_be_visible()
    staff_page.shot("35-microsoft-sign-in-fake")
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_role("heading", name="Choose calendars from Outlook / Microsoft 365")).to_be_visible()
    expect(page.get_by_text("zoe@contoso.example")).to_be_visible()
    expect(page.get_by_label("Team holidays: copy of bookings")).to_be_disabled()
    staff_page.shot("36-microsoft-choose-calendars")
    page.get_by_label("Calendar: busy time").check()
    page.get_by_label("Calendar: linked").check()
    page.get_by_role("button", name="Connect chosen calendars").click()
    page.wait_for_url(re.compile(r".*/connect/#connections$"))
    card = page.locator("article.conn", has_text="Calendar")
    card.get_by_role("button", name="Sync now").click()
    card.locator('[data-field="status"]', has_text="OK").wait_for()
    staff_page.shot("37-microsoft-connected")
    assert connections(app) == [("microsoft", "Calendar", ["conflict", "linked"])]


def test_cancel_on_the_consent_screen_says_nothing_was_connected(staff_page: Page, app: Flask) -> None:
    page = staff_page.page
    page.get_by_role("link", name="Connect Google Calendar").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name="Nothing was connected")).to_be_visible()
    staff_page.shot("34-google-cancelled")
    assert connections(app) == []
