"""A staff member's page: working hours, calendar connections (add, edit, delete, sync now),
the self-service connect link and their invitations (sent from web.admin.invitations)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from calsync.feeds.calendars import adding as calendar_setup
from calsync.feeds.calendars import connections as conns
from calsync.feeds.calendars.health import open_alerts
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.onboarding.connect_links import (
    LINK_DAYS,
    connect_sealer,
    connect_url,
    link_expiry,
    make_connect_token,
    revoke_connect_links,
)
from calsync.feeds.onboarding.invitations import link_state, list_invitations
from calsync.feeds.publishing import tokens
from calsync.feeds.scheduling import directory
from calsync.feeds.scheduling.working_hours import DAYS, normalise_working_hours
from calsync.models import Staff, utcnow
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_arg
from calsync.web.calendar_forms import (
    add_ics,
    added_message,
    chosen_roles,
    connect_chosen,
    connected_message,
    connection_json,
    copy_bookings,
    discover,
    flash_sync_result,
    form_error,
    kept_values,
    staff_blocks,
    sync_message,
    sync_now,
    uncopied_counts,
)
from calsync.web.formatting import flash_at, plural
from calsync.web.provider_forms import disconnect_connection, is_provider, provider_options
from calsync.web.views_common import feed_rows, two_way_for, wants_json

DAY_NAMES = dict(
    zip(DAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"), strict=True)
)


def hours_text(intervals: list[list[str]]) -> str:
    return ", ".join(f"{a}–{b}" for a, b in intervals)


def parse_hours(text: str, day: str) -> list[list[str]]:
    """'09:00–12:00, 13:00–17:00' → [['09:00', '12:00'], ['13:00', '17:00']]; blank: not working."""
    out = []
    for part in text.replace("—", "-").replace("–", "-").split(","):
        if not part.strip():
            continue
        start, sep, end = part.partition("-")
        if not sep:
            raise ValidationError(f"{DAY_NAMES[day]}: write each period as 09:00–17:00.", "working_hours")
        out.append([_clock(start), _clock(end)])
    return out


def _clock(value: str) -> str:
    value = value.strip()
    return f"0{value}" if len(value) == 4 and value[1] == ":" else value


def _render(staff: Staff, status: int = 200, **extra: Any) -> tuple[str, int]:
    s = db.session()
    company = current_company()
    connections = conns.list_connections(s, company, staff.id)
    feeds = [
        row
        for row in tokens.list_feed_tokens(s, company)
        if row.scope == "staff" and row.scope_id == staff.id
    ]
    extra.setdefault("values", {})
    hours = extra.pop("hours", None) or [
        (day, DAY_NAMES[day], hours_text(staff.working_hours.get(day, []))) for day in DAYS]
    hours_errors = extra.pop("hours_errors", {})
    now = utcnow()
    invitations = [
        (inv, email, link_state(inv, now)) for inv, email in list_invitations(s, company, staff.id)
    ]
    return render_template(
        "admin/staff.html",
        staff=staff,
        company=company,
        connections=connections,
        alerts=open_alerts(s, company),
        feeds=feed_rows(feeds),
        invitations=invitations,
        hours=hours,
        hours_errors=hours_errors,
        kinds=calendar_setup.allowed_kinds(company),
        link_days=LINK_DAYS,
        two_way=two_way_for(company, staff),
        block=staff_blocks(company, [staff.id]).get(staff.id),
        uncopied=uncopied_counts(connections),
        providers=provider_options(),
        **extra,
    ), status


def _staff(staff_id: int) -> Staff:
    try:
        return directory.get_staff(db.session(), current_company(), staff_id)
    except NotFoundError:
        abort(404)


@bp.get("/staff/<int:staff_id>")
def staff_page(staff_id: int) -> tuple[str, int]:
    return _render(_staff(staff_id))


def check_hours(form: Any) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    """Each day's periods, and per day what is wrong with what was typed (checked day by day,
    so every mistake is named beside its own day, not only the first)."""
    hours: dict[str, list[list[str]]] = {}
    errors: dict[str, str] = {}
    for day in DAYS:
        try:
            hours[day] = normalise_working_hours({day: parse_hours(form.get(f"hours-{day}", ""), day)})[day]
        except ValidationError as exc:
            # The message starts with the day ("Monday: ..."); the field names it, so the
            # sentence beside it starts after it ("Write times like 09:00–17:00.").
            said = str(exc).split(": ", 1)[-1]
            errors[day] = said[:1].upper() + said[1:]
    return hours, errors


@bp.post("/staff/<int:staff_id>/hours")
def save_hours(staff_id: int) -> Response | tuple[str, int]:
    staff = _staff(staff_id)
    s = db.session()
    hours, errors = check_hours(request.form)
    if errors:
        # Shown again with what was typed beside each error: nothing is saved, nothing is lost.
        typed = [(day, DAY_NAMES[day], request.form.get(f"hours-{day}", "")) for day in DAYS]
        return _render(staff, 422, hours=typed, hours_errors=errors)
    directory.update_staff(s, current_company(), staff.id, {"working_hours": hours})
    s.commit()
    flash("Working hours saved.", "success@hours")
    return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor="hours-saved"))


@bp.post("/staff/<int:staff_id>/calendars/ics")
def add_ics_calendar(staff_id: int) -> Response | tuple[str, int]:
    staff = _staff(staff_id)
    company, name = current_company(), staff.name
    try:
        conn, outcome = add_ics(company, staff.id, request.form)
    except ValidationError as exc:
        db.session().rollback()
        return _render(staff, 422, values=kept_values(request.form), open_form="ics",
                       error=form_error("ics", exc, company, name))
    flash_at(added_message(company, name, conn, outcome), "success" if conn.status != "error" else "error",
             f"connection-{conn.id}")
    return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor=f"connection-{conn.id}"))


@bp.post("/staff/<int:staff_id>/calendars/discover")
def discover_calendars(staff_id: int) -> tuple[str, int]:
    staff = _staff(staff_id)
    try:
        found, sealed = discover(current_company(), staff.id, request.form)
    except ValidationError as exc:
        return _render(staff, 422, values=kept_values(request.form), open_form="caldav",
                       error=form_error("caldav", exc, current_company(), staff.name))
    return _choose(staff, found, sealed)


def _choose(staff: Staff, found: list[Any], sealed: str, status: int = 200, error: str | None = None,
            form: Any = None) -> tuple[str, int]:
    s = db.session()
    company = current_company()
    return render_template(
        "admin/choose_calendars.html",
        staff=staff,
        calendars=found,
        discovery=sealed,
        action=url_for("admin.connect_calendars", staff_id=staff.id),
        back=url_for("admin.staff_page", staff_id=staff.id),
        read_only_reason=calendar_setup.READ_ONLY_REASON,
        standalone=False,
        linked_now=calendar_setup.linked_calendar(s, company, staff.id),
        upcoming=calendar_setup.upcoming_bookings(s, staff.id),
        error=error,
        form=form,
    ), status


@bp.post("/staff/<int:staff_id>/calendars/caldav")
def connect_calendars(staff_id: int) -> Response | tuple[str, int]:
    staff = _staff(staff_id)
    try:
        made, already, outcomes = connect_chosen(current_company(), staff.id, request.form)
    except ValidationError as exc:
        db.session().rollback()
        kept = calendar_setup.reopen_discovery(db.services().vault, request.form.get("discovery", ""),
                                               staff.id, clock=db.services().clock)
        if kept is None:  # too old to keep: back to the form, with the server and user typed
            return _render(staff, 422, open_form="caldav",
                           error=form_error("caldav", exc, current_company(), staff.name))
        return _choose(staff, kept, request.form.get("discovery", ""), 422, str(exc), request.form)
    flash_at(connected_message(made, already, outcomes), "success", "connections")
    return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor="connections"))


@bp.post("/connections/<int:connection_id>/copy-bookings")
def copy_bookings_now(connection_id: int) -> Response:
    try:
        conn, count, outcome = copy_bookings(current_company(), connection_id)
    except NotFoundError:
        abort(404)
    except ValidationError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.index"))
    flash_at(f"{plural(count, 'upcoming booking')} queued for '{conn.name}'. {sync_message(conn, outcome)}"
             if count else f"Every upcoming booking is already in '{conn.name}'.", "success",
             f"connection-{conn.id}")
    return redirect(url_for("admin.staff_page", staff_id=conn.staff_id, _anchor=f"connection-{conn.id}"))


@bp.route("/connections/<int:connection_id>/edit", methods=["GET", "POST"])
def edit_connection(connection_id: int) -> Response | tuple[str, int]:
    s = db.session()
    company = current_company()
    try:
        conn = conns.get_connection(s, company, connection_id)
    except NotFoundError:
        abort(404)
    staff = directory.get_staff(s, company, conn.staff_id)
    if request.method == "POST":
        try:
            changes: dict[str, Any] = {
                "name": request.form.get("name", "").strip() or conn.name,
                "roles": chosen_roles(request.form),
                "sync_mode": request.form.get("sync_mode", conn.sync_mode),
                "interval_minutes": int(request.form.get("interval_minutes") or conn.interval_minutes),
                "all_day": request.form.get("all_day", conn.all_day),
                "treat_all_busy": "treat_all_busy" in request.form,
            }
            conns.update_connection(s, company, conn.id, changes)
        except (ValidationError, ValueError) as exc:
            s.rollback()
            flash(str(exc) if isinstance(exc, ValidationError) else "Enter the interval in minutes.", "error")
            s.expire_all()
            conn = conns.get_connection(s, company, connection_id)
        else:
            s.commit()
            flash_at(f"Calendar '{conn.name}' saved.", "success", f"connection-{conn.id}")
            return redirect(url_for("admin.staff_page", staff_id=staff.id, _anchor=f"connection-{conn.id}"))
    return render_template(
        "admin/connection_edit.html",
        conn=conn,
        staff=staff,
        roles=conns.ROLES,
        sync_modes=conns.SYNC_MODES,
        read_only_reason=calendar_setup.READ_ONLY_REASON,
    ), 200


@bp.post("/connections/<int:connection_id>/delete")
def delete_connection(connection_id: int) -> Response:
    s = db.session()
    company = current_company()
    try:
        conn = conns.get_connection(s, company, connection_id)
    except NotFoundError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.index"))
    staff_id, name = conn.staff_id, conn.name
    if is_provider(conn):  # Google / Microsoft: revoke, and remove our events if asked
        disconnect_connection(conn, request.form)
        return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor="connections"))
    conns.delete_connection(s, company, connection_id)
    s.commit()
    flash_at(f"Calendar '{name}' removed; its busy times no longer block bookings.", "success", "connections")
    return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor="connections"))


@bp.post("/connections/<int:connection_id>/sync")
def sync_connection_now(connection_id: int) -> Response:
    try:
        conn, outcome = sync_now(current_company(), connection_id)
    except NotFoundError:
        abort(404)
    if wants_json():
        return connection_json(conn, outcome)
    flash_sync_result(conn, outcome, f"connection-{conn.id}")  # on its card, or its row on Sync health
    if request.form.get("back", "") == "health":  # the page of Sync health it was pressed on
        return redirect(url_for("admin.health", show=request.form.get("show") or None,
                                page=page_arg(request.form.get("page")), _anchor=f"connection-{conn.id}"))
    return redirect(url_for("admin.staff_page", staff_id=conn.staff_id, _anchor=f"connection-{conn.id}"))


@bp.post("/staff/<int:staff_id>/connect-link")
def make_connect_link(staff_id: int) -> tuple[str, int]:
    staff = _staff(staff_id)
    s = db.session()
    services = db.services()
    now = utcnow()
    token = make_connect_token(s, staff, connect_sealer(services.settings.secret_key or ""), now)
    s.commit()
    return _render(
        staff,
        connect_link=connect_url(services.settings.base_url, token),
        connect_link_expires=link_expiry(now),
    )


@bp.post("/staff/<int:staff_id>/connect-link/revoke")
def revoke_connect_link(staff_id: int) -> Response:
    staff = _staff(staff_id)
    revoke_connect_links(db.session(), staff)
    db.session().commit()
    flash_at(f"Every connect link sent to {staff.name} so far, in invitations too, has stopped working.",
             "success", "connect-link")
    return redirect(url_for("admin.staff_page", staff_id=staff_id, _anchor="connect-link"))
