"""What follows every applied change of an appointment, inside the same transaction:

- a history entry (feeds.history),
- the customer's email in the outbox (feeds.notifications),
- push jobs for the staff member's linked and additional calendars (feeds.push).

Booking, rescheduling and cancelling call `after_change` once; nothing else writes these, so no
path can change an appointment and forget to tell the customer or the calendar.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from calsync.feeds.mail.notifications import queue_customer_email
from calsync.feeds.scheduling.calendar_copies import queue_pushes
from calsync.feeds.scheduling.history import record_change
from calsync.models import Appointment

JOBS_KEY = "calsync_jobs_after_commit"


def request_job(session: Session, task: str, argument: int) -> None:
    """Ask for a background job once this transaction commits (never if it rolls back).

    The web app hooks the session factory's after_commit event and enqueues these; the rows
    written in the transaction stay the source of truth, so a lost enqueue only delays work
    until the next periodic run.
    """
    session.info.setdefault(JOBS_KEY, set()).add((task, argument))


def after_change(
    session: Session, appointment: Appointment, action: str, source: str, *,
    email_customer: bool = True, **detail: Any
) -> None:
    """`email_customer=False`: the customer is not told (an admin cancelling an appointment that
    already took place); the history says so."""
    if not email_customer:
        detail["customer_not_emailed"] = True
    record_change(session, appointment, action, source, **detail)
    if email_customer:
        # A move's previous time is in hand: the email need not read it back from the history.
        start, end = detail.get("previous_start"), detail.get("previous_end")
        queue_customer_email(session, appointment, action, source,
                             previous=(start, end) if start is not None and end is not None else None)
    for connection_id in queue_pushes(session, appointment):
        request_job(session, "sync_connection", connection_id)
