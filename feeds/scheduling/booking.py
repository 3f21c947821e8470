"""Book, reschedule and cancel: the one place that changes appointments.

Each function runs inside the caller's transaction and starts by bumping the staff member's
feed revision. That UPDATE is also the lock that keeps two concurrent bookings of the same
staff member from both passing the availability check: it takes the row lock on PostgreSQL and
the write lock on SQLite before anything is read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, select, update
from sqlalchemy.orm import Session, joinedload, lazyload

from calsync.feeds.errors import NotFoundError, SchedulingError, ValidationError
from calsync.feeds.lookup import get_owned
from calsync.feeds.scheduling.availability import MAX_DURATION, busy_times, calendar_blocker, check_range
from calsync.feeds.scheduling.change_effects import after_change
from calsync.feeds.scheduling.working_hours import merge, working_intervals
from calsync.models import (
    STATUS_CANCELLED,
    STATUS_CONFIRMED,
    Appointment,
    ChangeAction,
    ChangeSource,
    Company,
    Customer,
    Staff,
    UTCDateTime,
    utcnow,
)


@dataclass(frozen=True)
class CustomerDetails:
    name: str
    email: str | None = None
    phone: str | None = None


def _bump(where: ColumnElement[bool]) -> Any:
    """The locking UPDATE of one staff member: feed revision + 1, and feed_changed_at moved on
    by mark_feed_changed's rule written in SQL (now, or the stored time if that is later), so
    no second UPDATE of the row follows at the next flush."""
    now = bindparam("now", type_=UTCDateTime())
    return (update(_STAFF).where(where, _STAFF.c.company_id == bindparam("b_company_id"))
            .values(feed_revision=_STAFF.c.feed_revision + 1,
                    feed_changed_at=case((_STAFF.c.feed_changed_at > now, _STAFF.c.feed_changed_at),
                                         else_=now)))


_STAFF: Any = Staff.__table__
_APPOINTMENT: Any = Appointment.__table__
# Built once, Core: run on every booking, move and cancellation, where building the statement
# and the ORM's bulk-update path cost more than the UPDATE (issue 17). The appointment's form
# takes the staff id from a subquery, so a move reads the appointment once, after the lock.
_BUMP_STAFF = _bump(_STAFF.c.id == bindparam("b_staff_id"))
_BUMP_OWNER = _bump(_STAFF.c.id == select(_APPOINTMENT.c.staff_id).where(
    _APPOINTMENT.c.id == bindparam("appointment_id"), _APPOINTMENT.c.company_id == bindparam("b_company_id"),
).scalar_subquery())
# Nothing that books, moves or cancels reads the staff member's groups.
_STAFF_ONLY = (lazyload(Staff.groups),)
_WITH_STAFF = (joinedload(Appointment.staff).lazyload(Staff.groups), joinedload(Appointment.customer))


def _bump_feed(session: Session, statement: Any, **params: Any) -> bool:
    """Run one of the UPDATEs above; True when it found the row. Whatever the session holds
    unwritten goes first, as the ORM's own UPDATE did (the order locks are taken in)."""
    session.flush()
    result = session.execute(statement, dict(params, now=utcnow()))
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def lock_staff(session: Session, company: Company, staff_id: int) -> Staff:
    """Bump the staff member's feed revision (taking the write lock) and return them."""
    if not _bump_feed(session, _BUMP_STAFF, b_staff_id=staff_id, b_company_id=company.id):
        raise NotFoundError(f"There is no staff member with id {staff_id}.")
    # Read after the UPDATE: the revision and time it wrote.
    staff = session.get(Staff, staff_id, populate_existing=True, options=_STAFF_ONLY)
    assert staff is not None
    return staff


def lock_appointment(session: Session, company: Company, appointment_id: int) -> Appointment:
    """Take the lock of the appointment's staff member (lock_staff), then read the appointment,
    and joined with it that staff member and the customer, as they are under the lock.

    The staff id comes from a subquery of the UPDATE, so a move or a cancellation reads the
    appointment once instead of before and again after locking (issue 17: two statements and
    two selectin loads of Staff.groups fewer). An appointment never changes staff; on
    PostgreSQL the subquery sees the statement's snapshot, which is all the two-step read saw.
    """
    if not _bump_feed(session, _BUMP_OWNER, appointment_id=appointment_id, b_company_id=company.id):
        # Not this company's appointment (NotFoundError); or its staff member is missing,
        # which lock_staff reports.
        lock_staff(session, company, get_appointment(session, company, appointment_id).staff_id)
    appointment = session.get(Appointment, appointment_id, populate_existing=True, options=_WITH_STAFF)
    assert appointment is not None  # the UPDATE found it, in this transaction
    return appointment


def mark_feed_changed(staff: Staff) -> None:
    """Record when the staff member's feeds changed, to the microsecond, never in the future:
    Last-Modified is never later than Date (RFC 9110 §8.8.2.1), and two changes in one second
    still tell If-Modified-Since apart (feeds/publishing/feed.py last_modified). It never goes
    back either, should this clock be behind another process's. Safe as read-modify-write: the
    caller holds the lock. (Booking's lock does the same in its UPDATE: _bump_feed.)"""
    now = utcnow()
    previous = staff.feed_changed_at
    staff.feed_changed_at = max(now, previous) if previous else now


