"""Conflicts between a booking and its copy in a linked calendar, and their resolution.

Nothing is overwritten while a conflict is open: the admin keeps either the platform's version
(the calendar is put back) or the calendar's (the booking follows it, through the same booking
rules, and the customer is emailed).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.errors import NotFoundError, SchedulingError
from calsync.feeds.scheduling.booking import cancel_appointment, get_appointment, reschedule_appointment
from calsync.feeds.scheduling.change_effects import request_job
from calsync.models import STATUS_CANCELLED, Company, Conflict, Connection, LinkedItem, utcnow


def list_conflicts(session: Session, company: Company, status: str | None = "open") -> list[Conflict]:
    query = select(Conflict).where(Conflict.company_id == company.id)
    if status:
        query = query.where(Conflict.status == status)
    return list(session.scalars(query.order_by(Conflict.id)))


def get_conflict(session: Session, company: Company, conflict_id: int) -> Conflict:
    conflict = session.get(Conflict, conflict_id)
    if conflict is None or conflict.company_id != company.id:
        raise NotFoundError(f"There is no conflict with id {conflict_id}.")
    return conflict


def resolve_conflict(session: Session, company: Company, conflict_id: int, keep: str) -> Conflict:
    conflict = get_conflict(session, company, conflict_id)
    if conflict.status != "open":
        raise SchedulingError("This conflict has already been resolved.")
    appt = get_appointment(session, company, conflict.appointment_id)
    item = session.scalar(select(LinkedItem).where(
        LinkedItem.connection_id == conflict.connection_id,
        LinkedItem.appointment_id == conflict.appointment_id))
    if keep == "platform":
        if item is not None:
            if conflict.calendar_deleted:
                item.href, item.etag = None, None
            item.state = "pending"  # the booking is written back over the calendar's version
    elif conflict.calendar_deleted:
        if appt.status != STATUS_CANCELLED:
            cancel_appointment(session, company, appt.id, source="conflict")
        if item is not None:
            item.state, item.href, item.etag = "deleted", None, None
    elif conflict.calendar_start is None or conflict.calendar_end is None:
        # e.g. the event was turned into an all-day event: there is no time to move to.
        raise SchedulingError(
            "The calendar's version has no usable start and end time, so it cannot be kept; "
            "keep the platform's version, or reschedule the appointment by hand.")
    else:
        # Raises SchedulingError (nothing changed) if the calendar's time is still taken.
        reschedule_appointment(session, company, appt.id, start=conflict.calendar_start,
                               end=conflict.calendar_end, within_working_hours=False,
                               source="conflict")
        if item is not None:
            item.synced_start, item.synced_end = conflict.calendar_start, conflict.calendar_end
            item.pushed_revision, item.pushed_sequence = appt.revision, appt.sequence
            item.state = "pending"  # refresh the copy (new SEQUENCE)
    conflict.status, conflict.resolution, conflict.resolved_at = "resolved", keep, utcnow()
    if conflict.connection_id is not None:
        request_job(session, "sync_connection", conflict.connection_id)
    session.flush()
    return conflict


def confirm_deletions(session: Session, company: Company, connection_id: int) -> Connection:
    """The admin confirms that bookings which vanished from a linked calendar all at once were
    deleted on purpose; the next sync applies the deletions."""
    conn = session.get(Connection, connection_id)
    if conn is None or conn.company_id != company.id:
        raise NotFoundError(f"There is no calendar connection with id {connection_id}.")
    conn.extra = {**(conn.extra or {}), "deletions_confirmed": True}
    conn.next_sync_at = utcnow()
    request_job(session, "sync_connection", conn.id)
    return conn
