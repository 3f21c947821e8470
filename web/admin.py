"""Admin UI: login and the calendar-sync overview. Issue #5 grows this into the full UI."""

from __future__ import annotations

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from feeds import directory, tokens
from feeds.accounts import authenticate_admin
from models import AdminUser, Company
from web import db

bp = Blueprint("admin", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()


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


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate_admin(db.session(), form.email.data or "", form.password.data or "")
        if user is not None:
            db.session().commit()
            # A fresh session at login: nothing planted before it survives (session fixation).
            session.clear()
            login_user(AdminPrincipal(user))
            return redirect(url_for("admin.index"))
        flash("That email and password do not match an admin account.", "error")
    return render_template("admin/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"))


@bp.get("/")
@login_required
def index() -> str:
    s = db.session()
    company = s.get(Company, current_user.company_id)
    if company is None:
        abort(404)
    services = db.services()
    rows = []
    for row in tokens.list_feed_tokens(s, company):
        plain = tokens.reveal_token(services.sealer, row)
        rows.append((row, tokens.feed_links(services.settings.base_url, plain) if plain else None))
    return render_template(
        "admin/index.html",
        company=company,
        feeds=rows,
        staff=directory.list_staff(s, company),
        groups=directory.list_groups(s, company),
    )


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.session_protection = "strong"
    csrf.init_app(app)
    # Machines, not browsers, call these: the API uses bearer keys, feeds use secret URLs.
    from web import api, public_feeds

    csrf.exempt(api.bp)
    csrf.exempt(public_feeds.bp)
    app.register_blueprint(bp)

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> tuple[str | Response, int]:
        if request.path.startswith("/api/"):
            from flask import jsonify

            return jsonify({"error": "There is no such API endpoint; see /api/v1/openapi.json."}), 404
        return "Not found\n", 404

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> tuple[str | Response, int]:
        if request.path.startswith("/api/"):
            from flask import jsonify

            return jsonify({"error": "This endpoint does not take that method."}), 405
        return "Method not allowed\n", 405