def check_slot(
    session: Session,
    staff: Staff,
    start: datetime,
    end: datetime,
    *,
    exclude_appointment_id: int | None = None,
    within_working_hours: bool = True,
) -> None:
    """Raise SchedulingError with the reason when [start, end) cannot be booked."""
    check_range(start, end)
    if end - start > MAX_DURATION:
        raise ValidationError("An appointment lasts at most 24 hours.", "end")
    if within_working_hours:
        work = merge(list(working_intervals(staff.working_hours, staff.timezone, start, end)))
        if not any(a <= start and end <= b for a, b in work):
            raise SchedulingError(
                f"{staff.name} does not work at that time; choose a time within their "
                "working hours."
            )
    blocker = calendar_blocker(session, staff)
    if blocker:
        raise SchedulingError(blocker)
    taken = busy_times(session, staff.id, start, end, exclude_appointment_id)
    if any(b.kind == "appointment" for b in taken):
        raise SchedulingError(
            f"{staff.name} already has an appointment at that time; choose another slot."
        )
    if taken:
        # Say that, not what: the staff member's own calendar stays private.
        raise SchedulingError(
            f"{staff.name} is busy at that time in their own calendar; choose another slot."
        )


def _find_or_create_customer(
    session: Session, company: Company, details: CustomerDetails
) -> Customer:
    """Reuse a customer only when every detail matches, so one booking's details can never
    rewrite what another appointment (and its cached feed entries) shows."""
    existing = session.scalar(
        select(Customer).where(
            Customer.company_id == company.id,
            Customer.name == details.name,
            Customer.email.is_(None) if details.email is None else Customer.email == details.email,
            Customer.phone.is_(None) if details.phone is None else Customer.phone == details.phone,
        ).limit(1)
    )
    if existing is not None:
        return existing
    customer = Customer(
        company_id=company.id, name=details.name, email=details.email, phone=details.phone
    )
    session.add(customer)
    return customer


def book_appointment(
    session: Session,
    company: Company,
    *,
    staff_id: int,
    start: datetime,
    end: datetime,
    service: str,
    customer: CustomerDetails,
    location: str | None = None,
    notes: str | None = None,
    source: str = ChangeSource.API,
) -> Appointment:
    staff = lock_staff(session, company, staff_id)
    check_slot(session, staff, start, end)
    # Stored, returned and compared in UTC whatever offset the caller wrote.
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    now = utcnow()
    appointment = Appointment(
        company_id=company.id,
        staff=staff,
        customer=_find_or_create_customer(session, company, customer),
        uid=f"{uuid.uuid4()}@calsync",
        sequence=0,
        revision=1,
        staff_revision=staff.feed_revision,  # the revision lock_staff wrote (segments.py)
        status=STATUS_CONFIRMED,
        service=service,
        location=location,
        notes=notes,
        start_at=start,
        end_at=end,
        created_at=now,
        updated_at=now,
    )
    session.add(appointment)
    session.flush()
    after_change(session, appointment, ChangeAction.BOOKED, source, start=start, end=end)
    return appointment


def get_appointment(session: Session, company: Company, appointment_id: int) -> Appointment:
    return get_owned(session, Appointment, appointment_id, company, "appointment")


def _touch(appointment: Appointment, *, new_sequence: bool) -> None:
    appointment.revision += 1
    # The staff member as lock_appointment read them after its bump: the revision of this change,
    # which feeds use to find what changed since a segment (feeds/publishing/segments.py).
    appointment.staff_revision = appointment.staff.feed_revision
    if new_sequence:
        # RFC 5546 §2.1.4: SEQUENCE grows with every change of time or status, so calendar
        # apps replace the copy they have instead of keeping both.
        appointment.sequence += 1
    appointment.updated_at = utcnow()


def reschedule_appointment(
    session: Session,
    company: Company,
    appointment_id: int,
    *,
    start: datetime,
    end: datetime,
    within_working_hours: bool = True,
    source: str = ChangeSource.API,
) -> Appointment:
    appointment = lock_appointment(session, company, appointment_id)
    staff = appointment.staff
    if appointment.status != STATUS_CONFIRMED:
        raise SchedulingError("A cancelled appointment cannot be moved; book a new one instead.")
    if (appointment.start_at, appointment.end_at) == (start, end):
        return appointment
    check_slot(
        session,
        staff,
        start,
        end,
        exclude_appointment_id=appointment.id,
        within_working_hours=within_working_hours,
    )
    previous = (appointment.start_at, appointment.end_at)
    appointment.start_at, appointment.end_at = start.astimezone(UTC), end.astimezone(UTC)
    _touch(appointment, new_sequence=True)
    # No flush of its own: the UPDATE goes out with the history entry at after_change's first
    # query, one unit of work instead of two.
    after_change(session, appointment, ChangeAction.RESCHEDULED, source, start=appointment.start_at,
                 end=appointment.end_at, previous_start=previous[0], previous_end=previous[1])
    return appointment


def cancel_appointment(
    session: Session, company: Company, appointment_id: int, *, source: str = ChangeSource.API,
    email_customer: bool = True,
) -> Appointment:
    """`email_customer=False` cancels without writing the customer's email (the admin's choice
    for an appointment that already took place); calendars and feeds follow as always."""
    appointment = lock_appointment(session, company, appointment_id)
    if appointment.status == STATUS_CANCELLED:
        raise SchedulingError("This appointment is already cancelled.")
    appointment.status = STATUS_CANCELLED
    _touch(appointment, new_sequence=True)
    session.flush()
    after_change(session, appointment, ChangeAction.CANCELLED, source, email_customer=email_customer)
    return appointment


def list_appointments(
    session: Session,
    company: Company,
    *,
    staff_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[Appointment]:
    query = select(Appointment).where(Appointment.company_id == company.id)
    if staff_id is not None:
        query = query.where(Appointment.staff_id == staff_id)
    if start is not None:
        query = query.where(Appointment.end_at > start)
    if end is not None:
        query = query.where(Appointment.start_at < end)
    query = query.order_by(Appointment.start_at, Appointment.id).limit(limit).offset(offset)
    return list(session.scalars(query))
