"""Invite to sync in a real browser (Playwright driving Debian's Chromium, like tests/system/test_browser.py):
an admin edits and previews the invitation and sends it; the email arrives at the aiosmtpd
server on loopback; the staff member opens its link in another browser and connects an ICS
calendar; the admin then sees the invitation opened and used. Screenshots of the invite page,
the preview and the self-service page go to test-output/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from calsync.feeds.settings import Settings
from tests.admin_helpers import busy_ics
from tests.conftest import Api
from tests.mail_helpers import deliver, parse_message, with_mail
from tests.servers import CalendarHTTPServer, SmtpSink
from tests.system.test_browser import Page, browser, live, tab  # noqa: F401 - the browser fixtures

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(
        settings, allow_private_networks=True, smtp_url=smtp_server.url, mail_from="team@salon.example"
    )


def test_invite_a_staff_member_who_then_connects_a_calendar(
    tab: Page,  # noqa: F811
    browser: Any,  # noqa: F811
    live: str,  # noqa: F811
    api: Api,
    app: Flask,
    smtp_server: SmtpSink,
    calendar_http: CalendarHTTPServer,
) -> None:
    staff = api.make_staff()
    ics = calendar_http.add("/zoe/private.ics", busy_ics(3))
    tab.log_in()
    page = tab.page
    page.get_by_role("link", name="Zoë Müller").first.click()
    page.get_by_role("link", name="Invite to sync").first.click()
    expect(page.get_by_role("heading", name="Invite Zoë Müller to sync")).to_be_visible()
    assert page.get_by_label("To").input_value() == "zoe@example.com"
    tab.shot("20-invite")

    page.get_by_label("Subject").fill("{staff_name}, your {company} calendar")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator('[data-field="preview-subject"]')).to_have_text(
        "Zoë Müller, your Test Salon calendar"
    )
    assert page.get_by_label("Subject").input_value() == "{staff_name}, your {company} calendar"
    email = page.frame_locator("iframe.email-preview")
    google = email.get_by_role("link", name="Subscribe in Google Calendar")
    expect(google).to_be_visible()
    expect(email.get_by_text("Google decides when to look again")).to_be_visible()
    # The email's inline styles apply in the sandboxed preview (the page's CSP allows exactly
    # their hashes): the subscribe button is the email's blue, not an unstyled link.
    assert google.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(10, 88, 202)"
    # Chromium paints the sandboxed frame (a process of its own) only inside the viewport, so
    # the shot is taken with a window tall enough for the whole page.
    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.body.scrollHeight")})
    tab.shot("21-invite-preview", full_page=False)
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_url(re.compile(rf".*/staff/{staff['id']}#invitations$"))
    expect(page.get_by_text("Invitation to zoe@example.com written to the outbox")).to_be_visible()
    row = page.locator("tr[id^=invitation-]")
    expect(row.locator('[data-field="opened"]')).to_have_text("Not opened yet")

    report = deliver(app)
    assert report.sent == 1
    [mail] = [parse_message(m.data) for m in smtp_server.messages if m.rcpt_tos == ["zoe@example.com"]]
    assert str(mail["Subject"]) == "Zoë Müller, your Test Salon calendar"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https://cal\.example\.test(/connect/[A-Za-z0-9_=-]+)", text)
    assert found, text

    staff_tab = Page(browser, live)  # another browser: no admin session
    try:
        own = staff_tab.page
        staff_tab.open(found.group(1))
        own.wait_for_url(live + "/connect/")
        expect(own.get_by_role("heading", name="Hello, Zoë Müller")).to_be_visible()
        expect(own.get_by_role("link", name="Google")).to_be_visible()
        assert own.get_by_role("navigation", name="Main").count() == 0
        staff_tab.shot("22-self-service-from-invitation")
        own.get_by_text("By its ICS address").click()
        own.get_by_label("Calendar address").fill(ics)
        own.get_by_label("Name (optional)").fill("Private")
        own.get_by_role("button", name="Add calendar").click()
        card = own.locator("article.conn", has_text="Private")
        expect(card.locator('[data-field="status"]')).to_have_text("OK")  # read when it was added
        card.get_by_role("button", name="Sync now").click()
        expect(card.locator('[data-field="busy-count"]')).to_have_text("3")
        expect(card.locator('[data-field="last-sync"]')).to_have_text("just now")
        expect(card.locator('[data-field="status"]')).to_have_text("OK")
        staff_tab.shot("23-self-service-calendar-connected")
    finally:
        staff_tab.close()

    page.reload()
    row = page.locator("tr[id^=invitation-]")
    expect(row.locator('[data-field="delivery"]')).to_have_text("Delivered")
    expect(row.locator('[data-field="opened"]')).to_contain_text("Opened just now")
    expect(row.locator('[data-field="used"]')).to_contain_text("Calendar connected just now")
    page.locator("#invitations").scroll_into_view_if_needed()
    tab.shot("24-staff-invitations")
