"""The Outbox and Conflicts pages in a real browser (Chromium through Playwright, as in
tests/system/test_browser.py): retry a failed email and see it sent, settle a conflict by clicking,
with screenshots of both pages in test-output/screenshots/."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Conflict, OutboxEmail
from calsync.web.admin.conflicts import span
from tests.conftest import Api
from tests.linked_helpers import Linked, at
from tests.mail_helpers import deliver, with_mail
from tests.servers import CalDAVServer, SmtpSink
from tests.system import test_browser
from tests.system.test_browser import PHONE, Page
from tests.system.test_browser_plain_words import conflict_and_failed_emails

pytestmark = pytest.mark.slow

# The browser (one Chromium per module), the app served on a loopback port, and a tab with an
# admin account: the fixtures of tests/system/test_browser.py.
browser = test_browser.browser
live = test_browser.live
tab = test_browser.tab


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True, smtp_url=smtp_server.url)


def test_retry_an_email_and_settle_a_conflict(
    tab: Page, app: Flask, api: Api, radicale: CalDAVServer, smtp_server: SmtpSink
) -> None:
    # A move in the staff calendar onto another booking: a conflict, and its notice email.
    linked = Linked(app, api, radicale)
    first, failed = conflict_and_failed_emails(app, linked, smtp_server)
    assert failed >= 3  # two confirmations and the conflict notice
    with app.extensions["calsync"].sessions() as s:
        booking_mail = s.scalars(
            select(OutboxEmail).where(OutboxEmail.appointment_id == first["id"]).order_by(OutboxEmail.id)
        ).first()
        assert booking_mail is not None
        mail_id = booking_mail.id

    tab.log_in()
    page = tab.page
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name=re.compile(r"^Conflicts 1 open$"))).to_be_visible()
    expect(nav.get_by_role("link", name=re.compile(rf"^Outbox {failed} failed$"))).to_be_visible()

    # Outbox: the failed confirmation, retried and then delivered.
    nav.get_by_role("link", name=re.compile("^Outbox")).click()
    expect(page.get_by_role("heading", name="Outbox", level=1)).to_be_visible()
    row = page.locator(f"#email-{mail_id}")
    expect(row.locator('[data-field="status"]')).to_have_text("Failed")
    expect(row.locator('[data-field="last-error"]')).to_contain_text("554 5.7.1 Mailbox unavailable")
    tab.shot("14-outbox")
    row.get_by_role("button", name=re.compile("^Retry")).click()
    expect(page.get_by_text("The email to chloe@example.com will be sent again in a moment")).to_be_visible()
    expect(row.locator('[data-field="status"]')).to_have_text("Waiting")
    expect(row.locator('[data-field="attempts"]')).to_have_text("0 attempts")
    assert deliver(app).sent == 1
    page.reload()
    expect(row.locator('[data-field="status"]')).to_have_text("Sent")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(row.locator('[data-field="sent-note"]')).to_be_visible()
    assert [m.rcpt_tos for m in smtp_server.messages] == [["chloe@example.com"]]
    page.get_by_role("link", name=re.compile(r"^Failed \d+$")).click()
    expect(page.locator(f"#email-{mail_id}")).to_have_count(0)
    page.set_viewport_size(PHONE)
    tab.shot("15-outbox-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Conflicts: the calendar's time is taken, so only the platform's version can be kept.
    nav.get_by_role("link", name=re.compile("^Conflicts")).click()
    expect(page.get_by_role("heading", name="Conflicts", level=1)).to_be_visible()
    card = page.locator("article.conflict")
    expect(card.locator('[data-field="platform-when"]')).to_have_text(
        span(at(2, 10), at(2, 11), "Europe/Berlin")
    )
    expect(card.locator('[data-field="calendar-when"]')).to_have_text(
        span(at(2, 12, 30), at(2, 13, 30), "Europe/Berlin")
    )
    tab.shot("16-conflicts")
    card.get_by_role("button", name="Keep calendar version").click()
    expect(page.locator(".flash-error")).to_contain_text("The calendar version was not kept")
    expect(page.locator(".flash-error")).to_contain_text("already has an appointment at that time")
    page.locator("article.conflict").get_by_role("button", name="Keep platform version").click()
    expect(page.get_by_text("Kept the platform version")).to_be_visible()
    expect(page.locator("article.conflict")).to_have_count(0)
    expect(page.get_by_text("No conflicts: every change made")).to_be_visible()
    expect(page.locator('[data-field="decision"]')).to_contain_text("Platform version kept")
    expect(nav.get_by_role("link", name="Conflicts", exact=True)).to_be_visible()  # no count left
    tab.shot("17-conflicts-resolved")
    with app.extensions["calsync"].sessions() as s:
        (conflict,) = s.scalars(select(Conflict)).all()
        assert (conflict.status, conflict.resolution) == ("resolved", "platform")
    linked.sync()
    assert linked.event_times(first["uid"]) == (at(2, 10), at(2, 11))
