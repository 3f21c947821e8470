"""Log in and out. The session is renewed at login; repeated failures lock the account from that
client address, and the client address, for a while (feeds.accounts.login_throttle). Logging out
ends the session on the server too (feeds.accounts.admins.end_sessions), so a copied cookie
stops working."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from calsync.feeds.accounts.admins import authenticate_admin, end_sessions
from calsync.feeds.accounts.login_throttle import (
    clear_login_failures,
    describe_wait,
    locked_for,
    record_login_failure,
)
from calsync.models import AdminUser
from calsync.web import db
from calsync.web.admin import AdminPrincipal, bp


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


def safe_next(target: str) -> str | None:
    r"""`target` as a path on this site, or None when a browser could read it as anything else.

    Normalised the way browsers parse URLs (WHATWG URL Standard, "basic URL parser"): leading
    and trailing C0 controls and spaces are stripped, every tab, CR and LF is removed, and a
    backslash counts as a slash. So "/\t/evil.example" and "/\\evil.example" both become
    "//evil.example", a network-path reference to another host (RFC 3986 §4.2), and are refused.
    Other control characters and non-ASCII are refused outright rather than guessed at.
    """
    cleaned = target.strip("".join(map(chr, range(0x21))))
    cleaned = cleaned.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    if not cleaned.startswith("/") or cleaned.startswith("//") or not cleaned.isascii():
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in cleaned):
        return None
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return None
    return cleaned


def _next_page() -> str:
    """Where to go after logging in: the page that sent us here, if it is one of ours."""
    return safe_next(request.args.get("next", "")) or url_for("admin.index")


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
    user = authenticate_admin(s, email, form.password.data or "",
                              profile=db.services().settings.password_hash_profile)
    if user is None:
        record_login_failure(s, email, address)
        s.commit()
        flash("That email and password do not match an admin account.", "error")
        return render_template("admin/login.html", form=form), 401
    clear_login_failures(s, email, address)
    s.commit()
    target = _next_page()
    # A fresh session at login: nothing planted before it survives (session fixation).
    session.clear()
    login_user(AdminPrincipal(user))
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    user = db.session().get(AdminUser, getattr(current_user, "admin_id", 0))
    if user is not None:
        # Ends this session and any copy of its cookie (and the admin's other sessions):
        # clearing our cookie alone leaves a copied one valid until it expires.
        end_sessions(db.session(), user)
        db.session().commit()
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("admin.login"))
