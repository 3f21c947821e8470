"""Helpers for email tests: read the outbox, deliver it, and take a received iMIP message apart
(calendar part parsed by two independent parsers, as docs/protocol.md asks)."""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from typing import Any

import icalendar
import vobject
from flask import Flask
from sqlalchemy import select

from calsync.feeds.mail.delivery import DeliveryReport, MailContext, deliver_due
from calsync.feeds.settings import Settings
from calsync.models import OutboxEmail


def with_mail(settings: Settings, **changes: Any) -> Settings:
    """Settings with mail fields changed, validated as they would be from the environment."""
    return Settings.model_validate({**settings.model_dump(), **changes})


def outbox(app: Flask) -> list[OutboxEmail]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


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
