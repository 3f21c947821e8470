"""Two-way sync of a linked calendar: apply the moves and deletions staff make there.

The model is vdirsyncer's: each of our events has a status (href, ETag, content hash, and the
appointment revision and times it was last in step with). An item changed on the calendar side
when its ETag *and* its content hash changed. Then:

- moved (DTSTART/DTEND differ from what we last synced): reschedule through the same rules as
  any reschedule (no overlap; outside working hours allowed: the staff member chose it), with
  the customer emailed — unless the appointment also changed on the platform since the last
  sync, or the move collides: then a conflict is recorded and nothing is overwritten;
- deleted: company setting calendar_delete_action — cancel (customer emailed) or restore;
- with two-way sync off (or the staff member opted out), the platform wins: the event is put
  back as booked.
A listing where every one of our events vanished at once is treated as an error until an admin
confirms it (a calendar emptied by a glitch must not cancel a day of bookings).

Only a deletion the calendar confirmed cancels (or restores) a booking: one it reported deleted,
one missing from a listing of the whole calendar, or one read by id and answered 404/410.
A Graph listing covers the sync window only, so every day some of our bookings drop out of it
(the past edge) and a booking moved out of it in Outlook is `@removed` with reason `changed`:
feeds.calendars.absence reads each of our bookings that the reading did not vouch for by id
first, while the store is open; a booking outside the window is left alone without a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.calendars.absence import WATCHED
from calsync.feeds.calendars.push import content_hash
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import CalsyncError, SchedulingError
from calsync.feeds.mail.notifications import queue_conflict_emails
from calsync.feeds.scheduling.booking import cancel_appointment, reschedule_appointment
from calsync.feeds.sources.busy_time import CalendarDataError, tame_timezone_rules
from calsync.feeds.sources.time_zones import parse_with_own_zones
from calsync.models import (
    STATUS_CANCELLED,
    STATUS_CONFIRMED,
    Appointment,
    Company,
    Conflict,
    Connection,
    LinkedItem,
    LinkedItemState,
    Staff,
    utcnow,
)

log = logging.getLogger("calsync.twoway")
MASS_DELETE_MINIMUM = 2


@dataclass
class ReconcileReport:
    moved: int = 0
    cancelled: int = 0
    restored: int = 0
    conflicts: int = 0
    put_back: int = 0
    errors: list[str] = field(default_factory=list)


def unapplied_warning(report: ReconcileReport) -> str | None:
    """The sentence for the connection's health when calendar-side changes of our events were
    not applied (an event that cannot be read, a change the rules refused), or None."""
    if not report.errors:
        return None
    return (f"{len(report.errors)} change(s) made in this calendar to bookings could not be applied. "
            f"{report.errors[0]} Open the booking in the calendar and correct or delete it.")


@dataclass(frozen=True)
class RemoteEvent:
    uid: str | None
    start: datetime | None
    end: datetime | None
    cancelled: bool
    sequence: int | None = None  # the calendar app may raise it when the event is moved there


def _sequence(value: object) -> int | None:
    try:
        number = int(str(value)) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number < 2**31 else None


def parse_remote(body: bytes) -> RemoteEvent:
    """Our booking as the calendar has it now. The body is the calendar server's (untrusted):
    anything unreadable in it — a broken date, a moment beyond the year 9999 in UTC — is one
    named error, never another exception, and its time zones are tamed as for busy time."""
    try:
        cal = parse_with_own_zones(tame_timezone_rules(body), multiple=False)
        masters = [e for e in cal.walk("VEVENT") if e.get("RECURRENCE-ID") is None]
        if not masters:
            return RemoteEvent(None, None, None, True)
        ev = masters[0]
        start, end = ev.get("DTSTART"), ev.get("DTEND")

        def utc(prop: object) -> datetime | None:
            value = getattr(prop, "dt", None)
            if isinstance(value, datetime):
                return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            return None

        return RemoteEvent(
            uid=str(ev.get("UID")) if ev.get("UID") else None,
            start=utc(start),
            end=utc(end),
            cancelled=str(ev.get("STATUS", "")).upper() == "CANCELLED",
            sequence=_sequence(ev.get("SEQUENCE")),
        )
    except Exception as exc:  # icalendar raises ValueError, KeyError, BrokenCalendarProperty, ...
        raise CalendarDataError("invalid", "A booking in the linked calendar could not be read.") from exc


def two_way_enabled(session: Session, conn: Connection) -> bool:
    company = session.get(Company, conn.company_id)
    staff = session.get(Staff, conn.staff_id)
    assert company is not None and staff is not None
    return (
        "linked" in (conn.roles or [])
        and get_company_settings(company).bidirectional_sync
        and not staff.bidirectional_opt_out
    )


def set_two_way_opt_out(staff: Staff, opted_out: bool, now: datetime) -> bool:
    """A staff member opts out of two-way sync (or back in); returns whether anything changed.

    Opted out, two_way_enabled is false for all their calendars: a move or deletion there is put
    back as booked at the next sync, as with two-way sync off. The time is kept for the admin.
    """
    if staff.bidirectional_opt_out == opted_out:
        return False
    staff.bidirectional_opt_out = opted_out
    staff.bidirectional_opt_out_at = now if opted_out else None
    return True


def _open_conflict(
    session: Session, item: LinkedItem, appt: Appointment, reason: str, remote: RemoteEvent | None
) -> Conflict:
    existing = session.scalar(
        select(Conflict).where(Conflict.appointment_id == appt.id, Conflict.status == "open")
    )
    if existing is not None:
        return existing
    conflict = Conflict(
        company_id=appt.company_id,
        appointment_id=appt.id,
        connection_id=item.connection_id,
        reason=reason,
        calendar_start=remote.start if remote else None,
        calendar_end=remote.end if remote else None,
        calendar_deleted=remote is None,
        platform_start=appt.start_at,
        platform_end=appt.end_at,
        status="open",
        created_at=utcnow(),
    )
    session.add(conflict)
    item.state = LinkedItemState.CONFLICT  # no push until an admin decides
    queue_conflict_emails(session, conflict)  # "the staff member is told"
    return conflict


def reconcile(
    sessions: sessionmaker[Session],
    connection_id: int,
    *,
    etags: dict[str, str],
    data: dict[str, bytes],
    deleted: set[str],
    full: bool,
    unsure: set[str] | frozenset[str] = frozenset(),
    window: tuple[datetime, datetime] | None = None,
) -> ReconcileReport:
    """Apply calendar-side changes of our events; each decision in its own transaction.
    A booking is deleted only when the calendar said so: reported deleted and not `unsure`
    (changes.ChangeSet), or missing from a `full` listing of the whole calendar (`window`
    None). Missing from a windowed listing, or moved out of the window, it is left alone
    (confirm_absent reads those by id beforehand)."""
    report = ReconcileReport()
    with sessions.begin() as s:
        conn = s.get(Connection, connection_id)
        if conn is None:
            return report
        # Plain rows, not ORM objects: a linked calendar holds thousands of our events, and
        # every sync reads them all.
        items: dict[str, tuple[int, str | None, str | None]] = {}
        # The copies whose deletion would cancel a booking: a cancelled appointment's copy
        # gone from the calendar is what the platform wants, whatever else vanished with it.
        at_stake: set[str] = set()
        for href, item_id, etag, known_hash, status in s.execute(
            select(LinkedItem.href, LinkedItem.id, LinkedItem.etag, LinkedItem.content_hash,
                   Appointment.status)
            .outerjoin(Appointment, Appointment.id == LinkedItem.appointment_id)
            .where(
                LinkedItem.connection_id == connection_id,
                LinkedItem.href.is_not(None),
                LinkedItem.state.in_(WATCHED),
            )
        ):
            if href is None:  # excluded by the query; says so to the type checker
                continue
            items[href] = (item_id, etag, known_hash)
            if status == STATUS_CONFIRMED:
                at_stake.add(href)
        confirmed = bool((conn.extra or {}).get("deletions_confirmed"))
    gone = {h for h in items if h not in etags and (
        (h in deleted and h not in unsure) or (full and window is None))}
    if len(at_stake) >= MASS_DELETE_MINIMUM and at_stake <= gone and not confirmed:
        raise CalendarDataError(
            "mass_delete",
            f"All {len(at_stake)} bookings disappeared from the linked calendar at once, so nothing was "
            "cancelled. If that was intended, confirm it under Sync health; otherwise check the "
            "calendar.",
        )
    for href, (item_id, etag, known_hash) in items.items():
        if href in gone:
            _apply(sessions, item_id, None, report)
            continue
        body = data.get(href)
        if body is None or etags.get(href) == etag:
            continue
        digest = content_hash(body)
        if digest == known_hash:
            with sessions.begin() as s:
                item = s.get(LinkedItem, item_id)
                if item is not None:
                    item.etag = etags.get(href)
            continue
        try:
            remote = parse_remote(body)
        except CalendarDataError as exc:
            report.errors.append(str(exc))
            continue
        _apply(sessions, item_id, (remote, etags.get(href), digest), report)
    if confirmed:
        with sessions.begin() as s:
            conn = s.get(Connection, connection_id)
            if conn is not None:
                conn.extra = {k: v for k, v in (conn.extra or {}).items() if k != "deletions_confirmed"}
    return report


def reconcile_item(
    sessions: sessionmaker[Session], item_id: int, current: tuple[bytes, str | None] | None
) -> ReconcileReport:
    """Decide about one of our events read just now: `current` is (body, ETag), None if gone."""
    report = ReconcileReport()
    if current is None:
        _apply(sessions, item_id, None, report)
        return report
    body, etag = current
    try:
        remote = parse_remote(body)
    except CalendarDataError as exc:
        report.errors.append(str(exc))
        return report
    _apply(sessions, item_id, (remote, etag, content_hash(body)), report)
    return report


def _source(conn: Connection) -> str:
    """The history's source of a change made in the calendar: the provider for Google and
    Microsoft connections, else "calendar" (CalDAV)."""
    return conn.kind if conn.kind in ("google", "microsoft") else "calendar"


def _apply(
    sessions: sessionmaker[Session],
    item_id: int,
    change: tuple[RemoteEvent, str | None, str] | None,
    report: ReconcileReport,
) -> None:
    """One calendar-side change of one of our events: deleted (change None) or edited."""
    try:
        with sessions.begin() as s:
            item = s.get(LinkedItem, item_id)
            if item is None:
                return
            conn = s.get(Connection, item.connection_id)
            appt = s.get(Appointment, item.appointment_id)
            if conn is None or appt is None:
                return
            company = s.get(Company, appt.company_id)
            assert company is not None
            remote = None if change is None or change[0].cancelled else change[0]
            if change is not None:
                item.etag, item.content_hash = change[1], change[2]
            if remote is not None and (remote.start, remote.end) == (item.synced_start, item.synced_end):
                return  # edited, but not moved (a note, a reminder): nothing to apply
            if appt.status == STATUS_CANCELLED:
                item.state, item.href = ((LinkedItemState.DELETED, None) if remote is None
                                           else (LinkedItemState.PENDING, item.href))
                return
            if not two_way_enabled(s, conn):
                # The platform wins: put the booking back (a deleted copy is created again).
                if remote is None:
                    item.href, item.etag = None, None
                item.state = LinkedItemState.PENDING
                report.put_back += 1
                return
            if appt.revision != item.pushed_revision:
                _open_conflict(
                    s,
                    item,
                    appt,
                    "The booking was changed both on the platform and in the calendar since the last sync.",
                    remote,
                )
                report.conflicts += 1
                return
            if remote is None:
                if get_company_settings(company).calendar_delete_action == "restore":
                    item.href, item.etag, item.state = None, None, LinkedItemState.PENDING
                    report.restored += 1
                    return
                cancel_appointment(s, company, appt.id, source=_source(conn))
                item.state, item.href, item.etag = LinkedItemState.DELETED, None, None
                report.cancelled += 1
                return
            if remote.start is None or remote.end is None or remote.end <= remote.start:
                _open_conflict(
                    s,
                    item,
                    appt,
                    "The event in the calendar has no usable start and end "
                    "time (perhaps it was made an all-day event).",
                    remote,
                )
                report.conflicts += 1
                return
            try:
                with s.begin_nested():
                    if remote.sequence is not None and remote.sequence - 1 > appt.sequence:
                        # The copy written back must not have a lower SEQUENCE than the one the
                        # calendar app gave the moved event (RFC 5546 §2.1.4: clients keep the
                        # highest); the reschedule adds one, so it ends at the app's own.
                        appt.sequence = remote.sequence - 1
                        s.flush()
                    reschedule_appointment(
                        s,
                        company,
                        appt.id,
                        start=remote.start,
                        end=remote.end,
                        within_working_hours=False,
                        source=_source(conn),
                    )
            except SchedulingError as exc:
                _open_conflict(s, item, appt, f"The move in the calendar was not applied: {exc}", remote)
                report.conflicts += 1
                return
            # The calendar already shows the new time: in step at this revision. The push that
            # after_change queued only refreshes the copy (new SEQUENCE).
            item.synced_start, item.synced_end = remote.start, remote.end
            item.pushed_revision, item.pushed_sequence = appt.revision, appt.sequence
            report.moved += 1
    except CalsyncError as exc:
        log.info("calendar change of linked item %s not applied: %s", item_id, exc)
        report.errors.append(str(exc))
