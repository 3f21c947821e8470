"""Admin login and logout: CSRF on the login form, session renewal, cookies, access control of
every admin page, the lockout after repeated failures (feeds.login_lockout), security headers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from calsync.feeds.accounts.admins import change_password, disable_admin
from calsync.feeds.accounts.login_throttle import (
    ADDRESS_LIMIT,
    EMAIL_LIMIT,
    MAX_LOCK,
    QUIET,
    clear_login_failures,
    lock_duration,
    locked_for,
    record_login_failure,
)
from calsync.feeds.errors import ValidationError
from calsync.feeds.settings import Settings
from calsync.models import AdminUser, LoginThrottle, utcnow
from calsync.web import create_app
from calsync.web.cli import main
from tests.admin_helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Browser, csrf_of, log_in, make_admin, text_of


@pytest.fixture
def admin(app: Flask) -> int:
    return make_admin(app)


# Every admin page, as (method, path); ids of things that need not exist: access control comes
# before the lookup.
ADMIN_ROUTES = [
    ("GET", "/"), ("POST", "/tokens"), ("POST", "/tokens/1/revoke"), ("POST", "/tokens/1/rotate"),
    ("GET", "/settings"), ("POST", "/settings"), ("GET", "/staff"), ("GET", "/staff/1"),
    ("POST", "/staff/1/hours"),
    ("POST", "/staff/1/calendars/ics"), ("POST", "/staff/1/calendars/discover"),
    ("POST", "/staff/1/calendars/caldav"), ("GET", "/connections/1/edit"),
    ("POST", "/connections/1/edit"), ("POST", "/connections/1/delete"),
    ("POST", "/connections/1/sync"), ("POST", "/staff/1/connect-link"),
    ("POST", "/staff/1/connect-link/revoke"), ("GET", "/health"), ("POST", "/health/sync-all"),
    ("GET", "/appointments"), ("GET", "/appointments/new"), ("POST", "/appointments/new"),
    ("GET", "/appointments/1"), ("POST", "/appointments/1/reschedule"),
    ("POST", "/appointments/1/cancel"), ("GET", "/outbox"), ("POST", "/outbox/1/retry"),
    ("GET", "/conflicts"), ("POST", "/conflicts/1/resolve"), ("GET", "/staff/1/invite"),
    ("POST", "/staff/1/invite"), ("POST", "/staff/1/invite/preview"),
    ("POST", "/invitations/1/resend"), ("POST", "/invitations/1/revoke"),
    ("POST", "/connections/1/copy-bookings"), ("GET", "/company-accounts"),
    ("POST", "/company-accounts/google"), ("POST", "/company-accounts/microsoft"),
    ("POST", "/company-accounts/google/check"), ("POST", "/company-accounts/google/connect"),
    ("POST", "/company-accounts/google/disconnect"),
]


def test_every_admin_route_is_listed_here(app: Flask) -> None:
    """A new admin view must join ADMIN_ROUTES, so the access-control tests below cover it."""
    listed = {(m, re.sub(r"/1(?=/|$)", "/<id>", p)) for m, p in ADMIN_ROUTES}
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in ("admin.login", "admin.logout"):
            continue
        path = re.sub(r"<int:\w+>", "<id>", rule.rule).replace("<provider>", "google")
        found |= {(m, path) for m in rule.methods or () if m in ("GET", "POST")}
    assert found == listed


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_anonymous_visitors_are_sent_to_the_login_page(client: FlaskClient, admin: int,
                                                       method: str, path: str) -> None:
    # Anonymous POSTs carry a valid CSRF token so it is the login check that stops them.
    token = csrf_of(client.get("/login"))
    resp = client.open(path, method=method, data={"csrf_token": token} if method == "POST" else None)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")


def test_anonymous_script_requests_get_401_json(client: FlaskClient, admin: int) -> None:
    token = csrf_of(client.get("/login"))
    resp = client.post("/connections/1/sync", headers={"Accept": "application/json", "X-CSRFToken": token})
    assert resp.status_code == 401
    assert "log in" in resp.get_json()["error"]


def test_login_and_logout(client: FlaskClient, admin: int) -> None:
    resp = log_in(client)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and ADMIN_EMAIL in text_of(page)
    # Log out is a POST with the CSRF token; afterwards the pages need a login again.
    assert client.post("/logout").status_code == 400
    resp = client.post("/logout", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def _session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app: Flask, cookie: str) -> int:
    """GET / in another browser that presents a copied session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get("/").status_code


