"""Write bookings into staff members' linked and additional CalDAV calendars.

Every change of an appointment marks its copy in each writable linked/additional calendar as
pending (in the change's transaction, via change_effects). The connection's sync job pushes
pending copies under the connection's lease, with the rules of PROTOCOL.md ("CalDAV"):

- create with If-None-Match: *, update and delete with If-Match: the stored ETag;
- 412 means someone changed the item since we last saw it: re-read it and decide again
  (two-way sync, or "the platform wins" when bidirectional sync is off) — never overwrite blind;
- if a PUT returns no ETag, GET the item to learn it;
- attendees carry SCHEDULE-AGENT=CLIENT, so the server sends no invitation of its own on top of
  ours (RFC 6638 §7.1).
A failed push leaves the appointment as it is; the copy stays pending and is retried with
backoff, and the connection's health shows the error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from icalendar import Calendar, Event, vCalAddress
from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import get_company_settings
from calsync.models import (
    STATUS_CANCELLED,
    Appointment,
    Company,
    Connection,
    LinkedItem,
    utcnow,
)

MAX_BACKOFF = timedelta(hours=1)


def item_name(uid: str) -> str:
    """A safe resource name for an appointment's copy, derived from its UID."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", uid.split("@")[0])[:80] + ".ics"


def render_copy(appt: Appointment, mark_cancelled: bool = False) -> str:
    """The appointment as a calendar object for the staff member's own calendar (full detail:
    it is their calendar). Times in UTC, so no VTIMEZONE is needed (RFC 5545 §3.3.5)."""
    cal = Calendar()
    cal.add("prodid", "-//calsync//calsync bookings 1.0//EN")
    cal.add("version", "2.0")
    event = Event()
    event.add("uid", appt.uid)
    event.add("dtstamp", appt.updated_at)
    event.add("sequence", appt.sequence)
    event.add("dtstart", appt.start_at)
    event.add("dtend", appt.end_at)
    event.add("summary", f"{appt.service} – {appt.customer.name}")
    lines = [f"Customer: {appt.customer.name}"]
    if appt.customer.email:
        lines.append(f"Email: {appt.customer.email}")
    if appt.customer.phone:
        lines.append(f"Phone: {appt.customer.phone}")
    if appt.notes:
        lines.append(f"Notes: {appt.notes}")
    lines.append(
        "Booked through calsync: moving or deleting this event changes the booking when two-way sync is on."
    )
    event.add("description", "\n".join(lines))
    if appt.location:
        event.add("location", appt.location)
    event.add("transp", "OPAQUE")
    cancelled = mark_cancelled or appt.status == STATUS_CANCELLED
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    if appt.customer.email:
        attendee = vCalAddress(f"mailto:{appt.customer.email}")
        attendee.params["CN"] = appt.customer.name
        attendee.params["ROLE"] = "REQ-PARTICIPANT"
        attendee.params["PARTSTAT"] = "ACCEPTED"
        # RFC 6638 §7.1: we send the customer's invitation ourselves; the server must not.
        attendee.params["SCHEDULE-AGENT"] = "CLIENT"
        event.add("attendee", attendee)
    event.add("x-calsync-appointment", str(appt.id))
    cal.add_component(event)
    return cal.to_ical().decode("utf-8")


def content_hash(body: bytes | str) -> str:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(data).hexdigest()


@dataclass
class PushJob:
    """A pending copy, copied out of the session before any network I/O."""

    item_id: int
    appointment_id: int
    href: str | None
    etag: str | None
    action: str  # put | delete
    body: str | None
    revision: int
    sequence: int
    start: datetime
    end: datetime


def plan_pushes(session: Session, conn: Connection, limit: int = 200) -> list[PushJob]:
    company = session.get(Company, conn.company_id)
    assert company is not None
    on_cancel = get_company_settings(company).cancelled_in_calendar
    jobs = []
    now = utcnow()
    items = session.scalars(select(LinkedItem).where(
        LinkedItem.connection_id == conn.id, LinkedItem.state.in_(("pending", "error"))
    ).order_by(LinkedItem.id).limit(limit))
    for item in items:
        if item.state == "error" and item.updated_at + _backoff(item.attempts) > now:
            continue
        job = job_for(session, item, on_cancel)
        if job is not None:
            jobs.append(job)
    return jobs


