"""Sync health: every calendar connection of the company with its status, last success,
failures and open alerts, a page at a time; filters for failing and stale ones; "Sync all now"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from calsync.feeds.calendars import connections as conns
from calsync.feeds.calendars.health import open_alerts
from calsync.feeds.scheduling import directory
from calsync.models import Connection, ConnectionStatus
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_of
from calsync.web.calendar_forms import staff_blocks
from calsync.web.formatting import plural

PAGE_SIZE = 25  # failing ones first, so the first page is the one to act on

# Tab key → (label, test of a connection). "Not synced yet" is every calendar that has never
# synced, the failing ones ("Not yet reachable") included, not only those still waiting.
FILTERS: dict[str, tuple[str, Callable[[Connection], bool]]] = {
    "all": ("All", lambda conn: True),
    "errors": ("Failing", lambda conn: conn.status == ConnectionStatus.ERROR),
    "stale": ("Stale", lambda conn: conn.status == ConnectionStatus.STALE),
    "pending": ("Not synced yet", lambda conn: conn.last_success_at is None),
}


@bp.get("/health")
def health() -> str:
    s = db.session()
    company = current_company()
    shown = request.args.get("show", "all")
    if shown not in FILTERS:
        shown = "all"
    everything = conns.list_connections(s, company)
    counts = {key: sum(1 for c in everything if test(c)) for key, (_l, test) in FILTERS.items()}
    rows = [c for c in everything if FILTERS[shown][1](c)]
    # Failing first, then stale, then the rest; the most failures first within each.
    order = {ConnectionStatus.ERROR: 0, ConnectionStatus.STALE: 1, ConnectionStatus.PENDING: 2,
             ConnectionStatus.OK: 3}
    rows.sort(key=lambda c: (order.get(c.status, 9), -c.consecutive_failures, c.id))
    page, pages = page_of(request.args.get("page"), len(rows), PAGE_SIZE)
    return render_template(
        "admin/health.html", rows=rows[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], page=page, pages=pages,
        shown=shown, filters=FILTERS, counts=counts,
        alerts=open_alerts(s, company),
        staff={m.id: m for m in directory.list_staff(s, company)},
        blocks=staff_blocks(company),
    )


@bp.post("/health/sync-all")
def sync_all() -> Response:
    s = db.session()
    ids = [c.id for c in conns.list_connections(s, current_company())]
    jobs = db.services().jobs
    for connection_id in ids:
        jobs.enqueue_sync(connection_id)
    flash(f"{plural(len(ids), 'calendar')} queued for syncing; reload this page in a minute to see the "
          "results." if ids else "There are no calendars to sync yet.", "success")
    return redirect(url_for("admin.health", show=request.form.get("show", "all")))


def _failing_connection_count() -> int:
    """The calendars that are failing now: the "Failing" tab's count, shown on the nav link as
    Conflicts and Outbox show theirs."""
    if not current_user.is_authenticated:
        return 0
    return db.session().scalar(
        select(func.count()).select_from(Connection)
        .where(Connection.company_id == current_user.company_id, Connection.status == ConnectionStatus.ERROR)
    ) or 0


@bp.app_context_processor
def _nav_counts() -> dict[str, Callable[[], Any]]:
    # Called by the main navigation only (see web/admin/outbox.py).
    return {"failing_connection_count": _failing_connection_count}
