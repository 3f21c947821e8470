"""Invite a staff member to sync: the editable invitation email (form, preview rendered on the
server, send), and re-send / revoke of earlier invitations, which the staff page lists."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser

from flask import abort, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.onboarding.connect_links import LINK_DAYS, connect_sealer
from calsync.feeds.onboarding.invitation_text import DEFAULT_BODY, DEFAULT_SUBJECT, PLACEHOLDERS, check_draft
from calsync.feeds.onboarding.invitations import (
    InviteKeys,
    RenderedInvitation,
    get_invitation,
    render_invitation,
    resend_invitation,
    revoke_invitation,
    send_invitation,
)
from calsync.feeds.scheduling import directory
from calsync.models import Invitation, Staff
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.formatting import flash_at, plural
from calsync.web.security import CSP

PLACEHOLDER_HELP = {
    "company": "the company's name",
    "staff_name": "the staff member's name",
    "feed_url": "the address of their feed (https)",
    "webcal_url": "the same address as webcal://, which opens a calendar app",
    "connect_url": f"their personal page, to connect their own calendar (valid {plural(LINK_DAYS, 'day')})",
}


def invite_keys() -> InviteKeys:
    services = db.services()
    return InviteKeys(
        services.settings.base_url, services.sealer, connect_sealer(services.settings.secret_key or "")
    )


def _staff(staff_id: int) -> Staff:
    try:
        return directory.get_staff(db.session(), current_company(), staff_id)
    except NotFoundError:
        abort(404)


def _admin_id() -> int | None:
    return getattr(current_user, "admin_id", None)


def _posted() -> dict[str, str]:
    return {key: request.form.get(key, "") for key in ("to", "subject", "body")}


class _Styles(HTMLParser):
    """The inline styles of an HTML document, as the browser will read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: set[str] = set()
        self.elements: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.update(value for name, value in attrs if name == "style" and value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.elements.append(data)


def preview_csp(email_html: str) -> str:
    """The page's CSP, plus the hashes of exactly the inline styles of the previewed email.

    The preview is a sandboxed iframe (no scripts, its own opaque origin) whose srcdoc inherits
    this page's CSP (CSP3 policy containers), and emails can only be styled inline. Allowing
    these hashes rather than 'unsafe-inline' keeps every other inline style on the page refused.
    """
    styles = _Styles()
    styles.feed(email_html)
    styles.close()
    hashes = sorted(
        "'sha256-" + base64.b64encode(hashlib.sha256(value.encode()).digest()).decode() + "'"
        for value in styles.attributes | set(styles.elements)
    )
    if not hashes or "style-src 'self'" not in CSP:
        return CSP
    return CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-hashes' " + " ".join(hashes), 1)


def _render(
    staff: Staff,
    values: dict[str, str],
    *,
    status: int = 200,
    error: ValidationError | None = None,
    preview: RenderedInvitation | None = None,
) -> tuple[str, int]:
    last_address = db.session().scalar(
        select(Invitation.email)
        .where(Invitation.staff_id == staff.id)
        .order_by(Invitation.id.desc())
        .limit(1)
    )
    return render_template(
        "admin/invite.html",
        staff=staff,
        values=values,
        error=error,
        preview=preview,
        placeholders=[(name, PLACEHOLDER_HELP[name]) for name in PLACEHOLDERS],
        link_days=LINK_DAYS,
        last_address=last_address,
        mail_configured=db.services().mail.smtp is not None,
    ), status


@bp.get("/staff/<int:staff_id>/invite")
def invite(staff_id: int) -> tuple[str, int]:
    staff = _staff(staff_id)
    return _render(staff, {"to": staff.email.strip(), "subject": DEFAULT_SUBJECT, "body": DEFAULT_BODY})


@bp.post("/staff/<int:staff_id>/invite/preview")
def preview_invitation(staff_id: int) -> Response | tuple[str, int]:
    staff = _staff(staff_id)
    values = _posted()
    try:
        draft = check_draft(values["to"], values["subject"], values["body"])
        mail = render_invitation(db.session(), current_company(), staff, draft, invite_keys())
    except ValidationError as exc:
        return _render(staff, values, status=422, error=exc)
    response = make_response(_render(staff, values, preview=mail))
    response.headers["Content-Security-Policy"] = preview_csp(mail.html)
    return response


@bp.post("/staff/<int:staff_id>/invite")
def send_invitation_now(staff_id: int) -> Response | tuple[str, int]:
    staff = _staff(staff_id)
    values = _posted()
    s = db.session()
    try:
        draft = check_draft(values["to"], values["subject"], values["body"])
        send_invitation(s, current_company(), staff, draft, invite_keys(), created_by=_admin_id())
    except ValidationError as exc:
        s.rollback()
        return _render(staff, values, status=422, error=exc)
    s.commit()
    flash_at(f"Invitation to {draft.to} {_delivery_note()}", "success", "invitations")
    return redirect(url_for("admin.staff_page", staff_id=staff.id, _anchor="invitations"))


def _delivery_note() -> str:
    if db.services().mail.smtp is None:
        return "written to the outbox. It waits there: email sending is not set up (CALSYNC_SMTP_URL)."
    return "written to the outbox; it goes out shortly."


@bp.post("/invitations/<int:invitation_id>/resend")
def resend_invitation_now(invitation_id: int) -> Response:
    s = db.session()
    company = current_company()
    try:
        staff_id = get_invitation(s, company, invitation_id).staff_id
    except NotFoundError:
        abort(404)
    back = url_for("admin.staff_page", staff_id=staff_id, _anchor="invitations")
    try:
        new = resend_invitation(s, company, invitation_id, invite_keys(), created_by=_admin_id())
    except ValidationError as exc:  # e.g. the staff member's feed links were all revoked since
        s.rollback()
        flash_at(str(exc), "error", "invitations")
        return redirect(back)
    s.commit()
    flash_at(
        f"New invitation with a new link to {new.email} {_delivery_note()} The earlier link "
        "keeps working until it expires or you revoke it.",
        "success", "invitations",
    )
    return redirect(back)


@bp.post("/invitations/<int:invitation_id>/revoke")
def revoke_invitation_now(invitation_id: int) -> Response:
    s = db.session()
    try:
        invitation = revoke_invitation(s, current_company(), invitation_id)
    except NotFoundError:
        abort(404)
    s.commit()
    flash_at(
        f"The link in the invitation to {invitation.email} has stopped working. Other links "
        "keep working; “Revoke all links” stops them all.",
        "success", "invitations",
    )
    return redirect(url_for("admin.staff_page", staff_id=invitation.staff_id, _anchor="invitations"))
