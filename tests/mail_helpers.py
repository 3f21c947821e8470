"""Helpers for email tests: read the outbox, deliver it, and take a received iMIP message apart
(calendar part parsed by two independent parsers, as docs/protocol.md asks)."""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from typing import Any

import icalendar
import vobject
from flask import Flask
from sqlalchemy import select

from calsync.feeds.mail.delivery import DeliveryReport, MailContext, deliver_due
from calsync.feeds.mail.drafts import Booked, Customer, appointment_draft
from calsync.feeds.mail.itip import Organizer
from calsync.feeds.mail.mime import Party, new_message_id
from calsync.feeds.mail.outbox import stored_message
from calsync.feeds.settings import Settings
from calsync.models import OutboxEmail


def with_mail(settings: Settings, **changes: Any) -> Settings:
    """Settings with mail fields changed, validated as they would be from the environment."""
    return Settings.model_validate({**settings.model_dump(), **changes})


def outbox(app: Flask) -> list[OutboxEmail]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def written(email: OutboxEmail) -> bytes:
    """The message an (unsealed) outbox row will be sent as: a customer's appointment email is
    stored as a draft and built here as delivery builds it (feeds/mail/drafts.py)."""
    return stored_message(None, email.message, email.message_sealed, email.draft)


def mail_context(app: Flask) -> MailContext:
    return app.extensions["calsync"].mail  # type: ignore[no-any-return]


def deliver(app: Flask, now: datetime | None = None) -> DeliveryReport:
    return deliver_due(mail_context(app), now=now)


@dataclass
class Imip:
    """One iTIP email taken apart."""

    message: EmailMessage
    text: str
    html: str
    content_type_method: str
    calendar: icalendar.Calendar
    event: icalendar.Event
    vevent: Any  # vobject's view of the same event

    @property
    def method(self) -> str:
        return str(self.calendar["METHOD"])


def parse_message(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def parse_imip(data: bytes) -> Imip:
    msg = parse_message(data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p for p in msg.iter_parts()}
    assert list(parts) == ["text/plain", "text/html", "text/calendar"], list(parts)
    cal_part = parts["text/calendar"]
    assert cal_part.get_content_charset() == "utf-8"
    raw = cal_part.get_payload(decode=True)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends kept
    calendar = icalendar.Calendar.from_ical(raw)
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    vcal = vobject.readOne(raw.decode("utf-8"))
    vevents = list(vcal.vevent_list)
    assert len(vevents) == 1
    assert vcal.method.value == str(calendar["METHOD"])
    return Imip(
        message=msg, text=parts["text/plain"].get_content(), html=parts["text/html"].get_content(),
        content_type_method=str(cal_part.get_param("method")), calendar=calendar, event=events[0],
        vevent=vevents[0],
    )


DRAFT_START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
DRAFT_DATE = datetime(2030, 1, 5, 8, 30, 12, 345678, tzinfo=timezone(timedelta(hours=1)))


def sample_draft(customer: str = "Chloé Lefèvre", location: str | None = "Salon 1") -> dict[str, Any]:
    """An appointment email's draft, as notifications.queue_customer_email writes one."""
    booked = Booked(uid="u-1@calsync", sequence=3, created_at=DRAFT_START - timedelta(days=2),
                    updated_at=DRAFT_DATE, start_at=DRAFT_START,
                    end_at=DRAFT_START + timedelta(minutes=30), location=location,
                    customer=Customer(customer, "chloe@example.com"))
    context = {"kind": "rescheduled", "subject": "Moved: Haircut", "company": "Salon Sommer & Söhne",
               "customer": customer, "service": "Haircut", "staff": "Zoë", "location": location,
               "when": "Monday 7 January 2030, 10:00–10:30 CET (Europe/Berlin)",
               "previous": "Monday 7 January 2030, 08:00–08:30 CET (Europe/Berlin)"}
    return appointment_draft(
        sender=Party("Salon Sommer & Söhne", "bookings@salon.example"),
        recipient=Party(customer, "chloe@example.com"), subject="Moved: Haircut", date=booked.updated_at,
        message_id=new_message_id("bookings@salon.example"), template="appointment", context=context,
        method="REQUEST", organizer=Organizer("Salon Sommer & Söhne", "bookings@salon.example"),
        summary="Haircut – Salon Sommer & Söhne", description="Haircut with Zoë (Salon Sommer & Söhne).",
        booked=booked)
