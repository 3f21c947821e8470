"""Appointments: a filtered list, book, reschedule, cancel (feeds.booking with source "admin"),
and each appointment's history. Times are entered and shown on the staff member's clock."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from calsync.feeds.errors import NotFoundError, SchedulingError, ValidationError
from calsync.feeds.scheduling import booking, directory
from calsync.feeds.scheduling.history import appointment_history
from calsync.models import Appointment, AppointmentChange, ChangeAction, ChangeSource, Staff, utcnow
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.appointment_delivery import calendar_copies, customer_emails, reach_sentence
from calsync.web.formatting import local

PAGE_SIZE = 50  # a page of appointments stays a few screens tall, on a phone too
SOURCE_LABELS = {ChangeSource.API: "the API", ChangeSource.ADMIN: "an admin",
                 ChangeSource.CALENDAR: "the staff calendar",
                 ChangeSource.CONFLICT: "a conflict decision", ChangeSource.DEMO: "the demo data",
                 ChangeSource.GOOGLE: "the staff member's Google Calendar",
                 ChangeSource.MICROSOFT: "the staff member's Outlook calendar"}


def _day(value: str | None, fallback: date) -> date:
    try:
        return date.fromisoformat(value) if value else fallback
    except ValueError:
        return fallback


def _moment(day: str, clock: str, tz: str, what: str) -> datetime:
    try:
        naive = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M")
    except ValueError as exc:
        raise ValidationError(f"Give the {what} as a date and a time (HH:MM).", what) from exc
    return naive.replace(tzinfo=ZoneInfo(tz))


def _when(form: Any, staff: Staff) -> tuple[datetime, datetime]:
    day = form.get("date", "")
    return (_moment(day, form.get("start", ""), staff.timezone, "start"),
            _moment(day, form.get("end", ""), staff.timezone, "end"))


@bp.get("/appointments")
def appointments() -> str:
    s = db.session()
    company = current_company()
    tz = ZoneInfo(company.timezone)
    today = utcnow().astimezone(tz).date()
    first = _day(request.args.get("from"), today)
    last = _day(request.args.get("to"), first + timedelta(days=30))
    if last < first:
        last = first
    staff_id = request.args.get("staff", type=int)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    # One row more than a page: whether there is a next page, without counting them all.
    rows = booking.list_appointments(
        s, company, staff_id=staff_id,
        start=datetime.combine(first, datetime.min.time(), tzinfo=tz),
        end=datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=tz),
        limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE,
    )
    return render_template(
        "admin/appointments.html", rows=rows[:PAGE_SIZE], more=len(rows) > PAGE_SIZE, page=page,
        staff=directory.list_staff(s, company), staff_id=staff_id, first=first, last=last, company=company,
    )


@bp.route("/appointments/new", methods=["GET", "POST"])
def new_appointment() -> Response | tuple[str, int]:
    s = db.session()
    company = current_company()
    members = directory.list_staff(s, company)
    values: dict[str, Any] = dict(request.form) if request.method == "POST" else {
        "staff_id": request.args.get("staff", ""), "date": request.args.get("date", ""),
    }
    if request.method == "POST":
        try:
            _check_required(request.form)
            staff = directory.get_staff(s, company, _int(request.form.get("staff_id")))
            start, end = _when(request.form, staff)
            appointment = booking.book_appointment(
                s, company, staff_id=staff.id, start=start, end=end,
                service=request.form.get("service", "").strip()[:200],
                customer=booking.CustomerDetails(
                    name=request.form.get("customer_name", "").strip()[:200],
                    email=request.form.get("customer_email", "").strip()[:320] or None,
                    phone=request.form.get("customer_phone", "").strip()[:64] or None,
                ),
                location=request.form.get("location", "").strip()[:500] or None,
                notes=request.form.get("notes", "").strip() or None,
                source=ChangeSource.ADMIN,
            )
        except (ValidationError, SchedulingError, NotFoundError) as exc:
            s.rollback()
            flash(str(exc), "error")
            return render_template("admin/appointment_new.html", staff=members, values=values), 422
        s.commit()
        reach = reach_sentence(s, appointment, appointment.staff.timezone)
        flash(f"Booked {appointment.service} for {appointment.customer.name}. {reach}".strip(), "success")
        return redirect(url_for("admin.appointment", appointment_id=appointment.id))
    return render_template("admin/appointment_new.html", staff=members, values=values), 200


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _check_required(form: Any) -> None:
    if not form.get("staff_id"):
        raise ValidationError("Choose the staff member.", "staff_id")
    if not form.get("service", "").strip():
        raise ValidationError("Name the service, e.g. Haircut.", "service")
    if not form.get("customer_name", "").strip():
        raise ValidationError("Give the customer's name.", "customer_name")


def _appointment(appointment_id: int) -> Appointment:
    try:
        return booking.get_appointment(db.session(), current_company(), appointment_id)
    except NotFoundError:
        abort(404)


def describe_change(change: AppointmentChange, tz: str) -> str:
    detail = change.detail or {}

    def at(key: str) -> str:
        value = detail.get(key)
        return local(datetime.fromisoformat(value), tz) if isinstance(value, str) else "?"

    by = SOURCE_LABELS.get(change.source, change.source)
    if change.action == ChangeAction.BOOKED:
        return f"Booked by {by} for {at('start')}."
    if change.action == ChangeAction.RESCHEDULED:
        return f"Moved by {by} from {at('previous_start')} to {at('start')}."
    if change.action == ChangeAction.CANCELLED:
        return f"Cancelled by {by}."
    return f"{change.action.capitalize()} by {by}."


@bp.get("/appointments/<int:appointment_id>")
def appointment(appointment_id: int) -> str:
    item = _appointment(appointment_id)
    tz = item.staff.timezone
    s = db.session()
    history = [(c, describe_change(c, tz)) for c in appointment_history(s, item.id)]
    return render_template(
        "admin/appointment.html", item=item, history=history, tz=tz,
        copies=calendar_copies(s, item, tz), emails=customer_emails(s, item),
    )


@bp.post("/appointments/<int:appointment_id>/reschedule")
def reschedule(appointment_id: int) -> Response:
    item = _appointment(appointment_id)
    s = db.session()
    try:
        start, end = _when(request.form, item.staff)
        booking.reschedule_appointment(s, current_company(), item.id, start=start, end=end,
                                       source=ChangeSource.ADMIN)
    except (ValidationError, SchedulingError) as exc:
        s.rollback()
        flash(str(exc), "error")
        return redirect(url_for("admin.appointment", appointment_id=appointment_id))
    s.commit()
    flash(f"Appointment moved. {reach_sentence(s, item, item.staff.timezone, 'moved')}".strip(), "success")
    return redirect(url_for("admin.appointment", appointment_id=appointment_id))


@bp.post("/appointments/<int:appointment_id>/cancel")
def cancel(appointment_id: int) -> Response:
    item = _appointment(appointment_id)
    s = db.session()
    try:
        booking.cancel_appointment(s, current_company(), item.id, source=ChangeSource.ADMIN)
    except SchedulingError as exc:
        s.rollback()
        flash(str(exc), "error")
        return redirect(url_for("admin.appointment", appointment_id=appointment_id))
    s.commit()
    told = (f" {item.customer.name} is emailed at {item.customer.email}." if item.customer.email
            else f" {item.customer.name} has no email address: let them know yourself.")
    flash(f"Appointment cancelled.{told} {reach_sentence(s, item, item.staff.timezone, 'cancelled')}".strip(),
          "success")
    return redirect(url_for("admin.appointment", appointment_id=appointment_id))
