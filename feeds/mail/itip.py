"""iTIP (RFC 5546) for one appointment: REQUEST for a booking or a move, CANCEL for a cancellation.

The customer's calendar app matches our messages to the event it already has by UID and keeps
the one with the highest SEQUENCE (RFC 5546 §2.1.4), which is why every change of time or
status bumps SEQUENCE (feeds/booking.py) and why a cancellation is a CANCEL: a REQUEST with
STATUS:CANCELLED would leave the event in the customer's calendar (PROTOCOL.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from icalendar import Calendar, Event, vCalAddress, vText

from calsync.feeds.mail.mime import one_line
from calsync.models import Appointment

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


def _calendar_address(address: str, name: str) -> vCalAddress:
    value = vCalAddress(f"mailto:{address}")  # RFC 6047 §2.3: mailto: URIs
    # icalendar quotes parameter values and encodes line breaks (RFC 6868); cleaning the
    # name as well keeps stray control characters out of the customer's calendar entirely.
    value.params["CN"] = vText(one_line(name, 100))
    return value


def build_itip(appointment: Appointment, method: str, organizer: Organizer, summary: str,
               description: str) -> bytes:
    """The VCALENDAR of an iTIP REQUEST or CANCEL for the appointment as it is now."""
    if method not in ("REQUEST", "CANCEL"):
        raise ValueError(f"unsupported iTIP method {method!r}")
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    event = Event()
    event.add("uid", appointment.uid)
    event.add("sequence", appointment.sequence)
    # With a METHOD, DTSTAMP is when this iTIP message was created (RFC 5545 §3.8.7.2): the
    # change it announces, not the delivery attempt, so a retried email is the same message.
    event.add("dtstamp", appointment.updated_at.astimezone(UTC))
    event.add("created", appointment.created_at.astimezone(UTC))
    event.add("last-modified", appointment.updated_at.astimezone(UTC))
    # UTC needs no VTIMEZONE (PROTOCOL.md); the text part shows the local time and zone.
    event.add("dtstart", appointment.start_at.astimezone(UTC))
    event.add("dtend", appointment.end_at.astimezone(UTC))
    event.add("summary", summary)
    event.add("description", description)
    if appointment.location:
        event.add("location", appointment.location)
    event.add("transp", "OPAQUE")
    # RFC 5546 §3.2.5: a CANCEL of the whole event carries STATUS:CANCELLED.
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("organizer", _calendar_address(organizer.address, organizer.name))
    customer = appointment.customer
    assert customer.email, "only customers with an email address are sent iTIP messages"
    attendee = _calendar_address(customer.email, customer.name)
    attendee.params["CUTYPE"] = "INDIVIDUAL"
    attendee.params["ROLE"] = "REQ-PARTICIPANT"
    # The customer chose the slot when booking, so they have accepted it. RSVP=FALSE because
    # no REPLY is expected: nothing reads replies to CALSYNC_MAIL_FROM (RFC 5546 §3.2.2 lets
    # the organizer set both; calendar apps then show the event as accepted, without buttons).
    attendee.params["PARTSTAT"] = "ACCEPTED"
    attendee.params["RSVP"] = "FALSE"
    # RFC 5546 §3.2.5: a CANCEL lists the attendees it is sent to.
    event.add("attendee", attendee)
    cal.add_component(event)
    return cal.to_ical()
