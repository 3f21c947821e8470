"""Connecting Google Calendar and Outlook / Microsoft 365 through OAuth (issues 11/12), at /oauth/.

- GET /oauth/<provider>/start (a link on the staff self-service page, or the admin's staff page:
  `for` = self_service | admin): a sealed, single-use state bound to the staff member, then the
  provider's consent screen. A link, not a form: the pages' CSP (`form-action 'self'`) rightly
  stops a form from being redirected to another site, and starting a consent changes nothing
  that a forged request could use (the callback only connects for the page it lands on).
- GET /oauth/<provider>/callback: the one fixed address registered with the provider. The
  person must still be on the page the consent was started from (their connect link's session,
  or an admin of the staff member's company logged in): the state is opened for that staff
  member and used once; forged, expired, reused or another person's states get a page saying
  so, never a 500. The code is exchanged and the account's calendars listed for the pick page.
- POST /oauth/<provider>/connect: the picked calendars and roles become connections.

A GET with `state` is the CSRF defence of the callback (RFC 6749 §10.12); the connect form
carries the CSRF token like every other form.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from calsync.feeds.calendars import provider_connect
from calsync.feeds.calendars.connections import list_connections
from calsync.feeds.calendars.provider_access import PROVIDER_KINDS, PROVIDER_LABELS
from calsync.feeds.calendars.providers.base import OAuthStateInvalid, ProviderNotConfigured
from calsync.feeds.errors import ValidationError
from calsync.feeds.onboarding.connect_links import ConnectLinkError, read_session_claim
from calsync.feeds.onboarding.invitations import record_used
from calsync.models import Company, OAuthPurpose, Staff
from calsync.web import db, interactive
from calsync.web.provider_forms import redirect_uri
from calsync.web.self_service import SESSION_KEY as SELF_SERVICE_KEY

bp = Blueprint("oauth", __name__, url_prefix="/oauth")


@dataclass(frozen=True)
class _Who:
    """Whose calendar is being connected, by whom, and where they return."""

    staff: Staff
    company: Company
    purpose: str
    back: str
    invitation_id: int | None = None


def _who(purpose: str, staff_id: int | None) -> _Who | None:
    """The staff member this browser may connect a calendar for right now, or None. For the
    self-service page it is always the link's own staff member (whatever `staff_id` says)."""
    s = db.session()
    if purpose == OAuthPurpose.SELF_SERVICE:
        try:
            link = read_session_claim(s, session.get(SELF_SERVICE_KEY))
        except ConnectLinkError:
            return None
        company = s.get(Company, link.staff.company_id)
        if company is None:
            return None
        return _Who(link.staff, company, purpose, url_for("staff.page"), link.invitation_id)
    if purpose == OAuthPurpose.ADMIN and current_user.is_authenticated and staff_id is not None:
        staff = s.get(Staff, staff_id)
        if staff is None or staff.company_id != current_user.company_id:
            return None
        company = s.get(Company, staff.company_id)
        if company is None:
            return None
        return _Who(staff, company, purpose, url_for("admin.staff_page", staff_id=staff.id))
    return None


def _page(message: str, status: int, back: str | None = None, title: str = "The calendar was not connected"
          ) -> tuple[str, int]:
    return render_template("oauth_result.html", message=message, back=back, title=title), status


def _kind(provider: str) -> str:
    if provider not in PROVIDER_KINDS:
        abort(404)
    return provider


