"""Staff members and groups: create, change, delete — with the feed versions they affect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import bump_company_epoch
from calsync.feeds.errors import SchedulingError, ValidationError
from calsync.feeds.lookup import get_owned
from calsync.feeds.scheduling.booking import mark_feed_changed
from calsync.feeds.scheduling.working_hours import normalise_working_hours, parse_timezone
from calsync.models import STATUS_CONFIRMED, Appointment, Company, FeedToken, Group, Staff, utcnow

DEFAULT_WORKING_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


def get_staff(session: Session, company: Company, staff_id: int) -> Staff:
    return get_owned(session, Staff, staff_id, company, "staff member")


def list_staff(session: Session, company: Company) -> list[Staff]:
    return list(
        session.scalars(select(Staff).where(Staff.company_id == company.id).order_by(Staff.id))
    )


def create_staff(
    session: Session,
    company: Company,
    *,
    name: str,
    email: str,
    timezone: str | None = None,
    working_hours: dict[str, Any] | None = None,
) -> Staff:
    tz = timezone or company.timezone
    parse_timezone(tz)
    staff = Staff(
        company_id=company.id,
        name=name,
        email=email,
        timezone=tz,
        working_hours=normalise_working_hours(
            DEFAULT_WORKING_HOURS if working_hours is None else working_hours
        ),
    )
    session.add(staff)
    bump_company_epoch(company)  # the company feed's set of staff changed
    session.flush()
    return staff


def update_staff(
    session: Session, company: Company, staff_id: int, changes: dict[str, Any]
) -> Staff:
    staff = get_staff(session, company, staff_id)
    if "timezone" in changes:
        parse_timezone(changes["timezone"])
    if "working_hours" in changes:
        changes["working_hours"] = normalise_working_hours(changes["working_hours"])
    rerender = any(
        key in changes and changes[key] != getattr(staff, key) for key in ("name", "timezone")
    )
    for key, value in changes.items():
        if key not in ("name", "email", "timezone", "working_hours"):
            raise ValidationError(f"Unknown staff field {key!r}.", key)
        setattr(staff, key, value)
    # The bump in SQL, flushed at once: like a booking's, it takes the row's lock and adds to the
    # revision as committed, so an edit racing a booking cannot write back a revision the
    # booking already used (two states under one revision would share a feed segment's key).
    staff.feed_revision = Staff.feed_revision + 1
    session.flush()
    session.refresh(staff, ["feed_revision", "feed_changed_at"])
    mark_feed_changed(staff)
    if rerender:
        # Cached VEVENTs carry the staff member's name and time zone: make them stale.
        session.execute(
            update(Appointment)
            .where(Appointment.staff_id == staff.id)
            .values(revision=Appointment.revision + 1, staff_revision=staff.feed_revision)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return staff


def delete_staff(session: Session, company: Company, staff_id: int, *, force: bool = False) -> None:
    """Delete a staff member, their appointments and feed tokens.

    Refused while they have upcoming confirmed appointments unless `force`: customers of those
    appointments would otherwise never hear that they are gone.
    """
    staff = get_staff(session, company, staff_id)
    upcoming = session.scalar(
        select(func.count()).select_from(Appointment).where(
            Appointment.staff_id == staff.id,
            Appointment.status == STATUS_CONFIRMED,
            Appointment.end_at > utcnow(),
        )
    )
    if upcoming and not force:
        raise SchedulingError(
            f"{staff.name} has {upcoming} upcoming appointment(s); cancel or move them first."
        )
    session.execute(
        update(FeedToken)
        .where(FeedToken.scope == "staff", FeedToken.scope_id == staff.id)
        .where(FeedToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.delete(staff)
    bump_company_epoch(company)
    session.flush()


def get_group(session: Session, company: Company, group_id: int) -> Group:
    return get_owned(session, Group, group_id, company, "group")


def list_groups(session: Session, company: Company) -> list[Group]:
    return list(
        session.scalars(select(Group).where(Group.company_id == company.id).order_by(Group.id))
    )


def _members(session: Session, company: Company, staff_ids: list[int]) -> list[Staff]:
    members = [get_staff(session, company, sid) for sid in dict.fromkeys(staff_ids)]
    return members


def create_group(
    session: Session, company: Company, *, name: str, staff_ids: list[int] | None = None
) -> Group:
    group = Group(company_id=company.id, name=name)
    group.members = _members(session, company, staff_ids or [])
    session.add(group)
    bump_company_epoch(company)
    session.flush()
    return group


def update_group(
    session: Session, company: Company, group_id: int, changes: dict[str, Any]
) -> Group:
    group = get_group(session, company, group_id)
    if "name" in changes:
        group.name = changes["name"]
    if "staff_ids" in changes:
        group.members = _members(session, company, changes["staff_ids"])
    bump_company_epoch(company)  # group feeds depend on membership and name
    session.flush()
    return group


def delete_group(session: Session, company: Company, group_id: int) -> None:
    group = get_group(session, company, group_id)
    session.execute(
        update(FeedToken)
        .where(FeedToken.scope == "group", FeedToken.scope_id == group.id)
        .where(FeedToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.delete(group)
    bump_company_epoch(company)
    session.flush()
