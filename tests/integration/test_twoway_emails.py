"""The whole loop with real servers: book → the event appears in the staff member's calendar →
they move it → sync → the booking moves and the customer's update (same UID, new SEQUENCE)
arrives at the SMTP server → they delete it → cancelled, and the CANCEL arrives."""

from __future__ import annotations

from datetime import UTC

import pytest
from flask import Flask

from calsync.feeds.settings import Settings
from tests.conftest import Api
from tests.linked_helpers import Linked, at
from tests.mail_helpers import deliver, parse_imip, with_mail
from tests.servers import CalDAVServer, SmtpSink


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, allow_private_networks=True,
                     smtp_url=f"smtp://{smtp_server.host}:{smtp_server.port}",
                     mail_from="bookings@salon.example")


def customer_mail(smtp: SmtpSink) -> list:  # type: ignore[type-arg]
    return [parse_imip(m.data) for m in smtp.messages if m.rcpt_tos == ["chloe@example.com"]]


def test_book_move_delete_in_the_calendar_updates_the_customer(
    app: Flask, api: Api, caldav_server: CalDAVServer, smtp_server: SmtpSink
) -> None:
    linked = Linked(app, api, caldav_server)
    appt = linked.book(at(2, 10))
    linked.sync()
    assert linked.event_times(appt["uid"]) == (at(2, 10), at(2, 11))
    linked.move_in_calendar(appt["uid"], at(3, 15))
    linked.sync()
    deliver(app)
    booked, moved = customer_mail(smtp_server)
    for mail in (booked, moved):
        assert mail.method == "REQUEST" and mail.content_type_method == "REQUEST"
        assert str(mail.event["UID"]) == appt["uid"] == mail.vevent.uid.value
    assert (booked.event["SEQUENCE"], moved.event["SEQUENCE"]) == (0, 1)
    assert int(moved.vevent.sequence.value) == 1
    assert moved.event.decoded("DTSTART").astimezone(UTC) == at(3, 15)
    assert moved.vevent.dtstart.value.astimezone(UTC) == at(3, 15)
    linked.event(appt["uid"]).delete()
    linked.sync()
    deliver(app)
    *_, cancelled = customer_mail(smtp_server)
    assert cancelled.method == "CANCEL" and cancelled.content_type_method == "CANCEL"
    assert str(cancelled.event["UID"]) == appt["uid"] and cancelled.event["SEQUENCE"] == 2
    assert str(cancelled.event["STATUS"]) == "CANCELLED"
    assert len(customer_mail(smtp_server)) == 3  # one per applied change, none twice
    deliver(app)
    assert len(customer_mail(smtp_server)) == 3


def test_a_conflict_tells_the_staff_member_and_not_the_customer(
    app: Flask, api: Api, radicale: CalDAVServer, smtp_server: SmtpSink
) -> None:
    linked = Linked(app, api, radicale)
    first = linked.book(at(2, 10))
    linked.book(at(2, 12))
    linked.sync()
    linked.move_in_calendar(first["uid"], at(2, 12, 30))
    linked.sync()
    deliver(app)
    to_staff = [m for m in smtp_server.messages if m.rcpt_tos == [linked.staff["email"]]]
    assert len(to_staff) == 1
    body = to_staff[0].message.get_body(preferencelist=("plain",)).get_content()
    assert "was not applied" in body and "already has an appointment" in body
    assert len(customer_mail(smtp_server)) == 2  # the two bookings, no update for the move
    linked.sync()
    deliver(app)
    assert len([m for m in smtp_server.messages if m.rcpt_tos == [linked.staff["email"]]]) == 1
