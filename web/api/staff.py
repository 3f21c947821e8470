"""Staff members and groups of staff."""

from __future__ import annotations

from pydantic import TypeAdapter

from calsync.feeds.publishing.tokens import ensure_default_tokens
from calsync.feeds.scheduling import directory
from calsync.models import Group, Staff
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import (
    GroupIn,
    GroupList,
    GroupOut,
    GroupPatch,
    StaffIn,
    StaffList,
    StaffOut,
    StaffPatch,
    WorkingHours,
)

# Stored as JSON (normalised by feeds.scheduling.directory); read back into the API's type, the
# same validation StaffOut would apply, but typed.
WORKING_HOURS: TypeAdapter[WorkingHours] = TypeAdapter(WorkingHours)

NOT_FOUND = (404,)


def staff_out(staff: Staff) -> StaffOut:
    return StaffOut(
        id=staff.id,
        name=staff.name,
        email=staff.email,
        timezone=staff.timezone,
        working_hours=WORKING_HOURS.validate_python(staff.working_hours),
        group_ids=sorted(g.id for g in staff.groups),
    )


def group_out(group: Group) -> GroupOut:
    return GroupOut(id=group.id, name=group.name, staff_ids=[s.id for s in group.members])


@api_route(bp, "/staff", "POST", summary="Add a staff member", tag="staff", body=StaffIn,
           response=StaffOut, status=201, errors=(422,), creates="staff_id")
def create_staff(body: StaffIn) -> StaffOut:
    session = db.session()
    company = current_company()
    staff = directory.create_staff(session, company, **body.model_dump(exclude_none=True))
    # Every staff member gets a feed at once, so the admin can hand out its URL.
    ensure_default_tokens(session, company, db.services().sealer)
    session.commit()
    return staff_out(staff)


@api_route(bp, "/staff", "GET", summary="List staff members", tag="staff", response=StaffList)
def list_staff() -> StaffList:
    return StaffList(staff=[staff_out(s) for s in directory.list_staff(db.session(), current_company())])


@api_route(bp, "/staff/<int:staff_id>", "GET", summary="Get a staff member", tag="staff",
           response=StaffOut, errors=NOT_FOUND)
def get_staff(staff_id: int) -> StaffOut:
    return staff_out(directory.get_staff(db.session(), current_company(), staff_id))


@api_route(bp, "/staff/<int:staff_id>", "PATCH", summary="Change a staff member", tag="staff",
           body=StaffPatch, response=StaffOut, errors=(404, 422))
def patch_staff(staff_id: int, body: StaffPatch) -> StaffOut:
    session = db.session()
    changes = body.model_dump(exclude_unset=True)  # nulls are refused by StaffPatch
    staff = directory.update_staff(session, current_company(), staff_id, changes)
    session.commit()
    return staff_out(staff)


@api_route(bp, "/staff/<int:staff_id>", "DELETE", summary="Delete a staff member", tag="staff",
           status=204, errors=(404, 409))
def delete_staff(staff_id: int) -> None:
    session = db.session()
    directory.delete_staff(session, current_company(), staff_id)
    session.commit()


@api_route(bp, "/groups", "POST", summary="Add a group of staff", tag="groups", body=GroupIn,
           response=GroupOut, status=201, errors=(404, 422), creates="group_id")
def create_group(body: GroupIn) -> GroupOut:
    session = db.session()
    company = current_company()
    group = directory.create_group(session, company, name=body.name, staff_ids=body.staff_ids)
    ensure_default_tokens(session, company, db.services().sealer)
    session.commit()
    return group_out(group)


@api_route(bp, "/groups", "GET", summary="List groups", tag="groups", response=GroupList)
def list_groups() -> GroupList:
    return GroupList(groups=[group_out(g) for g in directory.list_groups(db.session(), current_company())])


@api_route(bp, "/groups/<int:group_id>", "GET", summary="Get a group", tag="groups",
           response=GroupOut, errors=NOT_FOUND)
def get_group(group_id: int) -> GroupOut:
    return group_out(directory.get_group(db.session(), current_company(), group_id))


@api_route(bp, "/groups/<int:group_id>", "PATCH", summary="Rename a group or change its members",
           tag="groups", body=GroupPatch, response=GroupOut, errors=(404, 422))
def patch_group(group_id: int, body: GroupPatch) -> GroupOut:
    session = db.session()
    changes = body.model_dump(exclude_unset=True)  # nulls are refused by GroupPatch
    group = directory.update_group(session, current_company(), group_id, changes)
    session.commit()
    return group_out(group)


@api_route(bp, "/groups/<int:group_id>", "DELETE", summary="Delete a group", tag="groups",
           status=204, errors=NOT_FOUND)
def delete_group(group_id: int) -> None:
    session = db.session()
    directory.delete_group(session, current_company(), group_id)
    session.commit()
