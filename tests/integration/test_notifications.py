"""Customer emails (iTIP over iMIP) and alert emails, written into the outbox in the change's
transaction and delivered to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.accounts.admins import create_admin, get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.mail.mime import Party, UnsafeHeaderError, build_message, check_header, one_line
from calsync.feeds.mail.notifications import queue_customer_email
from calsync.feeds.scheduling.booking import CustomerDetails, book_appointment
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Alert, Appointment, Connection, OutboxEmail
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY
from tests.mail_helpers import deliver, outbox, parse_imip, parse_message, with_mail, written
from tests.servers import CalendarHTTPServer, SmtpSink

MONDAY = "2030-01-07T{}:00+01:00"  # a Monday in winter: Europe/Berlin is CET, UTC+1


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, smtp_url=smtp_server.url, mail_from="bookings@salon.example",
                     allow_private_networks=True)


def test_book_move_cancel_send_request_request_cancel_with_one_uid(
    app: Flask, api: Api, smtp_server: SmtpSink
) -> None:
    staff = api.make_staff()
    appt = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30")).get_json()
    moved = api.patch(f"/appointments/{appt['id']}", {"start": MONDAY.format("11:00"),
                                                      "end": MONDAY.format("11:45")})
    assert moved.status_code == 200
    assert api.post(f"/appointments/{appt['id']}/cancel").status_code == 200
    # Written as drafts (feeds/mail/drafts.py): each says what was true at its change, although
    # the appointment has moved and been cancelled since (the times asserted below).
    drafts = outbox(app)
    assert all(e.message is None and e.draft is not None for e in drafts)

    assert deliver(app).sent == 3
    # Once sent, a row holds the very message that went out, and the draft is gone.
    assert [(e.message, e.draft) for e in outbox(app)] == [(m.data, None) for m in smtp_server.messages]
    assert [written(e) for e in drafts] == [m.data for m in smtp_server.messages]  # built alike
    assert [m.rcpt_tos for m in smtp_server.messages] == [["chloe@example.com"]] * 3
    assert {m.mail_from for m in smtp_server.messages} == {"bookings@salon.example"}
    mails = [parse_imip(m.data) for m in smtp_server.messages]

    assert [m.method for m in mails] == ["REQUEST", "REQUEST", "CANCEL"]
    # RFC 6047 §2.4: the Content-Type's method parameter is the METHOD property.
    assert [m.content_type_method for m in mails] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(m.event["UID"]) for m in mails] == [appt["uid"]] * 3
    assert [int(m.event["SEQUENCE"]) for m in mails] == [0, 1, 2]
    assert [m.vevent.uid.value for m in mails] == [appt["uid"]] * 3
    assert [int(m.vevent.sequence.value) for m in mails] == [0, 1, 2]
    assert [str(m.event["STATUS"]) for m in mails] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]
    starts = [m.event.decoded("DTSTART") for m in mails]
    assert starts[0] == datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    assert starts[1] == datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
    assert [m.vevent.dtstart.value for m in mails][1] == datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
    for m in mails:
        assert str(m.event["ORGANIZER"]).lower() == "mailto:bookings@salon.example"
        assert m.event["ORGANIZER"].params["CN"] == "Test Salon"
        attendee = m.event["ATTENDEE"]
        assert str(attendee).lower() == "mailto:chloe@example.com"
        assert attendee.params["CN"] == "Chloé Lefèvre"
        assert attendee.params["PARTSTAT"] == "ACCEPTED" and attendee.params["RSVP"] == "FALSE"
        assert m.message["From"].addresses[0].addr_spec == "bookings@salon.example"
        assert m.message["To"].addresses[0].display_name == "Chloé Lefèvre"
        assert m.message["Message-ID"]
        assert "Chloé" in m.text and "Chloé" in m.html
    # Times in the staff member's zone, named.
    assert "Monday 7 January 2030, 10:00–10:30 CET (Europe/Berlin)" in mails[0].text
    assert "Monday 7 January 2030, 11:00–11:45 CET (Europe/Berlin)" in mails[1].text
    assert "10:00–10:30" in mails[1].text  # where it was
    assert "11:00–11:45 CET (Europe/Berlin)" in mails[1].html
    assert "confirmed" in mails[0].text and "moved" in mails[1].text and "cancelled" in mails[2].text
    assert [m.message["Subject"] for m in mails] == [
        "Confirmed: Haircut on Mon 7 Jan 2030, 10:00 CET",
        "Moved: Haircut on Mon 7 Jan 2030, 11:00 CET",
        "Cancelled: Haircut on Mon 7 Jan 2030, 11:00 CET",
    ]
    # Delivered means marked sent: a second run sends nothing.
    assert deliver(app).sent == 0
    assert [e.status for e in outbox(app)] == ["sent"] * 3


def test_the_email_is_written_with_the_change_and_only_then(app: Flask, api: Api) -> None:
    staff = api.make_staff()
    appt = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30")).get_json()
    [row] = outbox(app)
    assert (row.kind, row.method, row.status, row.attempts) == ("booked", "REQUEST", "pending", 0)
    assert (row.appointment_id, row.uid, row.sequence) == (appt["id"], appt["uid"], 0)
    assert row.dedupe_key == f"{appt['uid']}:0:booked"
    assert row.to_address == "chloe@example.com"
    # A refused booking (the slot is taken) rolls back, email included.
    taken = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30"))
    assert taken.status_code == 409
    # A move to the same time changes nothing and tells nobody.
    api.patch(f"/appointments/{appt['id']}", {"start": MONDAY.format("10:00"),
                                              "end": MONDAY.format("10:30")})
    assert len(outbox(app)) == 1


def test_the_same_change_is_never_queued_twice(app: Flask, api: Api) -> None:
    staff = api.make_staff()
    appt = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30")).get_json()
    with app.extensions["calsync"].sessions.begin() as s:
        appointment = s.get(Appointment, appt["id"])
        assert queue_customer_email(s, appointment, "booked", "api") is None
    assert len(outbox(app)) == 1


def test_no_email_without_an_address_or_for_demo_data(app: Flask, api: Api) -> None:
    staff = api.make_staff()
    resp = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30"),
                    customer={"name": "Walk-in", "phone": "+49 30 1"})
    assert resp.status_code == 201
    assert api.post(f"/appointments/{resp.get_json()['id']}/cancel").status_code == 200
    with app.extensions["calsync"].sessions.begin() as s:
        company = get_or_create_company(s)
        book_appointment(s, company, staff_id=staff["id"], start=datetime(2030, 1, 7, 12, tzinfo=UTC),
                         end=datetime(2030, 1, 7, 13, tzinfo=UTC), service="Colour",
                         customer=CustomerDetails("Demo Kundin", "demo@example.com"), source="demo")
    assert outbox(app) == []


def test_a_line_break_in_the_customer_name_injects_no_header(
    app: Flask, api: Api, smtp_server: SmtpSink
) -> None:
    staff = api.make_staff()
    evil = "Eve\r\nBcc: victim@example.org\r\nX-Injected: yes\nATTENDEE:mailto:victim@example.org"
    resp = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30"),
                    customer={"name": evil, "email": "eve@example.com"}, service="Cut\r\nX-Evil: 1")
    assert resp.status_code == 422  # the API refuses names on more than one line (issue 13)
    with app.extensions["calsync"].sessions.begin() as s:  # a path that does not check them
        book_appointment(s, get_or_create_company(s), staff_id=staff["id"],
                         start=datetime.fromisoformat(MONDAY.format("10:00")),
                         end=datetime.fromisoformat(MONDAY.format("10:30")), service="Cut\r\nX-Evil: 1",
                         customer=CustomerDetails(evil, "eve@example.com"))
    deliver(app)
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["eve@example.com"]
    msg = parse_message(received.data)
    assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["X-Evil"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.com"]
    header_block = received.data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in header_block and b"\r\nX-Injected" not in header_block
    imip = parse_imip(received.data)
    attendees = imip.event.get("ATTENDEE")
    assert not isinstance(attendees, list)  # still exactly one attendee
    assert str(attendees).lower() == "mailto:eve@example.com"


def test_a_line_break_in_a_name_makes_no_line_of_the_body(app: Flask, api: Api) -> None:
    """Names that reach the database with a line break (written before the API refused them, or
    by a path other than the API) used to keep it in the plain-text body, where the customer's
    line could read like a header or like our own text. Every part gets them on one line."""
    staff = api.make_staff()
    evil = "Eve\r\nBcc: victim@example.org\r\nX-Injected: yes\nATTENDEE:mailto:victim@example.org"
    with app.extensions["calsync"].sessions.begin() as s:
        company = get_or_create_company(s)
        book_appointment(s, company, staff_id=staff["id"], start=datetime(2030, 1, 7, 12, tzinfo=UTC),
                         end=datetime(2030, 1, 7, 13, tzinfo=UTC), service="Cut\r\nX-Evil: 1",
                         customer=CustomerDetails(evil, "eve@example.com"))
    [email] = outbox(app)
    imip = parse_imip(written(email))
    for part in (imip.text, imip.html, str(imip.message["Subject"])):
        lines = [line.strip() for line in part.splitlines()]
        assert not any(line.startswith(("Bcc:", "X-Injected", "ATTENDEE", "X-Evil")) for line in lines), part
    assert "Eve Bcc: victim@example.org X-Injected: yes ATTENDEE:mailto:victim@example.org" in imip.text


def test_html_part_escapes_what_customers_typed(app: Flask, api: Api) -> None:
    staff = api.make_staff()
    api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30"),
             customer={"name": "<script>alert(1)</script>", "email": "x@example.com"})
    imip = parse_imip(written(outbox(app)[0]))
    assert "<script>" not in imip.html and "&lt;script&gt;" in imip.html
    assert "<script>alert(1)</script>" in imip.text  # plain text is shown, never rendered


def test_times_are_shown_in_the_staff_members_zone(app: Flask, api: Api) -> None:
    staff = api.make_staff(timezone="America/New_York", working_hours=ALL_DAY)
    api.book(staff["id"], "2030-07-01T15:00:00Z", "2030-07-01T16:00:00Z")
    imip = parse_imip(written(outbox(app)[0]))
    assert "Monday 1 July 2030, 11:00–12:00 EDT (America/New_York)" in imip.text
    assert imip.event.decoded("DTSTART") == datetime(2030, 7, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize("name", [
    "Eve Bcc: victim@example.org X-Injected: yes ATTENDEE:mailto:victim@example.org, and more words",
    "Smith, John",
    '"Quoted" and \\back\\slashes <angle@brackets.example>',
    ("Zoë-Ŝtéphanie 山田 花子 🎉 " * 8).strip(),
    "a" * 300,
    "\r\n\t",
    "=?utf-8?q?Bcc=3A_victim=40example=2Eorg?=",
])
def test_any_name_gives_exactly_one_recipient_and_no_extra_header(name: str) -> None:
    data = build_message(sender=Party(name, "bookings@salon.example"),
                         recipient=Party(name, "eve@example.com"), subject=name, text="t",
                         html="<p>h</p>", date=datetime(2030, 1, 1, tzinfo=UTC))
    msg = parse_message(data)
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.com"]
    assert [a.addr_spec for a in msg["From"].addresses] == ["bookings@salon.example"]
    assert sorted(msg.keys()) == sorted(["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                                         "MIME-Version", "Content-Type"])
    assert "victim@example.org" not in str(msg["Subject"]) or "Bcc: victim" in name
    if name == "Smith, John":  # short names with specials are quoted, not altered
        assert msg["To"].addresses[0].display_name == "Smith, John"


def test_header_guards() -> None:
    with pytest.raises(UnsafeHeaderError):
        check_header("Hi\r\nBcc: x@example.org")
    with pytest.raises(UnsafeHeaderError):
        check_header("Hi\nBcc: x@example.org")
    assert one_line("Eve\r\nBcc:\tx\x00y") == "Eve Bcc: x y"


# --- alerts -----------------------------------------------------------------------------------


def _failing_connection(app: Flask, calendar_http: CalendarHTTPServer) -> tuple[int, str]:
    services = app.extensions["calsync"]
    url = calendar_http.add("/cal.ics", b"down", status=503, etag=False)
    with services.sessions.begin() as s:
        company = get_or_create_company(s, "Alert Co", "Europe/Berlin")
        create_admin(s, company, "boss@salon.example", "a-long-admin-password", profile="fast-for-tests")
        create_admin(s, company, "Deputy@Salon.example", "another-long-password", profile="fast-for-tests")
        staff = create_staff(s, company, name="Zoë", email="zoe@salon.example",
                             timezone="Europe/Berlin", working_hours=ALL_DAY)
        conn = create_connection(s, company, services.vault, staff.id,
                                 ConnectionInput(kind="ics", url=url, name="Zoë's iCloud"),
                                 allow_private=True)
        return conn.id, url


def _sync_times(app: Flask, connection_id: int, n: int) -> None:
    services = app.extensions["calsync"]
    for _ in range(n):
        with services.sessions.begin() as s:  # due again at once, as the scheduler would see it
            s.get(Connection, connection_id).lease_until = None
        sync_connection(services.sync, connection_id)


def test_alerts_are_emailed_once_per_episode(
    app: Flask, calendar_http: CalendarHTTPServer, smtp_server: SmtpSink
) -> None:
    cid, _ = _failing_connection(app, calendar_http)
    # Never synced yet, the calendar is new: whoever added it saw it checked on the page, so
    # its failures open an alert shown on the pages, but no email (issue 15).
    _sync_times(app, cid, 7)
    with app.extensions["calsync"].sessions() as s:
        assert s.scalar(select(Alert.kind).where(Alert.resolved_at.is_(None))) == "failing"
    assert outbox(app) == []
    calendar_http.add("/cal.ics", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nEND:VCALENDAR\r\n")
    _sync_times(app, cid, 1)  # synced once: from now on its failures are emailed
    calendar_http.add("/cal.ics", b"down", status=503, etag=False)
    _sync_times(app, cid, 2)
    assert outbox(app) == []  # not yet an alert (alert_after_failures = 3)
    _sync_times(app, cid, 5)
    alerts = [e for e in outbox(app) if e.kind == "alert"]
    assert sorted(e.to_address for e in alerts) == ["boss@salon.example", "deputy@salon.example",
                                                    "zoe@salon.example"]
    assert deliver(app).sent == 3
    for mail in smtp_server.messages:
        msg = parse_message(mail.data)
        assert msg["Subject"] == "Calendar sync is failing: Zoë's iCloud (Zoë)"
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",)).get_content()
        assert "failed to sync 3 times in a row" in text and "HTTP 503" in text
    # Recovery closes the episode; a new failure streak is a new alert and new emails.
    calendar_http.add("/cal.ics", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nEND:VCALENDAR\r\n")
    _sync_times(app, cid, 1)
    calendar_http.add("/cal.ics", b"down", status=503, etag=False)
    _sync_times(app, cid, 3)
    with app.extensions["calsync"].sessions() as s:
        assert s.scalar(select(Alert).where(Alert.resolved_at.is_(None))) is not None
        assert len(list(s.scalars(select(Alert)))) == 3  # the new calendar's, and two episodes
    assert len([e for e in outbox(app) if e.kind == "alert"]) == 6


def test_stale_alerts_are_emailed_once(app: Flask, calendar_http: CalendarHTTPServer) -> None:
    from calsync.feeds.calendars.health import mark_stale

    cid, _ = _failing_connection(app, calendar_http)
    services = app.extensions["calsync"]
    now = datetime.now(UTC)
    with services.sessions.begin() as s:
        conn = s.get(Connection, cid)
        conn.status, conn.last_success_at = "ok", now - timedelta(hours=30)
    for _ in range(3):
        with services.sessions.begin() as s:
            mark_stale(s, now)
    rows = [e for e in outbox(app) if e.kind == "alert"]
    assert len(rows) == 3
    assert all(r.subject.startswith("Calendar has not synced for a while") for r in rows)
    with services.sessions() as s:
        alert_id = s.scalar(select(Alert.id))
        keys = set(s.scalars(select(OutboxEmail.dedupe_key)))
    assert f"alert:{alert_id}:zoe@salon.example" in keys
