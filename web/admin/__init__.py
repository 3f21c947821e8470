"""Admin web UI at / : one blueprint, one module per page group.

- auth: log in (lockout after repeated failures) and out
- sync: the calendar-sync page — feed tokens of staff, groups and the company, and the toggles
- staff: a staff member's working hours, calendar connections and connect link
- health: every connection's health and alerts, "Sync all now"
- appointments: list, book, reschedule, cancel, history
- invitations: "Invite to sync" — the editable invitation email, preview, send, re-send, revoke
- conflicts: two-way sync conflicts, both versions side by side, keep one; recently resolved
- outbox: the company's emails and their delivery, filtered by status, Retry

Every view needs a logged-in admin (checked once for the whole blueprint, so a new view cannot
forget it) and every form carries a CSRF token (Flask-WTF's CSRFProtect on every POST).
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    jsonify,
    render_template,
    request,
)
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.wrappers import Response

from calsync.models import AdminUser, Company
from calsync.web import db
from calsync.web.admin.formatting import register_filters

bp = Blueprint("admin", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

OPEN_ENDPOINTS = {"admin.login"}


class AdminPrincipal(UserMixin):
    def __init__(self, user: AdminUser) -> None:
        self.id = str(user.id)
        self.email = user.email
        self.company_id = user.company_id


@login_manager.user_loader
def _load_user(user_id: str) -> AdminPrincipal | None:
    if not user_id.isdigit():
        return None
    user = db.session().get(AdminUser, int(user_id))
    return AdminPrincipal(user) if user else None


def wants_json() -> bool:
    """Requests from calsync.js ask for JSON; forms without JavaScript get pages."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


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


def _reject_cross_site() -> Response | None:
    """Refuse state-changing requests that browsers label as coming from another site.

    Flask-WTF's HTTPS check compares the Referer with the host, but every page here sends
    `Referrer-Policy: no-referrer` (feed URLs are secrets), so that check is off and
    Fetch Metadata (`Sec-Fetch-Site`, sent by current browsers whatever the referrer policy)
    takes its place, in front of the CSRF token.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.blueprint not in ("admin", "staff"):
        return None
    if request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none"):
        return None
    return Response("Cross-site requests are not accepted.\n", status=403, mimetype="text/plain")


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.login_message = "Log in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)  # see _reject_cross_site
    csrf.init_app(app)
    # Machines, not browsers, call these: the API uses bearer keys, feeds use secret URLs.
    from calsync.web import api, public_feeds, self_service

    csrf.exempt(api.bp)
    csrf.exempt(public_feeds.bp)
    app.before_request(_reject_cross_site)
    register_filters(app)
    app.register_blueprint(bp)
    app.register_blueprint(self_service.bp)

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> tuple[str | Response, int]:
        if request.path.startswith("/api/") or wants_json():
            return jsonify({"error": "The page was open too long or came from elsewhere; reload it "
                                     "and try again."}), 400
        return render_template("admin/error.html", title="Please try again",
                               message="This form was open for too long, or it was not sent from "
                                       "this site. Go back, reload the page and try again."), 400

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> tuple[str | Response, int]:
        if request.path.startswith("/api/"):
            return jsonify({"error": "There is no such API endpoint; see /api/v1/openapi.json."}), 404
        if request.path.startswith("/feeds/"):
            return "Not found\n", 404
        if wants_json():
            return jsonify({"error": "That does not exist (any more)."}), 404
        return render_template("admin/error.html", title="Not found",
                               message="That page does not exist, or what it showed was deleted."), 404

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> tuple[str | Response, int]:
        if request.path.startswith("/api/"):
            return jsonify({"error": "This endpoint does not take that method."}), 405
        return "Method not allowed\n", 405


# Page modules register their views on bp when imported.
from calsync.web.admin import (  # noqa: E402,F401
    appointments,
    auth,
    conflicts,
    health,
    invitations,
    outbox,
    staff,
    sync,
)
