"""The Outbox and Conflicts admin pages: emails with their delivery state, filters, pages and
Retry; two-way sync conflicts with both versions side by side, kept either way; each company
sees only its own; every form needs the CSRF token and a logged-in admin.

Emails come from real bookings (API) and real delivery attempts (aiosmtpd); conflicts from real
calendar-side changes on Radicale, as in tests/integration/test_twoway.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from calsync.feeds.accounts.admins import create_admin
from calsync.feeds.settings import Settings
from calsync.models import AdminUser, ApiKey, Company, Conflict, Connection, FeedToken, OutboxEmail
from calsync.web.admin import outbox as outbox_page
from calsync.web.admin.conflicts import span
from tests.admin_helpers import ADMIN_EMAIL, Browser, csrf_of, log_in, text_of
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.integration.test_api_emails import booked_moved_cancelled
from tests.linked_helpers import Linked, at
from tests.mail_helpers import deliver, with_mail
from tests.servers import CalDAVServer, SmtpSink

SMTP_LOGIN = ("mailer", "smtp-secret-9f3k")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


def emails(app: Flask) -> list[OutboxEmail]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(OutboxEmail).order_by(OutboxEmail.id.desc())))


def conflicts(app: Flask) -> list[Conflict]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(Conflict).order_by(Conflict.id)))


def row_of(html: str, element_id: str) -> str:
    """The <tr> or <article> with that id."""
    found = re.search(rf'<(tr|article)[^>]* id="{element_id}".*?</\1>', html, re.S)
    assert found, f"no #{element_id} on the page"
    return found.group(0)


def flashes(html: str) -> list[str]:
    return [
        unescape(re.sub(r"\s+", " ", m))
        for m in re.findall(r'<p class="flash flash-\w+"[^>]*>(.*?)</p>', html, re.S)
    ]


@pytest.fixture
def other_admin(app: Flask, client: FlaskClient, api: Api) -> Browser:
    """A logged-in admin of another company on the same install."""
    with app.extensions["calsync"].sessions.begin() as s:
        company = Company(name="Other Salon", timezone="UTC", settings={})
        s.add(company)
        s.flush()
        create_admin(s, company, "boss@other.example", "another long password", profile="fast-for-tests")
    log_in(client, "boss@other.example", "another long password")
    return Browser(client)


# --- Outbox, no mail server --------------------------------------------------------------------


def test_the_outbox_lists_each_email_with_its_state(admin: Browser, api: Api) -> None:
    appt = booked_moved_cancelled(api)
    html = text_of(admin.get("/outbox"))
    cancelled, moved, booked = emails(admin.client.application)
    # Newest first, each with recipient, subject, kind, state, attempts and times.
    assert html.index(f'id="email-{cancelled.id}"') < html.index(f'id="email-{moved.id}"')
    assert html.index(f'id="email-{moved.id}"') < html.index(f'id="email-{booked.id}"')
    row = row_of(html, f"email-{booked.id}")
    assert "Confirmed: Haircut on Mon 7 Jan 2030, 10:00 CET" in row
    assert '<span data-field="to">chloe@example.com</span>' in row
    assert 'data-field="kind">Booking confirmation<' in row
    assert 'badge-pending" data-field="status">Waiting<' in row
    assert 'data-field="attempts">0 attempts<' in row
    assert ">just now</time>" in row and "not yet" in row
    assert f'href="/appointments/{appt["id"]}"' in row
    assert 'data-field="kind">Cancellation<' in row_of(html, f"email-{cancelled.id}")
    assert 'data-field="kind">Booking moved<' in row_of(html, f"email-{moved.id}")
    assert re.search(r'All <span class="count">3</span>', html)
    assert re.search(r'Waiting <span class="count">3</span>', html)
    assert re.search(r'Failed <span class="count">0</span>', html)
    # The message itself (with the customer's phone number) stays out of the page.
    assert "+33 1 23" not in html
    assert "<h1>Outbox</h1>" in html


def test_without_a_mail_server_the_page_says_emails_wait(admin: Browser, api: Api) -> None:
    booked_moved_cancelled(api)
    html = text_of(admin.get("/outbox"))
    assert 'data-field="no-smtp"' in html
    assert "No mail server is configured" in html and "CALSYNC_SMTP_URL" in html


def test_an_empty_outbox_says_so(admin: Browser) -> None:
    html = text_of(admin.get("/outbox"))
    assert "No emails yet." in html and "<table" not in html
    assert "Nothing here: no email is failed." in text_of(admin.get("/outbox?status=failed"))


def test_retry_of_a_waiting_email_gives_it_fresh_attempts(app: Flask, admin: Browser, api: Api) -> None:
    booked_moved_cancelled(api)
    email = emails(app)[0]
    with app.extensions["calsync"].sessions.begin() as s:  # as if delivery had tried twice
        s.get(OutboxEmail, email.id).attempts = 2
    resp = admin.post(f"/outbox/{email.id}/retry", {"status": "pending", "page": "1"}, page="/outbox")
    assert resp.status_code == 302 and resp.headers["Location"] == "/outbox?status=pending"
    after = emails(app)[0]
    assert (after.status, after.attempts) == ("pending", 0) and after.next_attempt_at is not None
    html = text_of(admin.get("/outbox"))
    assert "The email to chloe@example.com is waiting again" in flashes(html)[0]
    assert "sent once one is" in flashes(html)[0]


def test_pages_of_emails(monkeypatch: pytest.MonkeyPatch, app: Flask, admin: Browser, api: Api) -> None:
    monkeypatch.setattr(outbox_page, "PAGE_SIZE", 2)
    booked_moved_cancelled(api)
    newest, middle, oldest = (e.id for e in emails(app))
    first = text_of(admin.get("/outbox"))
    assert f'id="email-{newest}"' in first and f'id="email-{middle}"' in first
    assert f'id="email-{oldest}"' not in first
    assert "Page 1 of 2" in first and 'href="/outbox?page=2"' in first and "Newer" not in first
    second = text_of(admin.get("/outbox?page=2"))
    assert f'id="email-{oldest}"' in second and f'id="email-{newest}"' not in second
    assert "Page 2 of 2" in second and 'rel="prev" href="/outbox"' in second and "Older" not in second
    # Nonsense and out-of-range pages show the nearest page rather than an error.
    assert "Page 2 of 2" in text_of(admin.get("/outbox?page=99"))
    assert "Page 1 of 2" in text_of(admin.get("/outbox?page=abc"))
    assert "Page 1 of 2" in text_of(admin.get("/outbox?page=-3"))
    assert "Page 1 of 2" in text_of(admin.get("/outbox?status=nonsense"))  # all emails
    # Retrying from page 2 comes back to page 2.
    resp = admin.post(f"/outbox/{oldest}/retry", {"status": "all", "page": "2"}, page="/outbox")
    assert resp.headers["Location"] == "/outbox?page=2"


# --- Outbox with a mail server (real SMTP delivery) ----------------------------------------------


class TestWithAMailServer:
    @pytest.fixture
    def smtp(self) -> Iterator[SmtpSink]:
        server = SmtpSink(auth=SMTP_LOGIN)
        server.start()
        yield server
        server.stop()

    @pytest.fixture
    def settings(self, settings: Settings, smtp: SmtpSink) -> Settings:
        user, password = SMTP_LOGIN
        return with_mail(
            settings,
            smtp_url=f"smtp://{user}:{password}@{smtp.host}:{smtp.port}",
            mail_from="bookings@salon.example",
        )

    @pytest.fixture
    def states(self, app: Flask, api: Api, smtp: SmtpSink) -> dict[str, int]:
        """One email of each state, reached by real delivery: failed (refused by the server),
        sent (retried through the API, then accepted) and waiting (not delivered yet)."""
        booked_moved_cancelled(api)
        smtp.refuse = "554 5.7.1 Message rejected by the test server"
        assert deliver(app).gave_up == 3  # a 5xx answer: no point trying the same again
        smtp.refuse = None
        failed, sent, other_failed = (e.id for e in emails(app))
        assert api.post(f"/emails/{sent}/retry").status_code == 200
        assert deliver(app).sent == 1
        staff_id = api.get("/staff").get_json()["staff"][0]["id"]
        api.book(staff_id, "2030-01-08T10:00:00+01:00", "2030-01-08T10:30:00+01:00")
        waiting = emails(app)[0].id
        by_id = {e.id: e.status for e in emails(app)}
        assert [by_id[i] for i in (failed, sent, other_failed, waiting)] == [
            "failed",
            "sent",
            "failed",
            "pending",
        ]
        return {"failed": failed, "sent": sent, "pending": waiting, "other_failed": other_failed}

    def test_each_state_with_its_badge_error_and_action(
        self, admin: Browser, states: dict[str, int], smtp: SmtpSink
    ) -> None:
        html = text_of(admin.get("/outbox"))
        failed = row_of(html, f"email-{states['failed']}")
        assert 'badge-error" data-field="status">Failed<' in failed
        assert 'data-field="attempts">1 attempt<' in failed
        assert "The mail server refused the email (554 5.7.1 Message rejected by the test server)." in failed
        assert ">Retry</button>" in failed
        sent = row_of(html, f"email-{states['sent']}")
        assert 'badge-ok" data-field="status">Sent<' in sent
        assert ">just now</time>" in sent.split('data-field="sent"', 1)[1]
        assert ">Retry</button>" not in sent and 'data-field="sent-note">Sent<' in sent
        assert "never sent twice" not in sent
        # Retried (a fresh count), then delivered: the successful attempt counts.
        assert 'data-field="attempts">1 attempt<' in sent
        waiting = row_of(html, f"email-{states['pending']}")
        assert 'badge-pending" data-field="status">Waiting<' in waiting and ">Retry</button>" in waiting
        # A mail server is configured: no warning, the server named without its login.
        assert 'data-field="no-smtp"' not in html
        assert f"mail server {smtp.host}:{smtp.port}" in html
        assert SMTP_LOGIN[1] not in html and SMTP_LOGIN[0] not in html

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("failed", ["failed", "other_failed"]),
            ("sent", ["sent"]),
            ("pending", ["pending"]),
            ("all", ["failed", "other_failed", "sent", "pending"]),
        ],
    )
    def test_filter_by_status(
        self, admin: Browser, states: dict[str, int], status: str, expected: list[str]
    ) -> None:
        html = text_of(admin.get(f"/outbox?status={status}"))
        shown = {int(i) for i in re.findall(r'<tr id="email-(\d+)"', html)}
        assert shown == {states[name] for name in expected}
        assert re.search(r'Failed <span class="count">2</span>', html)
        assert re.search(r'Sent <span class="count">1</span>', html)
        assert re.search(rf'aria-current="page">{outbox_page.FILTERS[status]} ', html)

    def test_retry_of_a_failed_email_sends_it(
        self, app: Flask, admin: Browser, states: dict[str, int], smtp: SmtpSink
    ) -> None:
        huey = app.extensions["calsync"].jobs.huey
        before = huey.pending_count()
        resp = admin.post(f"/outbox/{states['failed']}/retry", {"status": "failed"}, page="/outbox")
        assert resp.headers["Location"] == "/outbox?status=failed"
        email = next(e for e in emails(app) if e.id == states["failed"])
        assert (email.status, email.attempts) == ("pending", 0)
        assert huey.pending_count() == before + 1  # delivery was asked for after the commit
        assert "will be sent again in a moment" in flashes(text_of(admin.get("/outbox")))[0]
        received = len(smtp.messages)
        deliver(app)
        assert len(smtp.messages) == received + 2  # this one and the waiting booking
        html = text_of(admin.get("/outbox"))
        assert 'badge-ok" data-field="status">Sent<' in row_of(html, f"email-{states['failed']}")

    def test_a_sent_email_is_not_retried(
        self, app: Flask, admin: Browser, states: dict[str, int], smtp: SmtpSink
    ) -> None:
        received = len(smtp.messages)
        resp = admin.post(f"/outbox/{states['sent']}/retry", page="/outbox")
        assert resp.status_code == 302
        html = text_of(admin.get("/outbox"))
        assert flashes(html) == [
            "That email was already sent, so it is not sent again."
        ]
        assert 'class="flash flash-error" role="alert"' in html
        email = next(e for e in emails(app) if e.id == states["sent"])
        assert email.status == "sent"
        deliver(app)
        assert len(smtp.messages) == received + 1  # only the waiting booking

    def test_failed_emails_are_counted_in_the_navigation(
        self, admin: Browser, states: dict[str, int]
    ) -> None:
        html = text_of(admin.get("/appointments"))
        assert re.search(r'Outbox <span class="nav-count">2<span class="sr-only"> failed</span>', html)


# --- Conflicts ---------------------------------------------------------------------------------


@pytest.fixture
def linked(app: Flask, api: Api, radicale: CalDAVServer) -> Linked:
    return Linked(app, api, radicale)


@pytest.fixture
def collision(linked: Linked) -> dict[str, Any]:
    """A move in the calendar onto another booking: not applied, a conflict instead."""
    first = linked.book(at(2, 10))
    second = linked.book(at(2, 12))
    linked.sync()
    linked.move_in_calendar(first["uid"], at(2, 12, 30))
    linked.sync()
    (conflict,) = conflicts(linked.app)
    return {"first": first, "second": second, "conflict": conflict}


def berlin(start: Any, end: Any) -> str:
    return span(start, end, "Europe/Berlin")


def test_an_open_conflict_shows_both_versions_on_the_company_clock(
    admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    conflict, first = collision["conflict"], collision["first"]
    html = text_of(admin.get("/conflicts"))
    card = row_of(html, f"conflict-{conflict.id}")
    assert f'href="/appointments/{first["id"]}">Haircut · Chloé Lefèvre</a>' in card
    assert f'href="/staff/{linked.staff["id"]}">Zoë Müller</a>' in card
    with linked.app.extensions["calsync"].sessions() as s:
        calendar_name = s.get(Connection, linked.connection_id).name  # the redacted address here
    assert f"calendar “{calendar_name}”" in card
    reason = re.search(r'data-field="reason">(.*?)</p>', card, re.S)
    assert reason and reason.group(1).startswith("The move in the calendar was not applied:")
    assert "already has an appointment at that time" in reason.group(1)
    # The staff member works in UTC; the page shows the company's Berlin time.
    platform = berlin(at(2, 10), at(2, 11))
    calendar = berlin(at(2, 12, 30), at(2, 13, 30))
    assert re.search(r"(CET|CEST)$", platform)
    assert f'data-field="platform-when">{platform}<' in card
    assert 'data-field="platform-status">Confirmed<' in card
    assert f'data-field="calendar-when" class="differs">{calendar}<' in card
    assert 'data-field="calendar-deleted">No<' in card
    assert ">Keep platform version</button>" in card and ">Keep calendar version</button>" in card
    assert "Times in Europe/Berlin" in html
    assert "No conflict has been resolved yet." in html
    assert re.search(r'Conflicts <span class="nav-count">1<span class="sr-only"> open</span>', html)


def test_keeping_the_calendar_version_onto_a_taken_time_is_refused_with_a_sentence(
    admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    conflict, first = collision["conflict"], collision["first"]
    resp = admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"}, page="/conflicts")
    assert resp.status_code == 302 and resp.headers["Location"] == "/conflicts"
    html = text_of(admin.get("/conflicts"))
    assert flashes(html) == [
        "The calendar version was not kept: Zoë Müller already has an appointment at that time; choose "
        "another slot. Nothing changed; keep the other version, or make room first and try again."
    ]
    assert conflicts(linked.app)[0].status == "open"
    assert linked.appointment(first["id"])["start"] == iso(at(2, 10)).replace("+00:00", "Z")
    assert f'id="conflict-{conflict.id}"' in html.split("Recently resolved")[0]


def test_keeping_the_platform_version_puts_the_calendar_back(
    app: Flask, admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    conflict, first = collision["conflict"], collision["first"]
    emails_before = len(emails(app))
    admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "platform"}, page="/conflicts")
    html = text_of(admin.get("/conflicts"))
    assert flashes(html) == [
        f"Kept the platform version: the booking stays at {berlin(at(2, 10), at(2, 11))}, and the "
        "calendar event is put back at the next sync."
    ]
    (after,) = conflicts(app)
    assert (after.status, after.resolution) == ("resolved", "platform")
    assert "No conflicts: every change made in a staff calendar" in html
    resolved = row_of(html, f"conflict-{conflict.id}")
    assert f"Platform version kept: the booking stayed at {berlin(at(2, 10), at(2, 11))}." in resolved
    assert ">just now</time>" in resolved
    assert len(emails(app)) == emails_before  # the customer is not bothered
    linked.sync()
    assert linked.event_times(first["uid"]) == (at(2, 10), at(2, 11))
    assert "nav-count" not in html.split("</nav>")[0]


def test_keeping_the_calendar_version_moves_the_booking_and_emails_the_customer(
    app: Flask, admin: Browser, linked: Linked
) -> None:
    appt = linked.book(at(2, 10))
    linked.sync()
    linked.move_in_calendar(appt["uid"], at(4, 10))
    linked.api.patch(f"/appointments/{appt['id']}", {"start": iso(at(5, 10)), "end": iso(at(5, 11))})
    linked.sync()
    (conflict,) = conflicts(app)
    card = row_of(text_of(admin.get("/conflicts")), f"conflict-{conflict.id}")
    assert "changed both on the platform and in the calendar" in card
    assert f'data-field="platform-when">{berlin(at(5, 10), at(5, 11))}<' in card
    admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"}, page="/conflicts")
    html = text_of(admin.get("/conflicts"))
    assert flashes(html) == [
        f"Kept the calendar version: the booking moved to {berlin(at(4, 10), at(4, 11))} and the "
        "customer gets an updated invitation."
    ]
    moved = linked.appointment(appt["id"])
    assert moved["start"] == iso(at(4, 10)).replace("+00:00", "Z")
    newest = emails(app)[0]
    assert (newest.kind, newest.to_address, newest.sequence) == (
        "rescheduled",
        "chloe@example.com",
        moved["sequence"],
    )
    resolved = row_of(html, f"conflict-{conflict.id}")
    assert f"Calendar version kept: moved to {berlin(at(4, 10), at(4, 11))}." in resolved


def test_a_booking_deleted_in_the_calendar_can_be_cancelled_from_the_conflict(
    app: Flask, admin: Browser, linked: Linked
) -> None:
    appt = linked.book(at(2, 10))
    linked.sync()
    linked.event(appt["uid"]).delete()
    linked.api.patch(f"/appointments/{appt['id']}", {"start": iso(at(3, 10)), "end": iso(at(3, 11))})
    linked.sync()
    (conflict,) = conflicts(app)
    card = row_of(text_of(admin.get("/conflicts")), f"conflict-{conflict.id}")
    assert 'data-field="calendar-when" class="differs">Deleted from the calendar<' in card
    assert 'data-field="calendar-deleted">Yes<' in card
    # Asked in a page dialog (calsync.js) that says the customer is emailed.
    assert ('data-confirm="Cancel Haircut for Chloé Lefèvre, as it was deleted from the calendar? '
            'Chloé Lefèvre is emailed at chloe@example.com that it is cancelled.') in card
    admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"}, page="/conflicts")
    assert flashes(text_of(admin.get("/conflicts"))) == [
        "Kept the calendar version: the booking is cancelled, as it was deleted from the calendar. "
        "Chloé Lefèvre is emailed the cancellation."
    ]
    assert linked.appointment(appt["id"])["status"] == "cancelled"


def test_a_calendar_version_without_a_time_cannot_be_kept(app: Flask, admin: Browser, linked: Linked) -> None:
    appt = linked.book(at(2, 10))
    linked.sync()
    event = linked.event(appt["uid"])  # made an all-day event in the calendar app
    comp = event.icalendar_component
    day = at(2, 10).date()
    comp["DTSTART"].dt, comp["DTEND"].dt = day, day + timedelta(days=1)
    assert isinstance(comp["DTSTART"].dt, date)
    event.save()
    linked.sync()
    (conflict,) = conflicts(app)
    card = row_of(text_of(admin.get("/conflicts")), f"conflict-{conflict.id}")
    assert "No usable start and end time" in card
    assert ">Keep calendar version</button>" not in card and ">Keep platform version</button>" in card
    # Sent anyway (an old page, a hand-made request): a sentence, not a crash.
    resp = admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"}, page="/conflicts")
    assert resp.status_code == 302
    assert (
        "has no usable start and end time, so it cannot be kept"
        in flashes(text_of(admin.get("/conflicts")))[0]
    )
    assert conflicts(app)[0].status == "open"
    # The API refuses it the same way, with a sentence and no change.
    refused = linked.api.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"})
    assert refused.status_code == 409
    assert "no usable start and end time" in refused.get_json()["error"]
    assert conflicts(app)[0].status == "open"


def test_resolving_an_already_resolved_conflict_changes_nothing(
    app: Flask, admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    conflict = collision["conflict"]
    assert linked.api.post(f"/conflicts/{conflict.id}/resolve", {"keep": "platform"}).status_code == 200
    resp = admin.post(f"/conflicts/{conflict.id}/resolve", {"keep": "calendar"}, page="/conflicts")
    assert resp.status_code == 302
    assert flashes(text_of(admin.get("/conflicts"))) == [
        "This conflict was already resolved just now: the platform version was kept. Nothing changed."
    ]
    (after,) = conflicts(app)
    assert after.resolution == "platform"
    assert linked.appointment(collision["first"]["id"])["start"] == iso(at(2, 10)).replace("+00:00", "Z")


def test_an_unknown_choice_is_refused_with_a_sentence(
    admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    conflict = collision["conflict"]
    for data in ({"keep": "both"}, {}):
        admin.post(f"/conflicts/{conflict.id}/resolve", data, page="/conflicts")
        assert flashes(text_of(admin.get("/conflicts"))) == [
            "Choose which version to keep: the platform's or the calendar's."
        ]
    assert conflicts(linked.app)[0].status == "open"


def test_no_conflicts_says_so(admin: Browser) -> None:
    html = text_of(admin.get("/conflicts"))
    assert "No conflicts: every change made in a staff calendar" in html
    assert "No conflict has been resolved yet." in html
    assert "nav-count" not in html


# --- Access: companies, CSRF, login, secrets -----------------------------------------------------


def test_another_companys_emails_and_conflicts_are_not_found(
    app: Flask, linked: Linked, collision: dict[str, Any], other_admin: Browser
) -> None:
    other = other_admin
    email_id = emails(app)[0].id
    conflict = collision["conflict"]
    outbox_html = text_of(other.get("/outbox"))
    assert "No emails yet." in outbox_html and "chloe@example.com" not in outbox_html
    conflicts_html = text_of(other.get("/conflicts"))
    assert "No conflicts" in conflicts_html and "Chloé" not in conflicts_html
    assert "nav-count" not in conflicts_html
    for path, data in (
        (f"/outbox/{email_id}/retry", {}),
        (f"/conflicts/{conflict.id}/resolve", {"keep": "platform"}),
        ("/outbox/424242/retry", {}),
        ("/conflicts/424242/resolve", {"keep": "platform"}),
        ("/outbox/99999999999/retry", {}),  # beyond the database's key range
        ("/conflicts/99999999999/resolve", {"keep": "platform"}),
    ):
        resp = other.post(path, data, page="/outbox")
        assert resp.status_code == 404, path
        assert "That page does not exist" in text_of(resp)
    assert conflicts(app)[0].status == "open"


def test_the_forms_need_the_csrf_token(
    app: Flask, admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    email = emails(app)[0]
    with app.extensions["calsync"].sessions.begin() as s:
        s.get(OutboxEmail, email.id).attempts = 3
    conflict = collision["conflict"]
    for path, data in (
        (f"/outbox/{email.id}/retry", {}),
        (f"/conflicts/{conflict.id}/resolve", {"keep": "platform"}),
        (f"/conflicts/{conflict.id}/resolve", {"keep": "platform", "csrf_token": "forged"}),
    ):
        resp = admin.client.post(path, data=data)
        assert resp.status_code == 400, path
        assert "This form was open for too long" in text_of(resp)
    assert emails(app)[0].attempts == 3
    assert conflicts(app)[0].status == "open"
    # A cross-site request is refused even with a token.
    resp = admin.client.post(
        f"/conflicts/{conflict.id}/resolve",
        data={"keep": "platform", "csrf_token": admin.token("/conflicts")},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert resp.status_code == 403
    assert conflicts(app)[0].status == "open"


def test_anonymous_visitors_are_sent_to_the_login(app: Flask, client: FlaskClient, api: Api) -> None:
    booked_moved_cancelled(api)
    email_id = emails(app)[0].id
    with app.extensions["calsync"].sessions.begin() as s:
        s.get(OutboxEmail, email_id).attempts = 3
    for path in ("/outbox", "/outbox?status=failed", "/conflicts"):
        resp = client.get(path)
        assert resp.status_code == 302, path
        assert resp.headers["Location"].startswith("/login?next=")
    token = csrf_of(client.get("/login"))
    resp = client.post(f"/outbox/{email_id}/retry", data={"csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    resp = client.post("/conflicts/1/resolve", data={"csrf_token": token, "keep": "platform"})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert emails(app)[0].attempts == 3


def test_no_secret_reaches_the_pages(
    app: Flask, admin: Browser, linked: Linked, collision: dict[str, Any]
) -> None:
    linked.api.feed_url("staff", linked.staff["id"])
    pages = text_of(admin.get("/outbox")) + text_of(admin.get("/conflicts"))
    with app.extensions["calsync"].sessions() as s:
        secrets = [a.password_hash for a in s.scalars(select(AdminUser))]
        secrets += [k.key_hash for k in s.scalars(select(ApiKey))]
        secrets += [t.token_hash for t in s.scalars(select(FeedToken))]
        secrets += [t.token_encrypted for t in s.scalars(select(FeedToken))]
    assert len(secrets) >= 4
    for secret in secrets:
        assert secret not in pages
    assert linked.server.password not in pages
    assert ADMIN_EMAIL in pages  # the page did render (the account menu)
    assert "Traceback" not in pages
