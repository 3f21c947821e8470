"""Two-way sync conflicts and the admin's decisions about them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from calsync.feeds.calendars import conflicts as conflicts_core
from calsync.models import Conflict, ConflictStatus
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.connections import ConnectionOut, connection_out
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import ConflictState, Keep


class Version(BaseModel):
    start: datetime | None
    end: datetime | None
    deleted: bool = False


class ConflictOut(BaseModel):
    id: int
    appointment_id: int
    connection_id: int | None
    reason: str
    platform: Version
    calendar: Version
    status: ConflictState
    resolution: Keep | None
    created_at: datetime
    resolved_at: datetime | None


class ConflictList(BaseModel):
    conflicts: list[ConflictOut]


class ConflictQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "resolved", "all"] = "open"


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep: Keep


def conflict_out(c: Conflict) -> ConflictOut:
    return ConflictOut(
        id=c.id, appointment_id=c.appointment_id, connection_id=c.connection_id, reason=c.reason,
        platform=Version(start=c.platform_start, end=c.platform_end),
        calendar=Version(start=c.calendar_start, end=c.calendar_end, deleted=c.calendar_deleted),
        status=c.status, resolution=c.resolution,
        created_at=c.created_at, resolved_at=c.resolved_at,
    )


@api_route(bp, "/conflicts", "GET", summary="Calendar-side changes waiting for a decision",
           tag="two-way sync", query=ConflictQuery, response=ConflictList, errors=(422,))
def list_conflicts(query: ConflictQuery) -> ConflictList:
    status = None if query.status == "all" else ConflictStatus(query.status)
    rows = conflicts_core.list_conflicts(db.session(), current_company(), status)
    return ConflictList(conflicts=[conflict_out(c) for c in rows])


@api_route(bp, "/conflicts/<int:conflict_id>/resolve", "POST",
           summary="Keep the platform's or the calendar's version", tag="two-way sync",
           body=ResolveIn, response=ConflictOut, errors=(404, 409, 422))
def resolve(conflict_id: int, body: ResolveIn) -> ConflictOut:
    session = db.session()
    conflict = conflicts_core.resolve_conflict(session, current_company(), conflict_id, body.keep)
    session.commit()
    return conflict_out(conflict)


@api_route(bp, "/connections/<int:connection_id>/confirm-deletions", "POST",
           summary="Confirm that bookings deleted from a linked calendar all at once were meant",
           tag="two-way sync", response=ConnectionOut, errors=(404,))
def confirm_deletions(connection_id: int) -> ConnectionOut:
    session = db.session()
    conn = conflicts_core.confirm_deletions(session, current_company(), connection_id)
    session.commit()
    return connection_out(conn)
