"""The calendar-sync page at / : the feeds of staff members, groups and the company with their
links and tokens (new, revoke, rotate). The company-wide toggles are on their own page
(web.admin.settings_page)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.publishing import tokens
from calsync.feeds.publishing.reachability import unreachable_from_internet
from calsync.feeds.scheduling import directory
from calsync.models import FeedToken
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_arg, page_of
from calsync.web.calendar_forms import staff_blocks
from calsync.web.formatting import flash_at
from calsync.web.views_common import feed_rows

STAFF_PAGE_SIZE = 25


@dataclass
class FeedOwner:
    """One staff member, group or the company, with its live tokens."""

    scope: str
    scope_id: int
    name: str
    detail: str = ""
    page: str | None = None
    feeds: list[tuple[FeedToken, tokens.FeedLinks | None]] = field(default_factory=list)


@bp.get("/")
def index() -> str:
    s = db.session()
    company = current_company()
    by_owner: dict[tuple[str, int], list[FeedToken]] = {}
    for row in tokens.list_feed_tokens(s, company):
        by_owner.setdefault((row.scope, row.scope_id), []).append(row)
    members = directory.list_staff(s, company)
    # A page of staff members at a time: each has a feed link with its subscribe buttons, and a
    # company of hundreds would otherwise get a page many thousand pixels tall.
    staff_page, staff_pages = page_of(request.args.get("staff_page"), len(members), STAFF_PAGE_SIZE)
    shown = members[(staff_page - 1) * STAFF_PAGE_SIZE:staff_page * STAFF_PAGE_SIZE]
    tables: list[tuple[str, str, list[FeedOwner]]] = [
        ("staff", "Staff members", [
            FeedOwner("staff", m.id, m.name, m.email, url_for("admin.staff_page", staff_id=m.id))
            for m in shown
        ]),
        ("group", "Groups of staff", [
            FeedOwner("group", g.id, g.name, ", ".join(m.name for m in g.members) or "no members")
            for g in directory.list_groups(s, company)
        ]),
        ("company", "Company", [FeedOwner("company", company.id, company.name, "every staff member")]),
    ]
    for _scope, _title, owners in tables:
        for owner in owners:
            owner.feeds = feed_rows(by_owner.get((owner.scope, owner.scope_id), []))
    base_url = db.services().settings.base_url
    return render_template(
        "admin/index.html", company=company, tables=tables,
        privacy_levels=tokens.PRIVACY_LEVELS,
        base_url=base_url, base_url_unreachable=unreachable_from_internet(base_url),
        staff_total=len(members), staff_page=staff_page, staff_pages=staff_pages,
        blocks=staff_blocks(company),  # who cannot be booked because of a calendar, and why
    )


@bp.post("/tokens")
def new_token() -> Response:
    s = db.session()
    company = current_company()
    try:
        scope_id = int(request.form.get("scope_id", ""))
        row, _plain = tokens.issue_feed_token(
            s, company, db.services().sealer, scope=request.form.get("scope", ""),
            scope_id=scope_id, privacy=request.form.get("privacy", "limited"),
            name=request.form.get("name", "").strip()[:200] or None,
        )
    except (ValueError, ValidationError, NotFoundError) as exc:
        flash(str(exc) if not isinstance(exc, ValueError) else "Choose whose feed it is.", "error")
        return redirect(url_for("admin.index"))
    s.commit()
    flash_at(f"New feed link '{row.name}' created. Share it only with whoever should see it.", "success",
             f"token-{row.id}")
    return _back(f"token-{row.id}")


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> Response:
    s = db.session()
    try:
        row = tokens.revoke_feed_token(s, current_company(), token_id)
    except NotFoundError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.index"))
    s.commit()
    owner = f"owner-{row.scope}-{row.scope_id}"  # the link's row is gone: said on its owner's
    flash_at(f"Feed link '{row.name}' revoked: calendars subscribed with it stop updating.", "success", owner)
    return _back(owner)


@bp.post("/tokens/<int:token_id>/rotate")
def rotate_token(token_id: int) -> Response:
    s = db.session()
    try:
        row, _plain = tokens.rotate_feed_token(s, current_company(), db.services().sealer, token_id)
    except NotFoundError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.index"))
    s.commit()
    flash_at(f"Feed link '{row.name}' replaced: the old link stopped working; share the new one.",
             "success", f"token-{row.id}")
    return _back(f"token-{row.id}")


def _back(anchor: str) -> Response:
    """Back to the link's row, on the page of staff members the form was sent from."""
    page = page_arg(request.form.get("staff_page"))
    return redirect(url_for("admin.index", staff_page=page, _anchor=anchor))
