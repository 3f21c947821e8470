"""Conflicts: calendar-side changes of bookings that two-way sync did not apply, each with both
versions side by side, and the admin's decision (feeds.conflicts.resolve_conflict, the same call
as POST /api/v1/conflicts/{id}/resolve); below, the recently resolved ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from calsync.feeds.calendars import conflicts as conflicts_core
from calsync.feeds.errors import CalsyncError, NotFoundError, ValidationError
from calsync.models import (
    STATUS_CANCELLED,
    Appointment,
    Company,
    Conflict,
    ConflictResolution,
    ConflictStatus,
    Connection,
)
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_arg, page_of
from calsync.web.formatting import ago

RECENTLY_RESOLVED = 20
PAGE_SIZE = 10


def span(start: datetime | None, end: datetime | None, tz: str) -> str:
    """'Mon 12 Jan 2026, 10:00–11:00 CET' on the given clock; the end's date only if it differs."""
    if start is None or end is None:
        return ""
    zone = ZoneInfo(tz)
    a, b = start.astimezone(zone), end.astimezone(zone)
    last = b.strftime("%H:%M") if a.date() == b.date() else b.strftime("%a %d %b %Y, %H:%M")
    return f"{a:%a %d %b %Y, %H:%M}–{last} {b:%Z}".strip()


@dataclass
class ConflictRow:
    """One conflict as the page shows it: texts computed here, on the company's clock."""

    conflict: Conflict
    appointment: Appointment | None
    calendar_name: str | None
    platform_when: str  # the booking now: what "keep platform" keeps
    platform_recorded: str  # the booking when the conflict was found
    platform_status: str
    platform_changed_since: bool  # the booking moved again after the conflict was found
    calendar_when: str
    calendar_usable: bool  # "keep calendar" can be applied (a time, or a deletion)
    differs: bool


def _rows(conflicts: Iterable[Conflict], tz: str) -> list[ConflictRow]:
    conflicts = list(conflicts)
    s = db.session()
    # Two queries for the whole page instead of two per conflict.
    appointments = {
        a.id: a
        for a in s.scalars(
            select(Appointment).where(Appointment.id.in_({c.appointment_id for c in conflicts}))
        )
    }
    names: dict[int, str] = {
        conn_id: name
        for conn_id, name in s.execute(
            select(Connection.id, Connection.name).where(
                Connection.id.in_({c.connection_id for c in conflicts if c.connection_id is not None})
            )
        )
    }
    out = []
    for c in conflicts:
        appt = appointments.get(c.appointment_id)
        start, end = (appt.start_at, appt.end_at) if appt else (c.platform_start, c.platform_end)
        if c.calendar_deleted:
            calendar_when = "Deleted from the calendar"
        elif c.calendar_start is None or c.calendar_end is None:
            calendar_when = "No usable start and end time (perhaps made an all-day event)"
        else:
            calendar_when = span(c.calendar_start, c.calendar_end, tz)
        out.append(
            ConflictRow(
                conflict=c,
                appointment=appt,
                calendar_name=names.get(c.connection_id) if c.connection_id is not None else None,
                platform_when=span(start, end, tz),
                platform_recorded=span(c.platform_start, c.platform_end, tz),
                platform_status="Cancelled" if appt and appt.status == STATUS_CANCELLED else "Confirmed",
                platform_changed_since=(start, end) != (c.platform_start, c.platform_end),
                calendar_when=calendar_when,
                calendar_usable=conflicts_core.calendar_version_usable(c),
                differs=c.calendar_deleted or (c.calendar_start, c.calendar_end) != (start, end),
            )
        )
    return out


def _recently_resolved(company: Company) -> list[Conflict]:
    # The newest few only: resolved conflicts pile up over the years.
    return list(
        db.session().scalars(
            select(Conflict)
            .where(Conflict.company_id == company.id, Conflict.status == ConflictStatus.RESOLVED)
            .order_by(Conflict.resolved_at.desc(), Conflict.id.desc())
            .limit(RECENTLY_RESOLVED)
        )
    )


