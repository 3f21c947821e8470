"""Where an appointment has reached, in words an admin can act on: its copy in each of the staff
member's writable calendars (written, waiting and until when, failed and why) and the customer's
emails about it (the outbox state). Replaces the UID and SEQUENCE the page used to show, which
only mean something to a calendar client."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.scheduling.calendar_copies import target_connections
from calsync.models import (
    STATUS_CONFIRMED,
    Appointment,
    Connection,
    LinkedItem,
    LinkedItemState,
    OutboxEmail,
    OutboxKind,
    OutboxStatus,
    SyncMode,
)
from calsync.web.formatting import local, time_ago

CUSTOMER_KINDS = (OutboxKind.BOOKED, OutboxKind.RESCHEDULED, OutboxKind.CANCELLED)
EMAIL_WHAT = {OutboxKind.BOOKED: "Booking confirmation", OutboxKind.RESCHEDULED: "Booking moved",
              OutboxKind.CANCELLED: "Cancellation"}


@dataclass
class CalendarCopy:
    """The appointment in one linked or additional calendar."""

    connection: Connection
    state: str  # written | waiting | failed | held | removed | absent: the badge
    label: str
    detail: Markup


@dataclass
class CustomerEmail:
    email: OutboxEmail
    what: str
    state: str  # sent | waiting | failed
    detail: Markup


def when_written(conn: Connection, tz: str) -> str:
    """When a change waiting for this calendar will be written there (the sync mode decides)."""
    if conn.sync_mode == SyncMode.REALTIME:
        return "at once (within a minute)"
    if conn.sync_mode == SyncMode.MANUAL:
        return "when someone presses Sync now for this calendar"
    if conn.next_sync_at is None:
        return "at its next sync"
    return f"at its next sync, about {local(conn.next_sync_at, tz, '%H:%M on %d %b')}"


def calendar_copies(session: Session, appt: Appointment, tz: str) -> list[CalendarCopy]:
    items = {
        item.connection_id: item
        for item in session.scalars(select(LinkedItem).where(LinkedItem.appointment_id == appt.id))
    }
    out = []
    for conn in target_connections(session, appt.staff_id):
        item = items.get(conn.id)
        confirmed = appt.status == STATUS_CONFIRMED
        if item is None:
            # Linked after the booking was made, without copying existing bookings.
            out.append(CalendarCopy(conn, "absent", "Not in this calendar", (
                Markup("It was booked before this calendar was linked.") if confirmed else Markup(""))))
        elif item.state == LinkedItemState.SYNCED:
            out.append(CalendarCopy(
                conn, "written", "Written" if confirmed else "Marked as cancelled",
                Markup("Up to date since {}.").format(time_ago(item.updated_at))))
        elif item.state == LinkedItemState.DELETED:
            out.append(CalendarCopy(conn, "removed", "Removed", Markup("Taken out of the calendar.")))
        elif item.state == LinkedItemState.PENDING:
            out.append(CalendarCopy(conn, "waiting", "Waiting", Markup("{} {}.").format(
                "Written" if confirmed else "Updated", when_written(conn, tz))))
        elif item.state == LinkedItemState.ERROR:
            out.append(CalendarCopy(conn, "failed", "Failed", Markup(
                "{} It is tried again {}.").format(
                    item.last_error or "The calendar refused it.", when_written(conn, tz))))
        else:  # CONFLICT
            out.append(CalendarCopy(conn, "held", "On hold", Markup(
                "The calendar changed it in a way that was not applied; decide under Conflicts.")))
    return out


# What the message after a booking, a move or a cancellation says of the staff calendar: the
# change waiting for it, and the change there already (a realtime push can be that quick).
REACH_WORDS = {
    "booked": ("It is written to", "It is already in", "their feed shows it"),
    "moved": ("The new time is written to", "The new time is already in", "their feed shows the new time"),
    "cancelled": ("It is taken out of", "It is already out of", "their feed drops it"),
}


def reach_sentence(session: Session, appt: Appointment, tz: str, change: str = "booked") -> str:
    """When the change reaches the staff member's calendar, for the message after it: 'It is
    written to Zoë’s calendar ‘Work’ at once (within a minute).', or at its next sync and when
    that is; without a calendar bookings are written to, when their feed shows it."""
    waiting_words, done_words, feed = REACH_WORDS[change]
    copies = calendar_copies(session, appt, tz)
    if not copies:
        return (f"{appt.staff.name} has no calendar that bookings are written to; {feed} when "
                "their calendar app next refreshes it.")
    owner = f"{appt.staff.name}’s calendar"
    waiting = [f"‘{c.connection.name}’ {when_written(c.connection, tz)}"
               for c in copies if c.state == "waiting"]
    done = [f"‘{c.connection.name}’" for c in copies if c.state in ("written", "removed")]
    sentences = []
    if waiting:
        sentences.append(f"{waiting_words} {owner} {' and '.join(waiting)}.")
    if done:
        sentences.append(f"{done_words} {owner} {' and '.join(done)}.")
    return " ".join(sentences)


def customer_emails(session: Session, appt: Appointment) -> list[CustomerEmail]:
    rows = session.scalars(
        select(OutboxEmail)
        .where(OutboxEmail.appointment_id == appt.id, OutboxEmail.kind.in_(CUSTOMER_KINDS))
        .order_by(OutboxEmail.created_at, OutboxEmail.id)
    )
    out = []
    for email in rows:
        what = EMAIL_WHAT.get(email.kind, "Email")
        if email.status == OutboxStatus.SENT:
            out.append(CustomerEmail(email, what, "sent", Markup("Sent {} to {}.").format(
                time_ago(email.sent_at), email.to_address)))
        elif email.status == OutboxStatus.FAILED:
            out.append(CustomerEmail(email, what, "failed", Markup("Not delivered to {}: {}").format(
                email.to_address, email.last_error or "the mail server refused it.")))
        else:
            out.append(CustomerEmail(email, what, "waiting", Markup("Waiting in the outbox{}.").format(
                Markup(", next try {}").format(time_ago(email.next_attempt_at))
                if email.attempts and email.next_attempt_at else "")))
    return out
