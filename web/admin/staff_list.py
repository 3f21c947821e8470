"""The staff list at /staff: every staff member on one line with their feed links, calendars and
how those sync, whether they can be invited or already connected, and whether they opted out of
two-way sync. Twenty-five to a page, so a company with hundreds of staff gets a short page."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import render_template, request
from sqlalchemy import select

from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.onboarding.invitations import link_state
from calsync.models import Connection, FeedToken, Invitation, InvitationState, Staff, utcnow
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_of
from calsync.web.formatting import name_key

PAGE_SIZE = 25  # a page stays a few screens tall on a phone, where each row is a block
# Worst first: the staff member's health is that of their worst calendar.
HEALTH_ORDER = ("error", "stale", "pending", "ok")


@dataclass
class StaffRow:
    staff: Staff
    feeds: list[FeedToken] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    invitation: Invitation | None = None
    invitation_state: str | None = None  # active | expired | revoked

    @property
    def health(self) -> str | None:
        """The worst status among the calendars, None without any."""
        statuses = {str(c.status) for c in self.connections}
        return next((s for s in HEALTH_ORDER if s in statuses), None)


@bp.get("/staff")
def staff_list() -> str:
    s = db.session()
    company = current_company()
    # In the order a reader expects (web.formatting.name_key: Łukasz before Zoë, é with e), which
    # the database's byte order is not; the names are short, so all are sorted and a page read.
    names = s.execute(select(Staff.id, Staff.name).where(Staff.company_id == company.id)).all()
    total = len(names)
    page, pages = page_of(request.args.get("page"), total, PAGE_SIZE)
    ordered = [i for i, _ in sorted(names, key=lambda r: (*name_key(r.name), r.id))]
    chosen = ordered[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    by_id = {m.id: m for m in s.scalars(select(Staff).where(Staff.id.in_(chosen)))} if chosen else {}
    members = [by_id[i] for i in chosen]
    rows = {m.id: StaffRow(m) for m in members}
    ids = list(rows)
    for token in s.scalars(select(FeedToken).where(
            FeedToken.company_id == company.id, FeedToken.scope == "staff", FeedToken.scope_id.in_(ids),
            FeedToken.revoked_at.is_(None)).order_by(FeedToken.id)):
        rows[token.scope_id].feeds.append(token)
    for conn in s.scalars(select(Connection).where(Connection.staff_id.in_(ids)).order_by(Connection.id)):
        rows[conn.staff_id].connections.append(conn)
    now = utcnow()
    invitations = select(Invitation).where(Invitation.staff_id.in_(ids)).order_by(Invitation.id.desc())
    for inv in s.scalars(invitations):
        row = rows[inv.staff_id]
        if row.invitation is None:  # the newest one
            row.invitation, row.invitation_state = inv, str(link_state(inv, now))
    return render_template(
        "admin/staff_list.html", company=company, rows=list(rows.values()), total=total,
        page=page, pages=pages, company_two_way=get_company_settings(company).bidirectional_sync,
        active=InvitationState.ACTIVE,
    )
