"""Outbox: the company's emails and how their delivery went, filtered by status, a page at a
time, with "Retry" for a failed or waiting one (feeds.outbox.retry_email, the same call as
POST /api/v1/emails/{id}/retry). A sent email is never sent again, so it has no Retry; nor has a
waiting one while no mail server is set up, since it was never tried and Retry would change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from calsync.feeds.errors import NotFoundError
from calsync.feeds.mail import outbox
from calsync.models import Company, OutboxEmail, OutboxStatus
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.paging import page_arg, page_of

PAGE_SIZE = 25  # each email is a block of several lines on a phone
# Tab key → label; "all" first. The keys other than "all" are feeds.outbox.STATUSES.
FILTERS = {"all": "All", "failed": "Failed", "pending": "Waiting", "sent": "Sent"}
STATUS_LABELS = {"pending": "Waiting", "failed": "Failed", "sent": "Sent"}
STATUS_BADGES = {"pending": "pending", "failed": "error", "sent": "ok"}
KIND_LABELS = {
    "booked": "Booking confirmation",
    "rescheduled": "Booking moved",
    "cancelled": "Cancellation",
    # Alerts go to whoever should fix a calendar, staff as well as admins (feeds/mail/notifications.py).
    "alert": "Calendar alert",
    "conflict": "Conflict notice",
    "invitation": "Staff invitation",
}


def status_counts(company: Company) -> dict[str, int]:
    """Emails per status (and "all"), in one grouped query."""
    rows = db.session().execute(
        select(OutboxEmail.status, func.count())
        .where(OutboxEmail.company_id == company.id)
        .group_by(OutboxEmail.status)
    )
    counts = dict.fromkeys(FILTERS, 0)
    for status, count in rows:
        if status in counts:
            counts[status] = count
    counts["all"] = sum(counts[s] for s in outbox.STATUSES)
    return counts


@bp.get("/outbox", endpoint="outbox")
def list_outbox() -> str:
    company = current_company()
    shown = request.args.get("status", "all")
    if shown not in FILTERS:
        shown = "all"
    counts = status_counts(company)
    page, pages = page_of(request.args.get("page"), counts[shown], PAGE_SIZE)
    rows = outbox.list_emails(
        db.session(),
        company,
        status=None if shown == "all" else shown,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    return render_template(
        "admin/outbox.html",
        rows=rows,
        shown=shown,
        filters=FILTERS,
        counts=counts,
        page=page,
        pages=pages,
        smtp=db.services().mail.smtp,
        status_labels=STATUS_LABELS,
        status_badges=STATUS_BADGES,
        kind_labels=KIND_LABELS,
    )


def _back() -> Response:
    """To the list the form was sent from (same filter and page)."""
    shown = request.form.get("status", "all")
    return redirect(
        url_for(
            "admin.outbox",
            status=shown if shown in FILTERS and shown != "all" else None,
            page=page_arg(request.form.get("page")),
        )
    )


@bp.post("/outbox/<int:email_id>/retry")
def retry_email(email_id: int) -> Response:
    s = db.session()
    try:
        email = outbox.retry_email(s, current_company(), email_id)
    except NotFoundError:
        abort(404)
    except outbox.AlreadySentError:
        s.rollback()
        flash(
            "That email was already sent, so it is not sent again.",
            "error",
        )
        return _back()
    to = email.to_address
    s.commit()  # after the commit the app asks the queue to deliver (web/app.py)
    if db.services().mail.smtp is None:
        flash(
            f"The email to {to} is waiting again, with a fresh set of attempts. No mail server is "
            "configured (CALSYNC_SMTP_URL), so it is sent once one is.",
            "success",
        )
    else:
        flash(
            f"The email to {to} will be sent again in a moment; reload the page to see how it went.",
            "success",
        )
    return _back()


def _failed_email_count() -> int:
    if not current_user.is_authenticated:
        return 0
    return (
        db.session().scalar(
            select(func.count())
            .select_from(OutboxEmail)
            .where(OutboxEmail.company_id == current_user.company_id,
                   OutboxEmail.status == OutboxStatus.FAILED)
        )
        or 0
    )


@bp.app_context_processor
def _nav_counts() -> dict[str, Callable[[], Any]]:
    # A function, not a number: only the main navigation calls it, so pages without it (login,
    # the staff self-service page, emails) cost no query.
    return {"failed_email_count": _failed_email_count}