def test_a_copied_session_cookie_stops_working_at_logout(app: Flask, client: FlaskClient,
                                                         admin: int) -> None:
    log_in(client)
    copied = _session_cookie(client)
    assert _replay(app, copied) == 200
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/"))})
    assert _replay(app, copied) == 302
    # Logging in again starts a new session; the old copy stays dead.
    log_in(client)
    assert client.get("/").status_code == 200
    assert _replay(app, copied) == 302


def test_a_password_change_and_disabling_end_the_sessions(app: Flask, client: FlaskClient,
                                                          admin: int) -> None:
    services = app.extensions["calsync"]
    log_in(client)
    copied = _session_cookie(client)
    with services.sessions.begin() as session:
        user = session.get(AdminUser, admin)
        assert user is not None
        with pytest.raises(ValidationError):
            change_password(session, user, "short", profile=services.settings.password_hash_profile)
        change_password(session, user, "a new password 2", profile=services.settings.password_hash_profile)
    assert _replay(app, copied) == 302 and client.get("/").status_code == 302
    assert log_in(client).status_code == 401
    assert log_in(client, password="a new password 2").status_code == 302
    copied = _session_cookie(client)
    with services.sessions.begin() as session:
        user = session.get(AdminUser, admin)
        assert user is not None
        disable_admin(session, user)
    assert _replay(app, copied) == 302
    assert log_in(app.test_client(), password="a new password 2").status_code == 401


def test_the_cli_changes_a_password_and_disables_an_admin(
    app: Flask, client: FlaskClient, admin: int, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "CALSYNC_DATA_DIR": str(settings.data_dir),
        "CALSYNC_DATABASE_URL": settings.resolved_database_url,
        "CALSYNC_SECRET_KEY": settings.secret_key or "",
        "CALSYNC_PASSWORD_HASH_PROFILE": settings.password_hash_profile,
    }.items():
        monkeypatch.setenv(name, value)
    log_in(client)
    copied = _session_cookie(client)
    result = CliRunner().invoke(main, ["set-admin-password", "--email", ADMIN_EMAIL.upper(),
                                       "--password-stdin"], input="changed by the CLI\n")
    assert result.exit_code == 0, result.output
    assert _replay(app, copied) == 302
    assert log_in(client, password="changed by the CLI").status_code == 302
    unknown = CliRunner().invoke(main, ["disable-admin", "--email", "nobody@example.com"])
    assert unknown.exit_code == 2 and "There is no admin with the email nobody@example.com" in unknown.output
    assert CliRunner().invoke(main, ["disable-admin", "--email", ADMIN_EMAIL]).exit_code == 0
    assert client.get("/").status_code == 302
    assert log_in(client, password="changed by the CLI").status_code == 401


def test_a_forged_session_id_is_refused(app: Flask, client: FlaskClient, admin: int) -> None:
    log_in(client)
    for forged in (str(admin), f"{admin}:1", f"{admin}:-1", "x:0", f"{admin}:0:0", ""):
        with client.session_transaction() as sess:
            sess["_user_id"] = forged
        assert client.get("/").status_code == 302, forged


def test_login_form_without_csrf_token_is_refused(client: FlaskClient, admin: int) -> None:
    client.get("/login")
    resp = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert resp.status_code == 400
    assert "try again" in text_of(resp)
    assert client.get("/").status_code == 302
    forged = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
                                         "csrf_token": "forged"})
    assert forged.status_code == 400


def test_the_session_is_renewed_at_login(client: FlaskClient, admin: int) -> None:
    client.get("/login")
    with client.session_transaction() as sess:
        sess["planted"] = "by an attacker"
        before = dict(sess)
    log_in(client)
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess.get("csrf_token") != before.get("csrf_token")
        # The admin's id and session version (feeds.accounts.admins.session_id).
        assert sess.get("_user_id") == f"{admin}:0"


