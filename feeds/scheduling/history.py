"""Appointment history: every applied change, where it came from, in the change's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from calsync.models import Appointment, AppointmentChange, ChangeAction, ChangeSource, utcnow

# Built once; Core, not an ORM object: nothing reads the entry back in the transaction that
# writes it, and the unit of work's flush of one row cost more than the INSERT (issue 17).
_TABLE: Any = AppointmentChange.__table__
_INSERT = insert(_TABLE)


def record_change(
    session: Session, appointment: Appointment, action: str, source: str, **detail: Any
) -> None:
    """Raises ValueError for an action or source outside models.enums: a programming error,
    caught here rather than by the database's CHECK at the end of the transaction."""
    session.execute(_INSERT, {
        "appointment_id": appointment.id, "action": ChangeAction(action), "source": ChangeSource(source),
        "detail": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in detail.items()},
        "sequence": appointment.sequence, "created_at": utcnow(),
    })


def appointment_history(session: Session, appointment_id: int) -> list[AppointmentChange]:
    return list(session.scalars(
        select(AppointmentChange).where(AppointmentChange.appointment_id == appointment_id)
        .order_by(AppointmentChange.id)
    ))
