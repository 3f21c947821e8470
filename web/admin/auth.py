"""Log in and out. The session is renewed at login; repeated failures lock the email and the
client address for a while (feeds.login_lockout)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from calsync.feeds.accounts.admins import authenticate_admin
from calsync.feeds.accounts.login_throttle import (
    clear_login_failures,
    describe_wait,
    locked_for,
    record_login_failure,
)
from calsync.web import db
from calsync.web.admin import AdminPrincipal, bp


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


def _next_page() -> str:
    """Where to go after logging in: the page that sent us here, if it is one of ours."""
    target = request.args.get("next", "")
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("admin.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("admin.index"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("admin/login.html", form=form)
    s = db.session()
    email = form.email.data or ""
    address = request.remote_addr
    wait = locked_for(s, email, address)
    if wait is not None:
        flash(f"Too many failed logins for this account or from this network. Try again in "
              f"{describe_wait(wait)}.", "error")
        return render_template("admin/login.html", form=form), 429
    user = authenticate_admin(s, email, form.password.data or "")
    if user is None:
        record_login_failure(s, email, address)
        s.commit()
        flash("That email and password do not match an admin account.", "error")
        return render_template("admin/login.html", form=form), 401
    clear_login_failures(s, email)
    s.commit()
    target = _next_page()
    # A fresh session at login: nothing planted before it survives (session fixation).
    session.clear()
    login_user(AdminPrincipal(user))
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("admin.login"))
