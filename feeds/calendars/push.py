"""Write bookings into staff members' linked and additional CalDAV calendars.

Every change of an appointment marks its copy in each writable linked/additional calendar as
pending (in the change's transaction, via change_effects). The connection's sync job pushes
pending copies under the connection's lease, with the rules of docs/protocol.md ("CalDAV"):

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
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.calendars.store import CalendarStore, ItemNotFound, PreconditionFailed, WriteRefused
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.ical.vevent import Party, build_vevent
from calsync.feeds.ical.vtimezone import vtimezone
from calsync.feeds.mail.outbox import MailIdentity, mail_identity
from calsync.models import (
    STATUS_CANCELLED,
    Appointment,
    Company,
    Connection,
    LinkedItem,
    LinkedItemState,
    utcnow,
)

MAX_BACKOFF = timedelta(hours=1)


def item_name(uid: str) -> str:
    """A safe resource name for an appointment's copy, derived from its UID."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", uid.split("@")[0])[:80] + ".ics"


def copy_organizer(appt: Appointment) -> Party:
    """The ORGANIZER of a staff calendar's copy: the company, with the address its emails come
    from (CALSYNC_MAIL_FROM), as in the iTIP the customer gets (feeds/mail/itip.py). An event
    with attendees has one (RFC 5545 §3.8.4.3). SCHEDULE-AGENT=CLIENT here too: an edit in the
    staff calendar must not make the server send the organizer a REPLY (RFC 6638 §7.1)."""
    state = sa_inspect(appt, raiseerr=False)
    session = state.session if state is not None else None
    identity = mail_identity(session) if session is not None else MailIdentity()
    company = session.get(Company, appt.company_id) if session is not None else None
    name = company.name if company is not None else identity.from_address
    return Party(identity.from_address, name, (("SCHEDULE-AGENT", "CLIENT"),))


def render_copy(appt: Appointment, mark_cancelled: bool = False, organizer: Party | None = None) -> str:
    """The appointment as a calendar object for the staff member's own calendar (full detail:
    it is their calendar).

    Times are in the staff member's zone, with its VTIMEZONE (the feeds' own, issue 13): the
    calendar app shows and edits the event in that zone, so a move made there and applied by
    two-way sync is written back in the zone it was made in, not turned into UTC. A cancelled
    copy kept in the calendar (cancelled_in_calendar=mark) is TRANSPARENT and says so in its
    title, so it blocks no time even where STATUS is ignored."""
    cal = Calendar()
    cal.add("prodid", "-//calsync//calsync bookings 1.0//EN")
    cal.add("version", "2.0")
    customer = appt.customer
    lines = [f"Customer: {customer.name}"]
    if customer.email:
        lines.append(f"Email: {customer.email}")
    if customer.phone:
        lines.append(f"Phone: {customer.phone}")
    if appt.notes:
        lines.append(f"Notes: {appt.notes}")
    lines.append(
        "Booked through calsync: moving or deleting this event changes the booking when two-way sync is on."
    )
    # RFC 6638 §7.1: we send the customer's invitation ourselves; the server must not.
    attendee = Party(customer.email, customer.name, (
        ("ROLE", "REQ-PARTICIPANT"), ("PARTSTAT", "ACCEPTED"), ("SCHEDULE-AGENT", "CLIENT"),
    )) if customer.email else None
    cancelled = mark_cancelled or appt.status == STATUS_CANCELLED
    summary = f"{appt.service} – {customer.name}"
    event = build_vevent(
        appt, summary=f"Cancelled: {summary}" if cancelled else summary,
        description="\n".join(lines), history=False, cancelled=cancelled, transparent=cancelled,
        times_in=ZoneInfo(appt.staff.timezone),
        organizer=(organizer or copy_organizer(appt)) if attendee else None, attendee=attendee,
        extra=(("x-calsync-appointment", str(appt.id)),),
    )
    text = cal.to_ical().decode("utf-8")
    # UTC times (a UTC staff zone, a wall time that occurs twice) carry a Z and need no zone.
    tzids = {str(event[p].params["TZID"]) for p in ("DTSTART", "DTEND") if "TZID" in event[p].params}
    first, last = date(appt.start_at.year - 1, 1, 1), date(appt.end_at.year + 2, 1, 1)
    zones = "".join(vtimezone(tzid, first, last) for tzid in sorted(tzids))
    return text.replace("END:VCALENDAR\r\n", zones + event.to_ical().decode("utf-8") + "END:VCALENDAR\r\n")


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
        LinkedItem.connection_id == conn.id,
        LinkedItem.state.in_((LinkedItemState.PENDING, LinkedItemState.ERROR))
    ).order_by(LinkedItem.id).limit(limit))
    for item in items:
        if item.state == LinkedItemState.ERROR and item.updated_at + _backoff(item.attempts) > now:
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
            item.state = LinkedItemState.DELETED
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


def execute_push(store: CalendarStore, uid: str, job: PushJob) -> PushResult:
    """One conditional write of a pending copy into the calendar store."""
    href = job.href
    try:
        if job.action == "delete":
            assert job.href is not None
            with suppress(ItemNotFound):  # gone already: what the delete was for
                store.delete(job.href, job.etag)
            return PushResult(job, True, href=None)
        assert job.body is not None
        body = job.body.encode("utf-8")
        if job.href is not None and not job.etag:
            # We know where our copy is but not its version (a create whose answer was lost):
            # read it before writing, so the write stays conditional.
            try:
                job.etag = store.get(job.href).etag
            except ItemNotFound:
                job.href = None
        if job.href is None:
            written = store.create(item_name(uid), body)
        else:
            written = store.update(job.href, body, job.etag)
    except PreconditionFailed as exc:
        return PushResult(job, False, href=href or exc.href, precondition_failed=True, error=str(exc))
    except WriteRefused as exc:
        return PushResult(job, False, error=str(exc))
    return PushResult(job, True, href=written.href, etag=written.etag, body_hash=content_hash(body))


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
        item.state = LinkedItemState.DELETED if job.action == "delete" else LinkedItemState.SYNCED
        item.last_error, item.attempts = None, 0
        # Only what we pushed counts as "in step"; a change made since stays pending.
        appt = session.get(Appointment, job.appointment_id)
        if appt is not None and appt.revision != job.revision:
            item.state = LinkedItemState.PENDING
        return
    item.attempts += 1
    item.last_error = result.error
    if result.precondition_failed and result.href and job.href is None:
        item.href = result.href  # it exists already (an earlier push that we did not record)
    item.state = LinkedItemState.ERROR
