"""Customer emails stored as drafts: the values a message shows, written into the outbox row in
the transaction of the change (feeds/mail/notifications.py), and built into the MIME bytes it
is sent as when it is delivered (feeds/mail/delivery.py) or read.

Why: building a customer's email — the iTIP object with icalendar, the MIME tree and its
quoted-printable and base64 parts — was about a third of every booking, move and cancellation
(~3.5 ms of a ~12 ms reschedule PATCH; issue 17, docs/scale.md). The worker does it instead,
off the request. A draft holds everything the message depends on, its Message-ID and Date
included, so it builds to the same bytes whenever and however often it is built; the
templates are the code's, so an email waiting through an upgrade is sent in the new wording.

A draft is JSON (datetimes as ISO 8601 with their offset); `version` names its shape, and
compose() refuses a shape it does not know rather than send a wrong message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from calsync.feeds.errors import CalsyncError
from calsync.feeds.mail.itip import Organizer, build_itip
from calsync.feeds.mail.mime import CalendarPart, Party, build_message, render

VERSION = 1
_TIMES = ("created_at", "updated_at", "start_at", "end_at")


class DraftError(CalsyncError):
    """A stored draft this code cannot build (written by a newer calsync, or damaged)."""


@dataclass(frozen=True)
class Customer:
    name: str
    email: str | None


@dataclass(frozen=True)
class Booked:
    """The appointment as the email shows it (feeds.mail.itip.Booked), frozen at the change."""

    uid: str
    sequence: int
    created_at: datetime
    updated_at: datetime
    start_at: datetime
    end_at: datetime
    location: str | None
    customer: Customer


def appointment_draft(*, sender: Party, recipient: Party, subject: str, date: datetime, message_id: str,
                      template: str, context: dict[str, Any], method: str, organizer: Organizer,
                      summary: str, description: str, booked: Booked) -> dict[str, Any]:
    """The draft of an iTIP email: text and HTML from `template` (.txt, .html) with `context`
    (plain JSON values), and the calendar part for `booked`."""
    return {
        "version": VERSION,
        "sender": [sender.name, sender.address],
        "recipient": [recipient.name, recipient.address],
        "subject": subject,
        "date": date.isoformat(),
        "message_id": message_id,
        "template": template,
        "context": context,
        "itip": {
            "method": method,
            "organizer": [organizer.name, organizer.address],
            "summary": summary,
            "description": description,
            "appointment": {
                "uid": booked.uid, "sequence": booked.sequence, "location": booked.location,
                "customer": [booked.customer.name, booked.customer.email],
                **{name: getattr(booked, name).isoformat() for name in _TIMES},
            },
        },
    }


def compose(draft: dict[str, Any]) -> bytes:
    """The message of a draft, as it is sent."""
    if not isinstance(draft, dict) or draft.get("version") != VERSION:
        version = draft.get("version") if isinstance(draft, dict) else None
        raise DraftError(f"This email's draft has a shape this version of calsync cannot build "
                         f"(version {version!r}); upgrade calsync to send it.")
    try:
        context = draft["context"]
        calendar = None
        itip = draft.get("itip")
        if itip is not None:
            appt = itip["appointment"]
            booked = Booked(
                uid=appt["uid"], sequence=appt["sequence"], location=appt["location"],
                customer=Customer(*appt["customer"]),
                **{name: datetime.fromisoformat(appt[name]) for name in _TIMES},
            )
            calendar = CalendarPart(itip["method"], build_itip(
                booked, itip["method"], Organizer(*itip["organizer"]), summary=itip["summary"],
                description=itip["description"]))
        return build_message(
            sender=Party(*draft["sender"]), recipient=Party(*draft["recipient"]),
            subject=draft["subject"], text=render(f"{draft['template']}.txt", **context),
            html=render(f"{draft['template']}.html", **context),
            date=datetime.fromisoformat(draft["date"]), calendar=calendar, message_id=draft["message_id"],
        )
    except (KeyError, TypeError) as exc:
        raise DraftError(f"This email's draft is incomplete ({type(exc).__name__}: {exc}).") from exc