def test_wrong_password_and_unknown_email_get_the_same_answer(client: FlaskClient, admin: int) -> None:
    wrong = log_in(client, password="not the password")
    unknown = log_in(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    message = "That email and password do not match an admin account."
    assert message in text_of(wrong) and message in text_of(unknown)
    assert client.get("/").status_code == 302


def test_next_page_after_login_and_no_open_redirect(client: FlaskClient, admin: int) -> None:
    token = csrf_of(client.get("/login"))
    form = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token}
    resp = client.post("/login?next=/health", data=form)
    assert resp.headers["Location"] == "/health"
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/"))})
    # Browsers drop tabs and newlines from URLs and read a backslash as a slash (WHATWG URL
    # Standard), so each of these would send the admin to evil.example; encoded as a browser or
    # an attacker's page would put them into the query string.
    evil_targets = [
        "//evil.example/", "https://evil.example/", "/\\evil.example", "%2F%09%2Fevil.example",
        "/%09/evil.example", "%2F%5Cevil.example", "%5C%5Cevil.example", "/%0A/evil.example",
        "%2F%0D%0A%2Fevil.example", "%20//evil.example", "/%0D/evil.example",
        "javascript:alert(1)", "%01//evil.example", "/\t\\evil.example", "///evil.example",
    ]
    for evil in evil_targets:
        token = csrf_of(client.get("/login"))
        resp = client.post(f"/login?next={evil}", data={**form, "csrf_token": token})
        assert resp.status_code == 302 and resp.headers["Location"] == "/", evil
        client.post("/logout", data={"csrf_token": csrf_of(client.get("/"))})
    # A newline used to give a 500 (a header value with a newline); a path keeps its query.
    token = csrf_of(client.get("/login"))
    resp = client.post("/login?next=/appointments%3Fday%3D2026-01-02%0A", data={**form, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/appointments?day=2026-01-02"


def test_session_cookie_is_httponly_and_samesite(client: FlaskClient, admin: int) -> None:
    resp = log_in(client)
    cookie = next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_login_over_https_works_without_a_referer(client: FlaskClient, admin: int) -> None:
    """Pages send Referrer-Policy: no-referrer, so browsers send no Referer: the CSRF check must
    not depend on one (Flask-WTF's strict HTTPS mode would refuse every form)."""
    token = csrf_of(client.get("/login", base_url="https://localhost"))
    resp = client.post("/login", base_url="https://localhost",
                       data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_cross_site_form_posts_are_refused(client: FlaskClient, admin: int) -> None:
    token = csrf_of(client.get("/login"))
    form = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token}
    resp = client.post("/login", data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403
    assert client.post("/login", data=form, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 302


# --- lockout ----------------------------------------------------------------------------------


def test_repeated_failures_lock_the_account_from_that_address_even_for_the_right_password(client: FlaskClient,
                                                                       admin: int) -> None:
    for _ in range(EMAIL_LIMIT):
        assert log_in(client, password="wrong password!").status_code == 401
    resp = log_in(client)
    assert resp.status_code == 429
    assert "Too many failed logins" in text_of(resp) and "1 minute" in text_of(resp)
    assert client.get("/").status_code == 302


def test_the_lock_ends_and_a_success_clears_the_count(app: Flask, client: FlaskClient, admin: int) -> None:
    for _ in range(EMAIL_LIMIT):
        log_in(client, password="wrong password!")
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(update(LoginThrottle).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert log_in(client).status_code == 302
    with app.extensions["calsync"].sessions() as session:
        # The account's counter from this address is gone; the address keeps counting.
        assert [row.failures for row in session.scalars(select(LoginThrottle))] == [EMAIL_LIMIT]


def test_unknown_emails_lock_like_known_ones(client: FlaskClient, admin: int) -> None:
    for _ in range(EMAIL_LIMIT):
        log_in(client, email="ghost@example.com", password="whatever it is")
    resp = log_in(client, email="ghost@example.com", password="whatever it is")
    assert resp.status_code == 429


def test_an_attacker_cannot_lock_the_admin_out(client: FlaskClient, app: Flask, admin: int) -> None:
    """Five wrong passwords from one address (and one more per lock expiry) used to lock the
    account for everyone. Now they slow down that address only (OWASP: throttle, not lock)."""
    attacker = {"REMOTE_ADDR": "203.0.113.7"}
    admin_address = {"REMOTE_ADDR": "198.51.100.20"}
    for _round in range(3):
        for _ in range(EMAIL_LIMIT):
            log_in(client, password="wrong password!", environ_base=attacker)
        assert log_in(client, environ_base=attacker).status_code == 429
        with app.test_client() as admins_browser:
            assert log_in(admins_browser, environ_base=admin_address).status_code == 302
        # The attacker waits for the lock to expire and tries again.
        with app.extensions["calsync"].sessions.begin() as session:
            session.execute(update(LoginThrottle).values(locked_until=utcnow() - timedelta(seconds=1)))
    # The admin's own typos still count against the admin's address only.
    for _ in range(EMAIL_LIMIT):
        log_in(client, password="wrong password!", environ_base=admin_address)
    assert log_in(client, environ_base=admin_address).status_code == 429
    assert log_in(app.test_client(), environ_base={"REMOTE_ADDR": "192.0.2.44"}).status_code == 302


def test_one_address_trying_many_accounts_is_locked(client: FlaskClient, admin: int) -> None:
    attacker = {"REMOTE_ADDR": "203.0.113.7"}
    for n in range(ADDRESS_LIMIT):
        resp = log_in(client, email=f"guess{n}@example.com", environ_base=attacker)
        assert resp.status_code == 401
    assert log_in(client, environ_base=attacker).status_code == 429
    # The admin at another address is not locked out by someone else's attack.
    other = {"REMOTE_ADDR": "198.51.100.20"}
    assert log_in(client, environ_base=other).status_code == 302


def test_the_lock_holds_across_processes(settings: Settings, app: Flask, client: FlaskClient,
                                         admin: int) -> None:
    """The counters are in the database: a second app on the same database (another worker)
    refuses the locked account too."""
    for _ in range(EMAIL_LIMIT):
        log_in(client, password="wrong password!")
    other = create_app(settings, migrate=False)
    try:
        assert log_in(other.test_client()).status_code == 429
    finally:
        other.extensions["calsync"].engine.dispose()


def test_lock_duration_doubles_up_to_an_hour() -> None:
    assert lock_duration(EMAIL_LIMIT - 1, EMAIL_LIMIT) is None
    assert lock_duration(EMAIL_LIMIT, EMAIL_LIMIT) == timedelta(minutes=1)
    assert lock_duration(EMAIL_LIMIT + 1, EMAIL_LIMIT) == timedelta(minutes=2)
    assert lock_duration(EMAIL_LIMIT + 3, EMAIL_LIMIT) == timedelta(minutes=8)
    assert lock_duration(EMAIL_LIMIT + 50, EMAIL_LIMIT) == MAX_LOCK


def test_counters_restart_after_a_quiet_period(app: Flask) -> None:
    now = utcnow()
    with app.extensions["calsync"].sessions.begin() as session:
        for _ in range(EMAIL_LIMIT - 1):
            record_login_failure(session, "a@example.com", "192.0.2.1", now)
        later = now + QUIET + timedelta(seconds=1)
        record_login_failure(session, "A@Example.com ", "192.0.2.1", later)
        assert locked_for(session, "a@example.com", "192.0.2.1", later) is None
        rows = {r.failures for r in session.scalars(select(LoginThrottle))}
        assert rows == {1}
        # Attempts without a client address count on their own counters, not that address's.
        for _ in range(EMAIL_LIMIT):
            record_login_failure(session, "a@example.com", None, later)
        assert locked_for(session, "a@example.com", None, later) == timedelta(minutes=1)
        assert locked_for(session, "a@example.com", "192.0.2.1", later) is None
        clear_login_failures(session, "a@example.com", None)
        assert locked_for(session, "a@example.com", None, later) is None


def test_old_counters_are_pruned(app: Flask) -> None:
    long_ago = utcnow() - QUIET - MAX_LOCK - timedelta(minutes=1)
    with app.extensions["calsync"].sessions.begin() as session:
        for n in range(5):
            record_login_failure(session, f"old{n}@example.com", None, long_ago)
        record_login_failure(session, "new@example.com", None)
        # What is left: the new account's counter and the (unknown) address's, restarted.
        assert [row.failures for row in session.scalars(select(LoginThrottle))] == [1, 1]


# --- headers and pages ------------------------------------------------------------------------


def test_pages_carry_the_security_headers(client: FlaskClient, admin: int) -> None:
    log_in(client)
    for path in ("/login", "/", "/health", "/appointments", "/appointments/new"):
        resp = client.get(path, follow_redirects=True)
        assert resp.headers["Referrer-Policy"] == "no-referrer", path
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"], path
        assert resp.headers["X-Frame-Options"] == "DENY", path


def test_static_files_are_served(client: FlaskClient) -> None:
    for name in ("calsync.css", "calsync.js", "logo.svg"):
        resp = client.get(f"/static/{name}")
        assert resp.status_code == 200, name
        resp.close()


def test_unknown_pages_get_a_page_not_a_traceback(client: FlaskClient, admin: int) -> None:
    log_in(client)
    resp = client.get("/no/such/page")
    assert resp.status_code == 404 and "does not exist" in text_of(resp)
    assert Browser(client).get("/staff/999").status_code == 404


def test_ids_beyond_the_key_range_are_404_not_a_database_error(client: FlaskClient, admin: int) -> None:
    """PostgreSQL keys are 32-bit: a larger id must never reach the database (it would fail)."""
    log_in(client)
    pages = [p for m, p in ADMIN_ROUTES if m == "GET" and "/1" in p]
    assert pages
    for path in pages:
        for big in (2**31, 2**63):
            resp = client.get(re.sub(r"/1(?=/|$)", f"/{big}", path))
            assert resp.status_code == 404, path
