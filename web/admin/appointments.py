"""Appointments: a filtered list, book, reschedule, cancel (feeds.booking with source "admin"),
and each appointment's history. Times are entered and shown on the staff member's clock."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from calsync.feeds.errors import NotFoundError, SchedulingError, ValidationError
from calsync.feeds.scheduling import booking, directory
from calsync.feeds.scheduling.calendar_block import CalendarBlock
from calsync.feeds.scheduling.history import appointment_history
from calsync.models import Appointment, AppointmentChange, ChangeAction, ChangeSource, Company, Staff, utcnow
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.appointment_delivery import calendar_copies, customer_emails, reach_sentence
from calsync.web.admin.paging import page_of
from calsync.web.calendar_forms import staff_blocks
from calsync.web.formatting import local, name_key

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


def _not_past(start: datetime, tz: str) -> None:
    """The admin forms book and move into the future only: a time that has passed would email
    the customer about an appointment they can no longer go to. (The JSON API and two-way sync
    keep their own rules.)"""
    now = utcnow()
    if start < now:
        raise ValidationError(
            f"The start time, {local(start, tz, '%H:%M on %a %d %b %Y')}, has already passed: it is now "
            f"{local(now, tz, '%H:%M on %a %d %b')} ({tz}). Choose a later time.",
            "start")


def is_past(item: Appointment) -> bool:
    """Whether the appointment already took place (it has ended)."""
    return item.end_at <= utcnow()


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
    start = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    page, pages = page_of(request.args.get("page"), _count(company, staff_id, start, end), PAGE_SIZE)
    rows = booking.list_appointments(s, company, staff_id=staff_id, start=start, end=end,
                                     limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render_template(
        "admin/appointments.html", rows=rows, page=page, pages=pages,
        staff=_sorted_staff(company), staff_id=staff_id, first=first, last=last, company=company,
    )


def _sorted_staff(company: Company) -> list[Staff]:
    """The staff members for a list to choose from, by name as a reader expects (Łukasz before Zoë)."""
    return sorted(directory.list_staff(db.session(), company), key=lambda m: name_key(m.name))


def _count(company: Company, staff_id: int | None, start: datetime, end: datetime) -> int:
    """How many appointments the list has (booking.list_appointments' filter), for "Page 1 of 4"."""
    query = select(func.count()).select_from(Appointment).where(
        Appointment.company_id == company.id, Appointment.end_at > start, Appointment.start_at < end)
    if staff_id is not None:
        query = query.where(Appointment.staff_id == staff_id)
    return db.session().scalar(query) or 0


@bp.route("/appointments/new", methods=["GET", "POST"])
def new_appointment() -> Response | tuple[str, int]:
    s = db.session()
    company = current_company()
    members = _sorted_staff(company)
    values: dict[str, Any] = dict(request.form) if request.method == "POST" else {
        "staff_id": request.args.get("staff", ""), "date": request.args.get("date", ""),
    }
    if request.method == "POST":
        try:
            _check_required(request.form)
            staff = directory.get_staff(s, company, _int(request.form.get("staff_id")))
            start, end = _when(request.form, staff)
            _not_past(start, staff.timezone)
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
            block = _block(company, values.get("staff_id"))
            # "Not booked:" each time Book is pressed, so the same page is never mistaken for the
            # one before; a calendar block is said once, in the note above the form.
            blocked = block is not None and str(exc) == block.sentence()
            return render_template("admin/appointment_new.html", staff=members, values=values,
                                   block=block, refused=not blocked, error=None if blocked else str(exc),
                                   error_field=None if blocked else getattr(exc, "field", None),
                                   not_booked=True, **_booking_note()), 422
        s.commit()
        reach = reach_sentence(s, appointment, appointment.staff.timezone)
        told = customer_told(appointment, "booked", done=True)
        flash(f"Booked {appointment.service} for {appointment.customer.name}. {reach} {told}"
              .replace("  ", " ").strip(), "success")
        return redirect(url_for("admin.appointment", appointment_id=appointment.id))
    return render_template("admin/appointment_new.html", staff=members, values=values,
                           block=_block(company, values.get("staff_id")), **_booking_note()), 200


def _booking_note() -> dict[str, Any]:
    return {"mail_configured": mail_configured()}


def _block(company: Company, staff_id: Any) -> CalendarBlock | None:
    """Why the chosen staff member cannot be booked because of a calendar, said before the form
    is filled in rather than after Book (feeds.scheduling.calendar_block)."""
    chosen = _int(staff_id)
    return staff_blocks(company, [chosen]).get(chosen) if chosen else None


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
        if detail.get("customer_not_emailed"):
            return f"Cancelled by {by}, without emailing the customer."
        return f"Cancelled by {by}."
    return f"{change.action.capitalize()} by {by}."


def mail_configured() -> bool:
    """Whether emails leave the outbox at all (CALSYNC_SMTP_URL is set)."""
    return db.services().mail.smtp is not None


def customer_told(item: Appointment, change: str = "cancelled", done: bool = False) -> str:
    """What the customer hears of a change, as the page says it before (and, with `done`, the
    message says it after): emailed, or — with no mail server set up — written to the outbox,
    where it waits."""
    customer = item.customer
    if not customer.email:
        if done:
            return f"{customer.name} has no email address: let them know yourself."
        return f"{customer.name} has no email address, so nobody is told: let them know yourself."
    news = "the new time" if change == "moved" else f"that it is {change}"
    if change == "booked":
        news = "a confirmation with a calendar invitation"
    if mail_configured():
        if change == "booked":
            return (f"{customer.name} is emailed a confirmation with a calendar invitation at "
                    f"{customer.email}.")
        if change == "moved":
            return f"{customer.name} is emailed the new time at {customer.email}."
        if done:
            return f"{customer.name} is emailed at {customer.email}."
        return f"{customer.name} is emailed at {customer.email} that it is {change}."
    if done:
        what = "confirmation" if change == "booked" else "email"
        return (f"The {what} to {customer.name} ({customer.email}) waits in the outbox, because no mail "
                "server is set up (CALSYNC_SMTP_URL).")
    return (f"The email telling {customer.name} ({customer.email}) {news} waits in the outbox, "
            "because no mail server is set up (CALSYNC_SMTP_URL).")


def _show(item: Appointment, status: int = 200, move: dict[str, str] | None = None,
          move_error: str | None = None) -> tuple[str, int]:
    tz = item.staff.timezone
    s = db.session()
    history = [(c, describe_change(c, tz)) for c in appointment_history(s, item.id)]
    if move is None:  # the form shows the appointment's own time until something else was typed
        move = {"date": local(item.start_at, tz, "%Y-%m-%d"), "start": local(item.start_at, tz, "%H:%M"),
                "end": local(item.end_at, tz, "%H:%M")}
    return render_template(
        "admin/appointment.html", item=item, history=history, tz=tz,
        copies=calendar_copies(s, item, tz), emails=customer_emails(s, item),
        move=move, move_error=move_error,
        told_cancelled=customer_told(item, "cancelled"), told_moved=customer_told(item, "moved"),
        mail_configured=mail_configured(), past=is_past(item),
    ), status


@bp.get("/appointments/<int:appointment_id>")
def appointment(appointment_id: int) -> tuple[str, int]:
    return _show(_appointment(appointment_id))


@bp.post("/appointments/<int:appointment_id>/reschedule")
def reschedule(appointment_id: int) -> Response | tuple[str, int]:
    item = _appointment(appointment_id)
    s = db.session()
    try:
        start, end = _when(request.form, item.staff)
        _not_past(start, item.staff.timezone)
        booking.reschedule_appointment(s, current_company(), item.id, start=start, end=end,
                                       source=ChangeSource.ADMIN)
    except (ValidationError, SchedulingError) as exc:
        # Shown again with what was typed, the error beside the Reschedule card: nothing is lost.
        s.rollback()
        s.expire_all()
        typed = {k: request.form.get(k, "") for k in ("date", "start", "end")}
        return _show(_appointment(appointment_id), 422, move=typed, move_error=str(exc))
    s.commit()
    told = customer_told(item, "moved", done=True)
    reach = reach_sentence(s, item, item.staff.timezone, "moved")
    flash(f"Appointment moved. {reach} {told}".replace("  ", " ").strip(), "success")
    return redirect(url_for("admin.appointment", appointment_id=appointment_id))


@bp.post("/appointments/<int:appointment_id>/cancel")
def cancel(appointment_id: int) -> Response:
    item = _appointment(appointment_id)
    s = db.session()
    # One that already took place is cancelled without an email unless the admin asks for one
    # (the dialog's "Also email …" box); an upcoming one always tells the customer.
    past = is_past(item)
    email = not past or request.form.get("email_customer") == "1"
    try:
        booking.cancel_appointment(s, current_company(), item.id, source=ChangeSource.ADMIN,
                                   email_customer=email)
    except SchedulingError as exc:
        s.rollback()
        flash(str(exc), "error")
        return redirect(url_for("admin.appointment", appointment_id=appointment_id))
    s.commit()
    if email or not item.customer.email:
        told = customer_told(item, "cancelled", done=True)
    else:
        told = f"{item.customer.name} was not emailed, as the appointment was in the past."
    reach = reach_sentence(s, item, item.staff.timezone, "cancelled")
    flash(f"Appointment cancelled. {told} {reach}".strip(), "success")
    return redirect(url_for("admin.appointment", appointment_id=appointment_id))
