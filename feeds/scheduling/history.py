"""Appointment history: every applied change, where it came from, in the change's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.models import Appointment, AppointmentChange, ChangeAction, ChangeSource, utcnow


def record_change(
    session: Session, appointment: Appointment, action: str, source: str, **detail: Any
) -> AppointmentChange:
    """Raises ValueError for an action or source outside models.enums: a programming error,
    caught here rather than by the database's CHECK at the end of the transaction."""
    change = AppointmentChange(
        appointment_id=appointment.id, action=ChangeAction(action), source=ChangeSource(source),
        detail={k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in detail.items()},
        sequence=appointment.sequence, created_at=utcnow(),
    )
    session.add(change)
    return change


def appointment_history(session: Session, appointment_id: int) -> list[AppointmentChange]:
    return list(session.scalars(
        select(AppointmentChange).where(AppointmentChange.appointment_id == appointment_id)
        .order_by(AppointmentChange.id)
    ))