def job_for(session: Session, item: LinkedItem, on_cancel: str | None = None) -> PushJob | None:
    """The write that brings the calendar copy in step with the appointment as it is now."""
    appt = session.get(Appointment, item.appointment_id)
    if appt is None:
        return None
    if on_cancel is None:
        company = session.get(Company, appt.company_id)
        assert company is not None
        on_cancel = get_company_settings(company).cancelled_in_calendar
    if appt.status == STATUS_CANCELLED and on_cancel == "delete":
        if item.href is None:  # never made it to the calendar: nothing to remove
            item.state = "deleted"
            return None
        return PushJob(item.id, appt.id, item.href, item.etag, "delete", None,
                       appt.revision, appt.sequence, appt.start_at, appt.end_at)
    return PushJob(item.id, appt.id, item.href, item.etag, "put", render_copy(appt),
                   appt.revision, appt.sequence, appt.start_at, appt.end_at)


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(0, attempts - 1)), MAX_BACKOFF)


@dataclass
class PushResult:
    job: PushJob
    ok: bool
    href: str | None = None
    etag: str | None = None
    body_hash: str | None = None
    error: str | None = None
    precondition_failed: bool = False  # 412: re-read and decide again


def execute_push(client: Any, calendar_url: str, uid: str, job: PushJob) -> PushResult:
    """One conditional write. `client` is a caldav DAVClient on the guarded session."""
    headers = {"Content-Type": "text/calendar; charset=utf-8"}
    if job.action == "delete":
        headers = {"If-Match": job.etag} if job.etag else {}
        response = client.delete(job.href, headers)
        if response.status in (200, 204, 404, 410):
            return PushResult(job, True, href=None)
        return _failed(job, response.status)
    href = job.href or calendar_url.rstrip("/") + "/" + item_name(uid)
    if job.href is not None and not job.etag:
        # We know where our copy is but not its version (a create whose answer was lost):
        # read it before writing, so the write stays conditional.
        current = client.request(href, "GET")
        if current.status in (404, 410):
            job.href = None
        else:
            job.etag = current.headers.get("ETag")
    if job.href is None:
        headers["If-None-Match"] = "*"  # create, never replace something that is there
    elif job.etag:
        headers["If-Match"] = job.etag
    assert job.body is not None
    response = client.put(href, job.body, headers)
    if response.status not in (200, 201, 204):
        return _failed(job, response.status, href)
    etag = response.headers.get("ETag")
    if not etag:  # PROTOCOL.md: a PUT without an ETag in the answer means GET it again
        etag = client.request(href, "GET").headers.get("ETag")
    return PushResult(job, True, href=href, etag=etag, body_hash=content_hash(job.body))


def _failed(job: PushJob, status: int, href: str | None = None) -> PushResult:
    if status == 412:
        return PushResult(
            job,
            False,
            href=href or job.href,
            precondition_failed=True,
            error="The event was changed in the calendar at the same time; it is read again.",
        )
    if status in (401, 403):
        return PushResult(
            job,
            False,
            error="The calendar server refused the write: check that "
            "the calendar still grants write access (Editor/Delegate).",
        )
    return PushResult(
        job,
        False,
        error=f"The calendar server could not store the booking (HTTP {status}); it will be retried.",
    )


def record_push(session: Session, result: PushResult) -> None:
    item = session.get(LinkedItem, result.job.item_id)
    if item is None:
        return
    job = result.job
    item.updated_at = utcnow()
    if result.ok:
        item.href, item.etag, item.content_hash = result.href, result.etag, result.body_hash
        item.pushed_revision, item.pushed_sequence = job.revision, job.sequence
        item.synced_start, item.synced_end = job.start, job.end
        item.state = "deleted" if job.action == "delete" else "synced"
        item.last_error, item.attempts = None, 0
        # Only what we pushed counts as "in step"; a change made since stays pending.
        appt = session.get(Appointment, job.appointment_id)
        if appt is not None and appt.revision != job.revision:
            item.state = "pending"
        return
    item.attempts += 1
    item.last_error = result.error
    if result.precondition_failed and result.href and job.href is None:
        item.href = result.href  # it exists already (an earlier push that we did not record)
    item.state = "error"
