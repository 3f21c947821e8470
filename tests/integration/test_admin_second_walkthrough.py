"""What a second walkthrough of the admin pages found misleading (issue 15), held in the plain HTML:
the admin forms refuse a start time that has passed (book and move), and an appointment that
already took place is cancelled without emailing the customer unless the admin asks; a failing
calendar's "Sync now" says so once, as "Tried again just now — still failing", with the failures
counted; the booking message and form say the customer is emailed a confirmation; "Not booked:"
each time Book is refused; plain time-range errors; the history's times name their zone;
"Feeds show the change" only after a feed setting changed; the staff list sorted as a reader
expects; Sync health's nav link counts the failing calendars; short settings options."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.scheduling import booking
from calsync.feeds.settings import Settings
from calsync.models import Appointment, ChangeSource, Company, Connection, OutboxEmail, utcnow
from calsync.web.admin.settings_form import CHOICE_LABELS
from tests.admin_helpers import Browser, busy_ics, text_of, words_of
from tests.conftest import Api
from tests.integration.test_admin_appointments import form, workday
from tests.integration.test_admin_sync import settings_form
from tests.mail_helpers import with_mail
from tests.servers import CalendarHTTPServer, SmtpSink

PAST_DAY = (utcnow() - timedelta(days=2)).date()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})  # the loopback servers


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()



def _booked(admin: Browser, staff: dict[str, Any], **kw: str) -> int:
    resp = admin.post("/appointments/new", form(staff["id"], workday(), **kw))
    assert resp.status_code == 302, words_of(text_of(resp))
    return int(resp.headers["Location"].rsplit("/", 1)[1])


def _took_place(app: Flask, appointment_id: int, days: int = 2) -> None:
    """Move a booked appointment into the past, as if it had been booked long ago."""
    with app.extensions["calsync"].sessions.begin() as s:
        item = s.get(Appointment, appointment_id)
        length = item.end_at - item.start_at
        item.start_at = utcnow().replace(microsecond=0) - timedelta(days=days)
        item.end_at = item.start_at + length


def _emails(app: Flask) -> list[tuple[str, int | None]]:
    with app.extensions["calsync"].sessions() as s:
        return [(e.kind, e.appointment_id) for e in s.scalars(select(OutboxEmail).order_by(OutboxEmail.id))]


def _count_appointments(app: Flask) -> int:
    with app.extensions["calsync"].sessions() as s:
        return len(list(s.scalars(select(Appointment))))


# 1 -------------------------------------------------------------------------------------------


def test_booking_a_start_time_that_has_passed_is_refused_keeping_what_was_typed(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    resp = admin.post("/appointments/new", form(staff["id"], PAST_DAY, start="10:00", end="10:30",
                                                notes="Bring the voucher"))
    assert resp.status_code == 422
    html = text_of(resp)
    error = words_of(html.split('data-field="book-error"', 1)[1].split("</p>", 1)[0])
    assert error.startswith(">Not booked: The start time, 10:00 on ")
    assert "has already passed: it is now" in error and "(Europe/Berlin). Choose a later time." in error
    # Beside the form, what was typed kept, the time fields marked.
    form_part = html.split('<form method="post" class="card', 1)[1]
    assert form_part.index('data-field="book-error"') < form_part.index('name="date"')
    assert f'name="date" required value="{PAST_DAY.isoformat()}" aria-invalid="true"' in html
    assert 'value="+33 1 23"' in html and ">Bring the voucher</textarea>" in html
    assert _count_appointments(app) == 0 and _emails(app) == []


def test_moving_an_appointment_into_the_past_is_refused_beside_the_reschedule_card(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    appointment_id = _booked(admin, staff)
    page = f"/appointments/{appointment_id}"
    before = _emails(app)
    resp = admin.post(f"{page}/reschedule", {"date": PAST_DAY.isoformat(), "start": "11:00", "end": "11:30"},
                      page=page)
    assert resp.status_code == 422
    card = text_of(resp).split('id="reschedule"', 1)[1].split("</section>", 1)[0]
    assert "has already passed" in words_of(card) and 'data-field="move-error"' in card
    assert f'name="date" required value="{PAST_DAY.isoformat()}"' in card
    assert 'name="start" required value="11:00"' in card
    assert _emails(app) == before  # the customer hears nothing of it
    with app.extensions["calsync"].sessions() as s:
        assert s.get(Appointment, appointment_id).start_at > utcnow()


def test_cancelling_an_appointment_that_took_place_emails_nobody_unless_asked(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    first, second = _booked(admin, staff), _booked(admin, staff, start="14:00", end="14:30")
    for appointment_id in (first, second):
        _took_place(app, appointment_id)
    page = f"/appointments/{first}"
    html = text_of(admin.get(page))
    words = words_of(html)
    assert "This appointment is in the past, so Chloé Lefèvre is not emailed unless you choose to." in words
    dialog = words_of(html.split('id="cancel-dialog"', 1)[1].split("</dialog>", 1)[0])
    assert "This appointment is in the past: it was on" in dialog
    assert "Also email Chloé Lefèvre (chloe@example.com) that it is cancelled" in dialog
    # The box belongs to the Cancel form (sent with it from the dialog), unticked.
    assert re.search(r'<input type="checkbox" id="cancel-email" name="email_customer" value="1" '
                     r'form="cancel-form">', html)
    assert 'id="cancel-form"' in html
    booked_emails = _emails(app)

    admin.post(f"{page}/cancel", page=page)
    after = words_of(text_of(admin.get(page)))
    assert ("Appointment cancelled. Chloé Lefèvre was not emailed, as the appointment was in the past."
            in after)
    assert "Cancelled by an admin, without emailing the customer." in after
    assert _emails(app) == booked_emails

    # Asked for: the cancellation email is written as for any other.
    page = f"/appointments/{second}"
    admin.post(f"{page}/cancel", {"email_customer": "1"}, page=page)
    assert _emails(app) == [*booked_emails, ("cancelled", second)]
    assert "Cancelled by an admin." in words_of(text_of(admin.get(page)))


def test_an_upcoming_appointment_is_cancelled_with_its_email_whatever_the_form_says(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    appointment_id = _booked(admin, staff)
    page = f"/appointments/{appointment_id}"
    assert 'data-field="cancel-past"' not in text_of(admin.get(page))
    admin.post(f"{page}/cancel", {"email_customer": ""}, page=page)
    assert ("cancelled", appointment_id) in _emails(app)


def test_cancel_appointment_without_the_customer_email_keeps_the_calendar_and_history(
    app: Flask, api: Api, staff: dict[str, Any]
) -> None:
    appointment_id = _booked_by_api(api, staff)
    with app.extensions["calsync"].sessions.begin() as s:
        company = s.scalars(select(Company)).one()
        booking.cancel_appointment(s, company, appointment_id, source=ChangeSource.ADMIN,
                                   email_customer=False)
    assert ("cancelled", appointment_id) not in _emails(app)
    with app.extensions["calsync"].sessions() as s:
        item = s.get(Appointment, appointment_id)
        assert item.status == "cancelled"


def _booked_by_api(api: Api, staff: dict[str, Any]) -> int:
    day = workday()
    start = datetime(day.year, day.month, day.day, 10, tzinfo=ZoneInfo("Europe/Berlin"))
    resp = api.book(staff["id"], start.isoformat(), (start + timedelta(minutes=30)).isoformat())
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["id"])


# 4 -------------------------------------------------------------------------------------------


def test_sync_now_on_a_failing_calendar_says_it_once_as_tried_again(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    url = calendar_http.add("/c.ics", busy_ics(2))
    conn = api.post(f"/staff/{staff['id']}/connections",
                    {"kind": "ics", "url": url, "name": "Work"}).get_json()
    api.post(f"/connections/{conn['id']}/sync")
    calendar_http.routes.pop("/c.ics")
    first = admin.post_json(f"/connections/{conn['id']}/sync").get_json()
    # Failing for the first time: it did not sync.
    assert first["failed"] is True and first["failures"] == 1
    assert first["message"].startswith("'Work' did not sync: The calendar was not found")
    again = admin.post_json(f"/connections/{conn['id']}/sync").get_json()
    assert again["failed"] is True and again["failures"] == 2
    assert again["message"] == f"Tried again just now — still failing: {again['last_error']}"
    # Without script: the message on the card, as an error, and the card's error box not again.
    page = f"/staff/{staff['id']}"
    admin.post(f"/connections/{conn['id']}/sync", page=page)
    html = text_of(admin.get(page))
    card = html.split(f'id="connection-{conn["id"]}"', 1)[1].split("</article>", 1)[0]
    assert re.search(r'class="flash flash-error"[^>]*>Tried again just now — still failing: ', card)
    assert re.search(r'data-field="last-error" hidden>', card)
    assert 'data-field="failures">3<' in card
    # Next visit: the error box again, once.
    card = text_of(admin.get(page)).split(f'id="connection-{conn["id"]}"', 1)[1].split("</article>", 1)[0]
    assert "Tried again" not in card and re.search(r'data-field="last-error" >The calendar', card)
    # A calendar that syncs: the failures row hidden, "failed" false.
    calendar_http.add("/c.ics", busy_ics(2))
    ok = admin.post_json(f"/connections/{conn['id']}/sync").get_json()
    assert ok["failed"] is False and ok["failures"] == 0
    assert 'data-field="failures-row" hidden' in text_of(admin.get(page))


# 5 -------------------------------------------------------------------------------------------


def test_the_booking_message_and_form_mention_the_confirmation_email(
    app: Flask, admin: Browser, staff: dict[str, Any]
) -> None:
    form_words = words_of(text_of(admin.get("/appointments/new")))
    assert ("If you give the customer’s email address, a confirmation with a calendar invitation is "
            "written for them; it waits in the outbox, because no mail server is set up") in form_words
    appointment_id = _booked(admin, staff)
    words = words_of(text_of(admin.get(f"/appointments/{appointment_id}")))
    assert ("The confirmation to Chloé Lefèvre (chloe@example.com) waits in the outbox, because no mail "
            "server is set up (CALSYNC_SMTP_URL).") in words
    other = _booked(admin, staff, start="14:00", end="14:30", customer_email="")
    assert "Chloé Lefèvre has no email address: let them know yourself." in words_of(
        text_of(admin.get(f"/appointments/{other}")))


class TestWithAMailServer:
    @pytest.fixture
    def smtp(self) -> Iterator[SmtpSink]:
        server = SmtpSink()
        server.start()
        yield server
        server.stop()

    @pytest.fixture
    def settings(self, settings: Settings, smtp: SmtpSink) -> Settings:
        return with_mail(settings, allow_private_networks=True, smtp_url=smtp.url)

    def test_the_customer_is_emailed_a_confirmation(self, app: Flask, admin: Browser,
                                                    staff: dict[str, Any]) -> None:
        assert ("If you give the customer’s email address, they are emailed a confirmation with a "
                "calendar invitation.") in words_of(text_of(admin.get("/appointments/new")))
        appointment_id = _booked(admin, staff)
        assert ("Chloé Lefèvre is emailed a confirmation with a calendar invitation at chloe@example.com."
                in words_of(text_of(admin.get(f"/appointments/{appointment_id}"))))


# 6, 7 ----------------------------------------------------------------------------------------


def test_an_end_before_the_start_is_said_plainly(admin: Browser, staff: dict[str, Any]) -> None:
    resp = admin.post("/appointments/new", form(staff["id"], workday(), start="11:00", end="10:00"))
    assert resp.status_code == 422
    assert "Not booked: The end time must be after the start time." in words_of(text_of(resp))


def test_book_for_a_blocked_staff_member_says_not_booked(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    conn = api.post(f"/staff/{staff['id']}/connections", {
        "kind": "ics", "url": calendar_http.base_url + "/gone.ics", "name": "Work"}).get_json()
    for _ in range(3):
        with app.extensions["calsync"].sessions.begin() as s:
            s.get(Connection, conn["id"]).lease_until = None
        api.post(f"/connections/{conn['id']}/sync")
    before = words_of(text_of(admin.get(f"/appointments/new?staff={staff['id']}")))
    assert "Not booked:" not in before and "Zoë Müller can't be booked" in before
    resp = admin.post("/appointments/new", form(staff["id"], workday()))
    assert resp.status_code == 422
    note = words_of(text_of(resp).split('data-field="unbookable"', 1)[1].split("</p>", 1)[0])
    assert note.startswith("> Not booked: Zoë Müller can't be booked")


# 10 ------------------------------------------------------------------------------------------


def test_history_times_name_their_zone(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    appointment_id = _booked(admin, staff)
    html = text_of(admin.get(f"/appointments/{appointment_id}"))
    when = re.search(r'data-field="history-when">([^<]+)<', html)
    assert when and re.fullmatch(r"\d\d \w{3} \d{4}, \d\d:\d\d CES?T", when.group(1)), when


def test_settings_saved_mentions_feeds_only_when_a_feed_setting_changed(admin: Browser) -> None:
    def save(**changes: str) -> str:
        fields = settings_form(text_of(admin.get("/settings"))) | changes
        resp = admin.post("/settings", fields, page="/settings")
        assert resp.status_code == 302
        html = text_of(admin.get("/settings"))
        return words_of(html.split('id="settings-saved"', 1)[1].split("</div>", 1)[0])

    assert "Settings saved; nothing had changed." in save()
    said = save(alert_after_failures="7")
    assert "Settings saved." in said and "Feeds show" not in said
    assert "Settings saved. Feeds show the change at their next refresh." in save(feed_refresh_minutes="30")


def test_the_staff_list_is_sorted_as_a_reader_expects(api: Api, admin: Browser) -> None:
    for name in ("Zoë Müller", "Łukasz Żółć", "émile Blanc", "Anna Berg", "Søren Ødegård", "zack Ames"):
        api.make_staff(name=name, email=f"{len(name)}-{ord(name[0])}@example.com")
    html = text_of(admin.get("/staff"))
    shown = [unescape(n) for n in re.findall(r'<a class="cell-title" href="/staff/\d+">([^<]+)</a>', html)]
    assert shown == ["Anna Berg", "émile Blanc", "Łukasz Żółć", "Søren Ødegård", "zack Ames", "Zoë Müller"]


def test_the_sync_health_link_counts_the_failing_calendars(
    app: Flask, admin: Browser, api: Api, staff: dict[str, Any], calendar_http: CalendarHTTPServer
) -> None:
    nav = text_of(admin.get("/")).split('class="main-nav"', 1)[1].split("</nav>", 1)[0]
    assert "failing" not in nav
    conn = api.post(f"/staff/{staff['id']}/connections", {
        "kind": "ics", "url": calendar_http.base_url + "/gone.ics", "name": "Work"}).get_json()
    api.post(f"/connections/{conn['id']}/sync")
    nav = text_of(admin.get("/")).split('class="main-nav"', 1)[1].split("</nav>", 1)[0]
    assert re.search(r'>Sync health <span class="nav-count">1<span class="sr-only"> failing</span>'
                     r'</span></a>', nav), nav


# 11 ------------------------------------------------------------------------------------------


def test_settings_options_are_short_enough_for_a_phone() -> None:
    # About 36 characters fit the phone's 333 px list (measured in the browser, in
    # tests/system/test_browser_second_walkthrough.py); the help text below each says the rest.
    longest = max((label for labels in CHOICE_LABELS.values() for label in labels.values()), key=len)
    assert len(longest) <= 36, longest
