"""The copies of an appointment in staff members' writable calendars, marked out of date.

Every change of an appointment marks its copy in each linked/additional calendar `pending`, in
the change's own transaction (scheduling.change_effects); the connection's sync job writes it
later under the connection's lease (calendars.push). Kept here, below calendars, because
marking is part of every change and needs nothing of the CalDAV client.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from calsync.models import (
    STATUS_CONFIRMED,
    WRITE_ROLES,
    Appointment,
    Connection,
    ConnectionKind,
    LinkedItem,
    LinkedItemState,
    SyncMode,
    utcnow,
)

# Every kind with a calendar store: CalDAV, Google, Microsoft (an ICS address is read-only).
# Built once: it runs on every change of an appointment (issue 17).
_STORES = select(Connection).where(Connection.staff_id == bindparam("staff_id"),
                                   Connection.kind != ConnectionKind.ICS)


def target_connections(session: Session, staff_id: int) -> list[Connection]:
    rows = session.scalars(_STORES, {"staff_id": staff_id})
    return [c for c in rows if WRITE_ROLES & set(c.roles or []) and c.writable]


def queue_pushes(session: Session, appointment: Appointment) -> list[int]:
    """Mark the appointment's copy in each target calendar as pending; returns the connection
    ids whose sync job should run soon (realtime mode)."""
    realtime = []
    for conn in target_connections(session, appointment.staff_id):
        item = session.scalar(
            select(LinkedItem).where(
                LinkedItem.connection_id == conn.id, LinkedItem.appointment_id == appointment.id
            )
        )
        if item is None:
            if appointment.status != STATUS_CONFIRMED:
                continue  # never pushed, nothing to remove
            item = LinkedItem(
                connection_id=conn.id,
                appointment_id=appointment.id,
                state=LinkedItemState.PENDING,
                attempts=0,
                pushed_revision=0,
                pushed_sequence=0,
                updated_at=utcnow(),
            )
            session.add(item)
        else:
            item.state = LinkedItemState.PENDING
            item.attempts = 0
            item.updated_at = utcnow()
        if conn.sync_mode == SyncMode.REALTIME:
            realtime.append(conn.id)
    session.flush()
    return realtime


def queue_existing(session: Session, connection: Connection, now: datetime) -> int:
    """Copies for the staff member's upcoming appointments, when the admin asked for it; those
    already in the calendar (or on their way) are left as they are, so asking twice is harmless."""
    count = 0
    for appt in session.scalars(
        select(Appointment).where(
            Appointment.staff_id == connection.staff_id,
            Appointment.status == STATUS_CONFIRMED,
            Appointment.end_at > now,
            ~exists().where(LinkedItem.connection_id == connection.id,
                            LinkedItem.appointment_id == Appointment.id),
        )
    ):
        session.add(
            LinkedItem(
                connection_id=connection.id,
                appointment_id=appt.id,
                state=LinkedItemState.PENDING,
                attempts=0,
                pushed_revision=0,
                pushed_sequence=0,
                updated_at=now,
            )
        )
        count += 1
    return count
