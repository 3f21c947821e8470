"""Conflicts between a booking and its copy in a linked calendar, and their resolution.

Nothing is overwritten while a conflict is open: the admin keeps either the platform's version
(the calendar is put back) or the calendar's (the booking follows it, through the same booking
rules, and the customer is emailed).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.calendars.connections import get_connection
from calsync.feeds.errors import SchedulingError, ValidationError
from calsync.feeds.lookup import get_owned
from calsync.feeds.scheduling.booking import cancel_appointment, get_appointment, reschedule_appointment
from calsync.feeds.scheduling.change_effects import request_job
from calsync.models import (
    AppointmentStatus,
    ChangeSource,
    Company,
    Conflict,
    ConflictResolution,
    ConflictStatus,
    Connection,
    LinkedItem,
    LinkedItemState,
    utcnow,
)


class AlreadyResolvedError(SchedulingError):
    """The conflict was decided before (by another admin, or through the API); nothing changed."""

    def __init__(self, conflict: Conflict) -> None:
        super().__init__("This conflict has already been resolved.")
        self.conflict = conflict


class CalendarVersionUnusableError(SchedulingError):
    """The calendar's version has neither a time to move to nor a deletion to apply."""


def calendar_version_usable(conflict: Conflict) -> bool:
    """Whether "keep the calendar's version" can be applied: the event was deleted (cancel the
    booking) or has a start and an end to move it to. An all-day event has neither: a booking
    is a time, not a day."""
    return conflict.calendar_deleted or (
        conflict.calendar_start is not None and conflict.calendar_end is not None)


def list_conflicts(
    session: Session, company: Company, status: ConflictStatus | None = ConflictStatus.OPEN
) -> list[Conflict]:
    query = select(Conflict).where(Conflict.company_id == company.id)
    if status:
        query = query.where(Conflict.status == status)
    return list(session.scalars(query.order_by(Conflict.id)))


def get_conflict(session: Session, company: Company, conflict_id: int) -> Conflict:
    return get_owned(session, Conflict, conflict_id, company, "conflict")


def resolve_conflict(session: Session, company: Company, conflict_id: int, keep: str) -> Conflict:
    """Keep the platform's or the calendar's version (`keep`). Raises NotFoundError,
    ValidationError (an unknown choice), AlreadyResolvedError, CalendarVersionUnusableError, or
    the SchedulingError of the reschedule (the calendar's time is taken): nothing changed then."""
    conflict = get_conflict(session, company, conflict_id)
    if keep not in tuple(ConflictResolution):
        raise ValidationError("Choose which version to keep: the platform's or the calendar's.", "keep")
    kept = ConflictResolution(keep)
    if conflict.status != ConflictStatus.OPEN:
        raise AlreadyResolvedError(conflict)
    if kept == ConflictResolution.CALENDAR and not calendar_version_usable(conflict):
        # e.g. the event was turned into an all-day event: there is no time to move to.
        raise CalendarVersionUnusableError(
            "The calendar's version has no usable start and end time, so it cannot be kept; "
            "keep the platform's version, or reschedule the appointment by hand.")
    appt = get_appointment(session, company, conflict.appointment_id)
    item = session.scalar(select(LinkedItem).where(
        LinkedItem.connection_id == conflict.connection_id,
        LinkedItem.appointment_id == conflict.appointment_id))
    if kept == ConflictResolution.PLATFORM:
        if item is not None:
            if conflict.calendar_deleted:
                item.href, item.etag = None, None
            item.state = LinkedItemState.PENDING  # the booking is written back over the calendar's version
    elif conflict.calendar_deleted:
        if appt.status != AppointmentStatus.CANCELLED:
            cancel_appointment(session, company, appt.id, source=ChangeSource.CONFLICT)
        if item is not None:
            item.state, item.href, item.etag = LinkedItemState.DELETED, None, None
    else:
        assert conflict.calendar_start is not None and conflict.calendar_end is not None  # usable
        # Raises SchedulingError (nothing changed) if the calendar's time is still taken.
        reschedule_appointment(session, company, appt.id, start=conflict.calendar_start,
                               end=conflict.calendar_end, within_working_hours=False,
                               source=ChangeSource.CONFLICT)
        if item is not None:
            item.synced_start, item.synced_end = conflict.calendar_start, conflict.calendar_end
            item.pushed_revision, item.pushed_sequence = appt.revision, appt.sequence
            item.state = LinkedItemState.PENDING  # refresh the copy (new SEQUENCE)
    conflict.status, conflict.resolution = ConflictStatus.RESOLVED, kept
    conflict.resolved_at = utcnow()
    if conflict.connection_id is not None:
        request_job(session, "sync_connection", conflict.connection_id)
    session.flush()
    return conflict


def confirm_deletions(session: Session, company: Company, connection_id: int) -> Connection:
    """The admin confirms that bookings which vanished from a linked calendar all at once were
    deleted on purpose; the next sync applies the deletions."""
    conn = get_connection(session, company, connection_id)
    conn.extra = {**(conn.extra or {}), "deletions_confirmed": True}
    conn.next_sync_at = utcnow()
    request_job(session, "sync_connection", conn.id)
    return conn