def _staff_id(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _sealer() -> provider_connect.StateSealer:
    services = db.services()
    return provider_connect.state_sealer(services.settings.secret_key or "", services.clock)


@bp.get("/<provider>/start")
def start(provider: str) -> Response | tuple[str, int]:
    kind = _kind(provider)
    who = _who(request.args.get("for", ""), _staff_id(request.args.get("staff_id")))
    if who is None:
        return _page("Open your calendar page again (your link or login has ended), then start again.", 403)
    services = db.services()
    try:
        # Microsoft's sign-in (msal) reads the tenant's OpenID configuration first: a request
        # a person waits for, within the interactive budget. Google's address needs none.
        with interactive.limits("provider") if kind == "microsoft" else nullcontext() as limits:
            address = provider_connect.start_connect(
                db.session(), services.sync.providers, _sealer(), staff=who.staff, kind=kind,
                purpose=who.purpose, redirect_uri=redirect_uri(kind), limits=limits)
    except (ProviderNotConfigured, ValidationError) as exc:
        db.session().rollback()
        flash(str(exc), "error")
        return redirect(who.back + "#add-calendar")
    db.session().commit()
    return redirect(address, 303)


@bp.get("/<provider>/callback")
def callback(provider: str) -> Response | tuple[str, int]:
    kind = _kind(provider)
    label = PROVIDER_LABELS[kind]
    state = request.args.get("state", "")
    s = db.session()
    record = provider_connect.callback_record(s, _sealer(), state) if state else None
    if record is None:
        return _page(str(OAuthStateInvalid("the answer was not issued by this calsync")), 400)
    who = _who(record.purpose, record.staff_id)
    if who is None:
        return _page("Open your calendar page again (your link or login has ended), then start "
                     f"\"{label}\" again.", 403)
    try:
        accepted = provider_connect.accept_callback(s, _sealer(), staff_id=who.staff.id, kind=kind,
                                                    state=state)
    except OAuthStateInvalid as exc:
        s.rollback()
        return _page(str(exc), 400, who.back)
    s.commit()  # used now, whatever happens next: a reload cannot replay the code
    if request.args.get("error") or not request.args.get("code"):
        # RFC 6749 §4.1.2.1: access_denied when the person said no at the consent screen.
        return _page(f"{label} was not connected: access was not allowed on the {label} screen. "
                     "Nothing was changed; start again if that was a mistake.", 200, who.back,
                     title="Nothing was connected")
    services = db.services()
    try:
        with interactive.limits("provider") as limits:
            pick, sealed = provider_connect.exchange_and_list(
                services.vault, services.sync.providers, staff_id=who.staff.id, kind=kind,
                accepted=accepted, state=state, answer=request.args.to_dict(),
                redirect_uri=redirect_uri(kind), limits=limits, clock=services.clock)
    except ValidationError as exc:
        return _page(str(exc), 502, who.back)
    except ProviderNotConfigured as exc:
        return _page(str(exc), 400, who.back)
    return _pick_page(who, kind, pick, sealed)


def _pick_page(who: _Who, kind: str, pick: provider_connect.Pick, sealed: str, status: int = 200,
               error: str | None = None, chosen: dict[str, object] | None = None) -> tuple[str, int]:
    # A linked calendar elsewhere (not one of this account's, which can move within it): the
    # page says so instead of offering a choice the connect step would refuse.
    has_linked = any("linked" in (c.roles or []) and not (c.kind == kind and c.account_email == pick.account)
                     for c in list_connections(db.session(), who.company, who.staff.id))
    return render_template(
        "provider_calendars.html", who=who, kind=kind, label=PROVIDER_LABELS[kind], pick=pick, sealed=sealed,
        read_only_reason=provider_connect.READ_ONLY_REASON, error=error, chosen=chosen or {},
        has_linked=has_linked, standalone=who.purpose == OAuthPurpose.SELF_SERVICE,
    ), status


def _indexes(name: str) -> list[int]:
    found = []
    for value in request.form.getlist(name):
        try:
            found.append(int(value))
        except ValueError:
            continue
    return found


@bp.post("/<provider>/connect")
def connect(provider: str) -> Response | tuple[str, int]:
    kind = _kind(provider)
    who = _who(request.form.get("for", ""), _staff_id(request.form.get("staff_id")))
    if who is None:
        return _page("Open your calendar page again (your link or login has ended), then start again.", 403)
    services = db.services()
    sealed = request.form.get("pick", "")
    try:
        pick = provider_connect.open_pick(services.vault, sealed, who.staff.id, kind, clock=services.clock)
    except ValidationError as exc:
        return _page(str(exc), 400, who.back)
    linked = _staff_id(request.form.get("linked"))
    conflict, additional = _indexes("conflict"), _indexes("additional")
    push_existing = request.form.get("push_existing") == "1"
    try:
        made = provider_connect.connect_picked(
            db.session(), who.company, services.vault, pick, conflict=conflict, linked=linked,
            additional=additional, push_existing=push_existing)
    except ValidationError as exc:
        db.session().rollback()
        chosen: dict[str, object] = {"conflict": conflict, "linked": linked, "additional": additional,
                                     "push_existing": push_existing}
        return _pick_page(who, kind, pick, sealed, 422, str(exc), chosen)
    if who.invitation_id is not None:
        record_used(db.session(), who.invitation_id)  # the invitation's link was used to connect
    db.session().commit()
    flash(f"Connected: {', '.join(c.name for c in made)}. Use Sync now to read them at once.", "success")
    return redirect(who.back + "#connections", 303)
