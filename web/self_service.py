"""The staff self-service page at /connect/: no admin login, one staff member, reached through a
signed, expiring connect link (feeds.connect_links).

Opening /connect/<token> checks the token, keeps only what identifies the link in the session
(feeds.onboarding.connect_links.session_claim: ids, issue time, a digest of the staff member's
nonce; never the token, which Flask's signed but readable cookie would show to anyone who sees
the cookie) and redirects to /connect/, so the secret leaves the address bar and browser
history. Every request checks the link again (expiry, revocation), and every view works on that
one staff member: no id in any URL of this blueprint can reach another staff member's data.

A link sent in an invitation names it (feeds.connect_links): the first visit through it is
recorded as the invitation's opened time, the first calendar connected through it as its used
time (feeds.invitations). Mail scanners that follow links count as a visit too; "used" cannot
be faked that way.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from calsync.feeds.calendars import adding as calendar_setup
from calsync.feeds.calendars import connections as conns
from calsync.feeds.calendars.health import open_alerts
from calsync.feeds.calendars.twoway import set_two_way_opt_out
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.onboarding.connect_links import (
    ConnectLink,
    ConnectLinkError,
    connect_sealer,
    read_connect_link,
    read_session_claim,
    session_claim,
)
from calsync.feeds.onboarding.invitation_text import calendar_apps
from calsync.feeds.onboarding.invitations import record_opened, record_used
from calsync.feeds.publishing import tokens
from calsync.models import Company, Connection, Staff, utcnow
from calsync.web import db
from calsync.web.calendar_forms import (
    add_ics,
    added_message,
    connect_chosen,
    connected_message,
    connection_json,
    discover,
    flash_sync_result,
    form_error,
    kept_values,
    staff_blocks,
    sync_now,
)
from calsync.web.formatting import flash_at
from calsync.web.provider_forms import disconnect_connection, is_provider, provider_options
from calsync.web.views_common import feed_rows, two_way_for, wants_json

bp = Blueprint("staff", __name__, url_prefix="/connect")
SESSION_KEY = "connect_link"


def _read(token: str) -> ConnectLink:
    sealer = connect_sealer(db.services().settings.secret_key or "")
    return read_connect_link(db.session(), sealer, token)


@bp.before_request
def _require_link() -> Response | tuple[str, int] | None:
    if request.endpoint == "staff.enter":
        return None
    claim = session.get(SESSION_KEY)
    if not claim:
        return _refused("Open the link from your invitation email to see this page.")
    try:
        link = read_session_claim(db.session(), claim)
    except ConnectLinkError as exc:
        session.pop(SESSION_KEY, None)
        return _refused(str(exc))
    g.staff, g.invitation_id = link.staff, link.invitation_id
    company = db.session().get(Company, g.staff.company_id)
    if company is None:
        abort(404)
    g.company = company
    return None


def _refused(message: str) -> tuple[str, int]:
    return render_template("staff/invalid.html", message=message), 403


def _staff() -> Staff:
    return g.staff  # type: ignore[no-any-return]


def _company() -> Company:
    return g.company  # type: ignore[no-any-return]


def _record_use() -> None:
    """A calendar was connected through this link: the invitation it came in was used."""
    if g.get("invitation_id") is not None:
        record_used(db.session(), g.invitation_id)


@bp.get("/<token>")
def enter(token: str) -> Response | tuple[str, int]:
    try:
        link = _read(token)
    except ConnectLinkError as exc:
        return _refused(str(exc))
    if link.invitation_id is not None:
        record_opened(db.session(), link.invitation_id)
        db.session().commit()
    session[SESSION_KEY] = session_claim(link)
    return redirect(url_for("staff.page"))


def privacy_sentences(connections: list[Connection], two_way: bool) -> list[str]:
    """What calsync reads from and writes to this staff member's calendars, true for the role of
    each one (docs/architecture.md, Role): busy time only from what is read; the customer's
    details in what bookings are written to (feeds/calendars/push.py writes them there)."""
    out = ["From your calendars only when you are busy is read; the titles, places and notes of "
           "your events are never stored."]
    details = "the customer’s name, email address, phone number and any notes"
    for conn in connections:
        roles = set(conn.roles or [])
        if "linked" in roles:
            then = ("Moving or deleting a booking there moves or cancels it, and the customer is "
                    "emailed." if two_way else
                    "Moving or deleting a booking there does not change it: it is put back as booked.")
            out.append(f"‘{conn.name}’ receives each of your bookings with {details}. {then}")
        elif "additional" in roles:
            out.append(f"‘{conn.name}’ receives a copy of each booking with {details}; changes made "
                       "there are put back.")
    if len(out) == 1:
        out.append(f"A CalDAV calendar you link to receive your bookings gets {details} too.")
    return out


def _render(status: int = 200, **extra: object) -> tuple[str, int]:
    s = db.session()
    staff, company = _staff(), _company()
    feeds = [
        row
        for row in tokens.list_feed_tokens(s, company)
        if row.scope == "staff" and row.scope_id == staff.id
    ]
    extra.setdefault("values", {})
    connections = conns.list_connections(s, company, staff.id)
    return render_template(
        "staff/page.html",
        staff=staff,
        company=company,
        feeds=feed_rows(feeds),
        connections=connections,
        # the same sentence as the admin's staff page: why they cannot be booked, and until when
        block=staff_blocks(company, [staff.id]).get(staff.id),
        privacy=privacy_sentences(connections, two_way_for(company, staff)),
        alerts=open_alerts(s, company),
        kinds=calendar_setup.allowed_kinds(company),
        calendar_apps=calendar_apps,
        two_way=two_way_for(company, staff),
        company_two_way=get_company_settings(company).bidirectional_sync,
        providers=provider_options(),
        **extra,
    ), status


@bp.get("/")
def page() -> tuple[str, int]:
    return _render()


@bp.post("/calendars/ics")
def add_ics_calendar() -> Response | tuple[str, int]:
    company, staff = _company(), _staff()
    staff_id, name = staff.id, staff.name
    try:
        conn, outcome = add_ics(company, staff_id, request.form)
    except ValidationError as exc:
        db.session().rollback()
        return _render(422, values=kept_values(request.form), open_form="ics",
                       error=form_error("ics", exc, company, name))
    _record_use()
    db.session().commit()
    flash_at(added_message(company, name, conn, outcome), "success" if conn.status != "error" else "error",
             f"connection-{conn.id}")
    return redirect(url_for("staff.page", _anchor=f"connection-{conn.id}"))


@bp.post("/calendars/discover")
def discover_calendars() -> tuple[str, int]:
    try:
        found, sealed = discover(_company(), _staff().id, request.form)
    except ValidationError as exc:
        return _render(422, values=kept_values(request.form), open_form="caldav",
                       error=form_error("caldav", exc, _company(), _staff().name))
    return _choose(found, sealed)


def _choose(found: list[Any], sealed: str, status: int = 200, error: str | None = None,
            form: Any = None) -> tuple[str, int]:
    s = db.session()
    return render_template(
        "admin/choose_calendars.html",
        staff=_staff(),
        calendars=found,
        discovery=sealed,
        action=url_for("staff.connect_calendars"),
        back=url_for("staff.page"),
        read_only_reason=calendar_setup.READ_ONLY_REASON,
        standalone=True,
        linked_now=calendar_setup.linked_calendar(s, _company(), _staff().id),
        upcoming=calendar_setup.upcoming_bookings(s, _staff().id),
        error=error,
        form=form,
    ), status


@bp.post("/calendars/caldav")
def connect_calendars() -> Response | tuple[str, int]:
    try:
        made, already, outcomes = connect_chosen(_company(), _staff().id, request.form)
    except ValidationError as exc:
        db.session().rollback()
        kept = calendar_setup.reopen_discovery(db.services().vault, request.form.get("discovery", ""),
                                               _staff().id, clock=db.services().clock)
        if kept is None:  # too old to keep: back to the form
            return _render(422, open_form="caldav",
                           error=form_error("caldav", exc, _company(), _staff().name))
        return _choose(kept, request.form.get("discovery", ""), 422, str(exc), request.form)
    if made:
        _record_use()
        db.session().commit()
    flash_at(connected_message(made, already, outcomes), "success", "connections")
    return redirect(url_for("staff.page", _anchor="connections"))


def _own_connection(connection_id: int) -> Connection:
    """One of this staff member's connections; 404 for anyone else's, like for a missing one."""
    try:
        conn = conns.get_connection(db.session(), _company(), connection_id)
    except NotFoundError:
        abort(404)
    if conn.staff_id != _staff().id:
        abort(404)
    return conn


@bp.post("/connections/<int:connection_id>/sync")
def sync_connection_now(connection_id: int) -> Response:
    _own_connection(connection_id)
    conn, outcome = sync_now(_company(), connection_id)
    if wants_json():
        return connection_json(conn, outcome)
    flash_sync_result(conn, outcome, f"connection-{conn.id}")
    return redirect(url_for("staff.page", _anchor=f"connection-{conn.id}"))


@bp.post("/connections/<int:connection_id>/delete")
def delete_connection(connection_id: int) -> Response:
    conn = _own_connection(connection_id)
    if is_provider(conn):  # Google / Microsoft: revoke, and remove our events if asked
        disconnect_connection(conn, request.form)
        return redirect(url_for("staff.page", _anchor="connections"))
    name = conn.name
    conns.delete_connection(db.session(), _company(), conn.id)
    db.session().commit()
    flash_at(f"Calendar '{name}' removed.", "success", "connections")
    return redirect(url_for("staff.page", _anchor="connections"))


@bp.post("/two-way")
def choose_two_way() -> Response:
    """The staff member opts out of two-way sync, or back in (feeds.calendars.twoway)."""
    choice = request.form.get("two_way", "")
    if choice not in ("on", "off"):
        flash("Choose whether changes in your calendar should change bookings.", "error@two-way")
        return redirect(url_for("staff.page", _anchor="two-way"))
    staff = _staff()
    set_two_way_opt_out(staff, choice == "off", utcnow())
    db.session().commit()
    if choice == "off":
        flash("Two-way sync is off for you: moving or deleting a booking in your calendar no longer "
              "changes it; the booking is put back at its booked time.", "success@two-way")
    else:
        flash("Two-way sync is on for you: moving or deleting a booking in your linked calendar "
              "changes it and emails the customer.", "success@two-way")
    return redirect(url_for("staff.page", _anchor="two-way"))
