"""The email outbox (list, retry) and an appointment's history of changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from calsync.feeds.mail import outbox
from calsync.feeds.scheduling.booking import get_appointment
from calsync.feeds.scheduling.history import appointment_history
from calsync.models import OutboxEmail
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.errors import ApiError
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import MAX_ID, EmailState


class EmailQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: EmailState | None = Field(default=None, description="Only emails in this state.")
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class EmailOut(BaseModel):
    id: int
    to: str
    subject: str
    kind: str = Field(description="booked | rescheduled | cancelled | alert")
    status: EmailState = Field(description="pending: waiting to be sent (or no mail server is configured); "
                                       "failed: given up after the last attempt, see last_error.")
    attempts: int
    method: str | None = Field(description="iTIP method of the calendar part: REQUEST or CANCEL.")
    appointment_id: int | None
    sequence: int | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None


class EmailList(BaseModel):
    emails: list[EmailOut]


class HistoryEntry(BaseModel):
    action: str = Field(description="booked | rescheduled | cancelled | restored")
    source: str = Field(description="Where the change came from: api | admin | calendar | conflict | demo")
    sequence: int = Field(description="The appointment's SEQUENCE after the change.")
    detail: dict[str, Any]
    created_at: datetime


class HistoryOut(BaseModel):
    history: list[HistoryEntry]


def email_out(email: OutboxEmail) -> EmailOut:
    return EmailOut(
        id=email.id, to=email.to_address, subject=email.subject, kind=email.kind,
        status=email.status,
        attempts=email.attempts, method=email.method, appointment_id=email.appointment_id,
        sequence=email.sequence, created_at=email.created_at, sent_at=email.sent_at,
        next_attempt_at=email.next_attempt_at, last_error=email.last_error,
    )


@api_route(bp, "/emails", "GET", summary="The email outbox, newest first", tag="emails",
           query=EmailQuery, response=EmailList, errors=(422,))
def list_emails(query: EmailQuery) -> EmailList:
    rows = outbox.list_emails(db.session(), current_company(), status=query.status,
                              limit=query.limit, offset=query.offset)
    return EmailList(emails=[email_out(e) for e in rows])


@api_route(bp, "/emails/<int:email_id>/retry", "POST", summary="Send a failed or waiting email now",
           tag="emails", response=EmailOut, errors=(404, 409))
def retry_email(email_id: int) -> EmailOut:
    session = db.session()
    try:
        email = outbox.retry_email(session, current_company(), email_id)
    except outbox.AlreadySentError as exc:
        raise ApiError(409, str(exc)) from exc
    session.commit()  # the app queues a delivery run after the commit
    return email_out(email)


@api_route(bp, "/appointments/<int:appointment_id>/history", "GET",
           summary="Every applied change of an appointment", tag="appointments",
           response=HistoryOut, errors=(404,))
def history(appointment_id: int) -> HistoryOut:
    session = db.session()
    get_appointment(session, current_company(), appointment_id)
    return HistoryOut(history=[
        HistoryEntry(action=c.action, source=c.source, sequence=c.sequence, detail=dict(c.detail or {}),
                     created_at=c.created_at)
        for c in appointment_history(session, appointment_id)
    ])
