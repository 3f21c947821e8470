"""iTIP (RFC 5546) for one appointment: REQUEST for a booking or a move, CANCEL for a cancellation.

The customer's calendar app matches our messages to the event it already has by UID and keeps
the one with the highest SEQUENCE (RFC 5546 §2.1.4), which is why every change of time or
status bumps SEQUENCE (feeds/booking.py) and why a cancellation is a CANCEL: a REQUEST with
STATUS:CANCELLED would leave the event in the customer's calendar (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from icalendar import Calendar

from calsync.feeds.ical.vevent import Party, Scheduled, build_vevent
from calsync.feeds.mail.mime import one_line

PRODID = "-//calsync//calsync itip 1.0//EN"
# Appointment change → iTIP method. Other changes (e.g. "restored": the staff calendar put back
# as it was) do not change what the customer has, so they send nothing.
METHODS = {"booked": "REQUEST", "rescheduled": "REQUEST", "cancelled": "CANCEL"}


@dataclass(frozen=True)
class Organizer:
    """The company, as ORGANIZER: its name and the address emails come from (CALSYNC_MAIL_FROM).

    Calendar apps only apply updates whose sender is the event's ORGANIZER (RFC 6047 §3), so
    ORGANIZER and the From header are the same address.
    """

    name: str
    address: str


def _party(address: str, name: str, *params: tuple[str, str]) -> Party:
    # icalendar quotes parameter values and encodes line breaks (RFC 6868); cleaning the
    # name as well keeps stray control characters out of the customer's calendar entirely.
    return Party(address, one_line(name, 100), params)


class _Customer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str | None: ...


class Booked(Scheduled, Protocol):
    """What build_itip reads: an appointment (models.Appointment) or its snapshot in an email
    draft (feeds/mail/drafts.py)."""

    @property
    def customer(self) -> _Customer: ...


def build_itip(appointment: Booked, method: str, organizer: Organizer, summary: str,
               description: str) -> bytes:
    """The VCALENDAR of an iTIP REQUEST or CANCEL for the appointment as it is now."""
    if method not in METHODS.values():
        raise ValueError(f"unsupported iTIP method {method!r}")
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    customer = appointment.customer
    assert customer.email, "only customers with an email address are sent iTIP messages"
    # The customer chose the slot when booking, so they have accepted it. RSVP=FALSE because
    # no REPLY is expected: nothing reads replies to CALSYNC_MAIL_FROM (RFC 5546 §3.2.2 lets
    # the organizer set both; calendar apps then show the event as accepted, without buttons).
    # A CANCEL lists the attendees it is sent to (RFC 5546 §3.2.5).
    attendee = _party(customer.email, customer.name, ("CUTYPE", "INDIVIDUAL"),
                      ("ROLE", "REQ-PARTICIPANT"), ("PARTSTAT", "ACCEPTED"), ("RSVP", "FALSE"))
    # Times in UTC need no VTIMEZONE (docs/protocol.md); the text part shows the local time and zone.
    cal.add_component(build_vevent(
        appointment, summary=summary, description=description, method=method,
        organizer=_party(organizer.address, organizer.name), attendee=attendee,
    ))
    return cal.to_ical()
