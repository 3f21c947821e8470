"""Admin web UI at / : one blueprint, one module per page group.

- auth: log in (lockout after repeated failures) and out
- sync: the calendar-sync page — feed tokens of staff, groups and the company, and the toggles
- staff: a staff member's working hours, calendar connections and connect link
- health: every connection's health and alerts, "Sync all now"
- appointments: list, book, reschedule, cancel, history
- invitations: "Invite to sync" — the editable invitation email, preview, send, re-send, revoke
- conflicts: two-way sync conflicts, both versions side by side, keep one; recently resolved
- outbox: the company's emails and their delivery, filtered by status, Retry
- company_accounts: the company-wide Google Workspace / Microsoft 365 connection (/company-accounts)
- settings_page: the company-wide toggles (/settings)
- staff_list: every staff member with feed, calendars, health, invitation and two-way state (/staff)
- paging: long lists a page at a time (page_of, and page_url for the pager macro)

Every view needs a logged-in admin (checked once for the whole blueprint, so a new view cannot
forget it) and every form carries a CSRF token (Flask-WTF's CSRFProtect on every POST, set up for
the whole app in web/app.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, jsonify, request
from flask_login import LoginManager, UserMixin, current_user

from calsync.feeds.accounts.admins import admin_of_session, session_id
from calsync.models import AdminUser, Company
from calsync.web import db
from calsync.web.views_common import wants_json

bp = Blueprint("admin", __name__)
login_manager = LoginManager()

OPEN_ENDPOINTS = {"admin.login"}


class AdminPrincipal(UserMixin):
    """The logged-in admin. Its id in the session cookie is "<admin id>:<session version>"
    (feeds.accounts.admins.session_id), checked against the database on every request, so
    logout, a password change or disabling the admin ends the session even for a copied cookie
    (Flask's cookie session cannot be revoked by itself; OWASP Session Management Cheat Sheet)."""

    def __init__(self, user: AdminUser) -> None:
        self.id = session_id(user)
        self.admin_id = user.id
        self.email = user.email
        self.company_id = user.company_id


@login_manager.user_loader
def _load_user(user_id: str) -> AdminPrincipal | None:
    user = admin_of_session(db.session(), user_id)
    return AdminPrincipal(user) if user else None


@bp.before_request
def _require_admin() -> Any:
    if request.endpoint in OPEN_ENDPOINTS or current_user.is_authenticated:
        return None
    if wants_json():
        return jsonify({"error": "Your session has ended; log in again."}), 401
    return login_manager.unauthorized()


def current_company() -> Company:
    company = db.session().get(Company, current_user.company_id)
    if company is None:
        abort(404)
    return company


def init_login(app: Flask) -> None:
    """The admins' login sessions (Flask-Login); create_app wires the rest of the app."""
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.login_message = "Log in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"


# Page modules register their views on bp when imported.
from calsync.web.admin import (  # noqa: E402,F401
    appointments,
    auth,
    company_accounts,
    conflicts,
    health,
    invitations,
    outbox,
    paging,
    settings_page,
    staff,
    staff_list,
    sync,
)