@bp.get("/conflicts", endpoint="conflicts")
def list_conflicts() -> str:
    company = current_company()
    tz = company.timezone
    waiting = conflicts_core.list_conflicts(db.session(), company, ConflictStatus.OPEN)
    # Each is a card with both versions: a few to a page, oldest first (the longest waiting).
    page, pages = page_of(request.args.get("page"), len(waiting), PAGE_SIZE)
    return render_template(
        "admin/conflicts.html",
        company=company,
        open_count=len(waiting), page=page, pages=pages,
        open_rows=_rows(waiting[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], tz),
        resolved_rows=_rows(_recently_resolved(company), tz),
    )


def _kept_sentence(conflict: Conflict, appt: Appointment | None, tz: str) -> str:
    if conflict.resolution == ConflictResolution.PLATFORM:
        when = span(appt.start_at, appt.end_at, tz) if appt else ""
        return (
            f"Kept the platform version: the booking stays at {when}, and the calendar event is put "
            "back at the next sync."
        )
    if conflict.calendar_deleted:
        told = (f" {appt.customer.name} is emailed the cancellation." if appt and appt.customer.email
                else "")
        return ("Kept the calendar version: the booking is cancelled, as it was deleted from the "
                f"calendar.{told}")
    mailed = " and the customer gets an updated invitation" if appt and appt.customer.email else ""
    return (
        f"Kept the calendar version: the booking moved to "
        f"{span(conflict.calendar_start, conflict.calendar_end, tz)}{mailed}."
    )


@bp.post("/conflicts/<int:conflict_id>/resolve")
def resolve_conflict(conflict_id: int) -> Response:
    """The core decides what may be kept (feeds.calendars.conflicts.resolve_conflict, as the API
    does); this view only words its refusals for the page."""
    back = redirect(url_for("admin.conflicts", page=page_arg(request.form.get("page"))))
    s = db.session()
    company = current_company()
    keep = request.form.get("keep", "")
    try:
        conflict = conflicts_core.resolve_conflict(s, company, conflict_id, keep)
    except NotFoundError:
        abort(404)
    except ValidationError as exc:  # neither "platform" nor "calendar"
        flash(str(exc), "error")
        return back
    except conflicts_core.AlreadyResolvedError as exc:
        done = exc.conflict
        kept = f"the {done.resolution} version was kept" if done.resolution else "it was decided"
        flash(f"This conflict was already resolved {ago(done.resolved_at)}: {kept}. Nothing changed.",
              "info")
        return back
    except conflicts_core.CalendarVersionUnusableError:
        flash(
            "The calendar version has no usable start and end time, so it cannot be kept (perhaps "
            "the event was made an all-day one). Keep the platform version: the event is then put "
            "back in the calendar at the booking's time.",
            "error",
        )
        return back
    except CalsyncError as exc:  # e.g. the calendar's time now overlaps another booking
        s.rollback()
        flash(
            f"The {keep} version was not kept: {exc} Nothing changed; keep the other version, or "
            "make room first and try again.",
            "error",
        )
        return back
    appt = s.get(Appointment, conflict.appointment_id)
    message = _kept_sentence(conflict, appt, company.timezone)
    s.commit()
    flash(message, "success")
    return back


def _open_conflict_count() -> int:
    if not current_user.is_authenticated:
        return 0
    return (
        db.session().scalar(
            select(func.count())
            .select_from(Conflict)
            .where(Conflict.company_id == current_user.company_id, Conflict.status == ConflictStatus.OPEN)
        )
        or 0
    )


@bp.app_context_processor
def _nav_counts() -> dict[str, Callable[[], Any]]:
    # Called by the main navigation only (see web/admin/outbox.py).
    return {"open_conflict_count": _open_conflict_count}
