"""Web security across the whole app: CSRF on every form (found from the URL map, so a new form
is covered the day it is added), session cookie flags, security headers on every kind of
response, no secret in any log line of a full run, feed tokens found by hash and compared in
constant time, revoked tokens gone for good.

Login throttling is pinned in tests/integration/test_admin_auth.py (lockout by account and by address,
across processes); CSRF of the login form and of the self-service forms there and in
tests/integration/test_admin_self_service.py. This file covers what those do not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import MetaData, String, Text, func, select
from werkzeug.routing import Rule

from calsync.feeds.mail.delivery import deliver_due
from calsync.feeds.onboarding.connect_links import connect_sealer, connect_url, make_connect_token
from calsync.feeds.settings import Settings
from calsync.models import Appointment, Connection, FeedToken, Staff
from calsync.web import create_app
from tests.admin_helpers import ADMIN_PASSWORD, csrf_of, log_in, make_admin
from tests.conftest import Api
from tests.servers import CalDAVServer, CalendarHTTPServer, SmtpSink


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def admin(app: Flask) -> int:
    return make_admin(app)


def _path(rule: Rule) -> str:
    """The rule's path with 1 for every id (and 'x' for anything else)."""
    return re.sub(r"<(?:(\w+):)?\w+>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)


def post_routes(app: Flask, blueprint: str) -> list[str]:
    return sorted(
        _path(rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(blueprint + ".") and "POST" in (rule.methods or ())
    )


def fingerprint(app: Flask) -> tuple[int, ...]:
    """Row counts that any of the forms would change."""
    with app.extensions["calsync"].sessions() as session:
        return tuple(
            len(session.scalars(select(model)).all()) for model in (Staff, Appointment, Connection, FeedToken)
        )


# --- CSRF -------------------------------------------------------------------------------------


def test_every_admin_form_refuses_a_post_without_its_csrf_token(
    app: Flask, client: FlaskClient, api: Api, admin: int
) -> None:
    api.make_staff()  # ids 1 exist, so a form that got through would change something
    assert log_in(client).status_code == 302
    routes = post_routes(app, "admin")
    assert len(routes) >= 20, routes  # the URL map is really read
    before = fingerprint(app)
    for path in routes:
        for extra in ({}, {"csrf_token": "forged"}):
            page = client.post(path, data={"name": "x", "url": "https://example.com/a.ics", **extra})
            assert page.status_code == 400, (path, extra, page.status_code)
        script = client.post(path, headers={"Accept": "application/json", "X-CSRFToken": "forged"})
        assert script.status_code == 400 and "reload" in script.get_json()["error"], path
    assert fingerprint(app) == before
    assert client.get("/").status_code == 200  # still logged in: the logout form was refused too


def test_every_staff_self_service_form_refuses_a_post_without_its_csrf_token(app: Flask, api: Api) -> None:
    staff = api.make_staff()
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        row = session.get(Staff, staff["id"])
        token = make_connect_token(session, row, connect_sealer(services.settings.secret_key))
    visitor = app.test_client()
    assert visitor.get(connect_url("", token)).status_code == 302
    routes = post_routes(app, "staff")
    assert routes, "the self-service blueprint has forms"
    before = fingerprint(app)
    for path in routes:
        resp = visitor.post(path, data={"url": "https://example.com/a.ics", "name": "x"})
        assert resp.status_code == 400, path
    assert fingerprint(app) == before
    assert visitor.get("/connect/").status_code == 200


# --- cookies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "secure"), [("https://cal.example.test", True), ("http://127.0.0.1:8000", False)]
)
def test_the_session_cookie_is_httponly_samesite_and_secure_on_https(
    settings: Settings, app: Flask, admin: int, base_url: str, secure: bool
) -> None:
    other = create_app(settings.model_copy(update={"base_url": base_url}), migrate=False)
    try:
        client = other.test_client()
        resp = log_in(client)
        cookie = next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith("session="))
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite"} <= flags and "SameSite=Lax" in cookie
        assert ("secure" in flags) is secure
    finally:
        other.extensions["calsync"].engine.dispose()


# --- headers ----------------------------------------------------------------------------------


def assert_security_headers(resp: Any, what: str) -> None:
    headers = resp.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "no-referrer", what
    csp = headers.get("Content-Security-Policy", "")
    for directive in ("default-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert directive in csp, (what, directive)
    assert headers.get("X-Frame-Options") == "DENY", what


def test_every_kind_of_response_carries_the_security_headers(
    app: Flask, client: FlaskClient, api: Api, admin: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    staff = api.make_staff()
    feed = api.feed_url("staff", staff["id"])
    anonymous = app.test_client()
    responses = {
        "login page": anonymous.get("/login"),
        "login refused (CSRF)": anonymous.post("/login", data={"email": "a@b.c", "password": "x"}),
        "self-service without a link": anonymous.get("/connect/"),
        "static file": anonymous.get("/static/calsync.css"),
        "feed": anonymous.get(feed),
        "feed, gzip": anonymous.get(feed, headers={"Accept-Encoding": "gzip"}),
        "feed, HEAD": anonymous.head(feed),
        "unknown feed": anonymous.get("/feeds/" + "x" * 43 + ".ics"),
        "API": api.get("/staff"),
        "API without a key": anonymous.get("/api/v1/staff"),
        "API, unknown id": api.get("/staff/999"),
        "API, invalid body": api.post("/staff", {"name": ""}),
        "API, unknown path": api.get("/no/such/thing"),
        "API, wrong method": api.client.put("/api/v1/staff", headers={"Authorization": f"Bearer {api.key}"}),
        "OpenAPI document": anonymous.get("/api/v1/openapi.json"),
    }
    log_in(client)
    responses |= {
        "admin page": client.get("/"),
        "admin 404": client.get("/no/such/page"),
        "admin 405": client.put("/"),
    }
    # An unexpected error: the API's 500 and the app's own error page.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    monkeypatch.setattr("calsync.web.api.staff.directory.list_staff", _explode)
    monkeypatch.setattr("calsync.web.admin.health.connection_health", _explode, raising=False)
    responses["API 500"] = api.get("/staff")
    for what, resp in responses.items():
        assert resp.status_code != 304, what
        assert_security_headers(resp, what)
        resp.close()
    assert responses["API 500"].status_code == 500
    assert responses["API, wrong method"].headers.get("Allow"), "a 405 names the allowed methods"


def _explode(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("boom")


# --- feed tokens ------------------------------------------------------------------------------


def test_feed_tokens_are_stored_as_a_hash_and_matched_in_constant_time(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    staff = api.make_staff()
    path = api.feed_url("staff", staff["id"])
    token = path.removeprefix("/feeds/").removesuffix(".ics")
    # The database holds no copy a reader could use: not in any text column of any table.
    engine = app.extensions["calsync"].engine
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, String | Text):
                    found = conn.scalar(
                        select(func.count()).select_from(table).where(column.like(f"%{token}%"))
                    )
                    assert found == 0, f"{table.name}.{column.name} holds the plain token"
    with app.extensions["calsync"].sessions() as session:
        hashes = session.scalars(select(FeedToken.token_hash)).all()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    # The lookup is by hash, and the final comparison is hmac.compare_digest.
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert api.client.get(path).status_code == 200
    digest = hashlib.sha256(token.encode()).hexdigest().encode()
    assert (digest, digest) in compared
    # One character off is simply unknown.
    other = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert api.client.get(f"/feeds/{other}.ics").status_code == 404


def test_a_revoked_token_is_404_even_to_a_client_that_has_the_feed_cached(api: Api) -> None:
    staff = api.make_staff()
    resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"]})
    token_id, path = resp.get_json()["token_id"], "/feeds/" + resp.get_json()["url"].rsplit("/feeds/", 1)[1]
    first = api.client.get(path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert api.client.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert api.delete(f"/feeds/{token_id}").status_code == 204
    for headers in ({}, {"If-None-Match": etag}, {"If-Modified-Since": modified}):
        assert api.client.get(path, headers=headers).status_code == 404, headers
    assert api.client.head(path).status_code == 404


# --- no secret in any log ---------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{self.format(record)} {record.args!r}")


@pytest.fixture
def every_log_line() -> Iterator[Collect]:
    """Every record of every logger, at DEBUG, wherever it would otherwise go."""
    handler = Collect()
    root = logging.getLogger()
    saved = {
        name: (lg.level, lg.disabled)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for name, (level, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.disabled = disabled


def everything_at_debug() -> None:
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.DEBUG)
            logger.disabled = False


# The test servers stand for the outside world: they receive the secrets by design, and their
# own traces (Radicale's request log, the SMTP sink's AUTH exchange) are not calsync's logs.
OUTSIDE = ("radicale", "mail.log", "aiosmtpd")


def test_no_token_or_password_reaches_any_log(
    every_log_line: Collect,
    settings: Settings,
    tmp_path: Any,
    radicale: CalDAVServer,
    calendar_http: CalendarHTTPServer,
) -> None:
    smtp_password = "smtp-Pa55word-that-must-stay-secret"
    sink = SmtpSink(auth=("mailer", smtp_password))
    sink.start()
    smtp_url = f"smtp://mailer:{quote(smtp_password, safe='')}@{sink.host}:{sink.port}"
    app = create_app(settings.model_copy(update={"smtp_url": SecretStr(smtp_url)}))
    app.config["TESTING"] = True
    everything_at_debug()  # create_app sets calsync's level; everything speaks now
    try:
        secrets = run_everything(app, radicale, calendar_http, smtp_password)
    finally:
        app.extensions["calsync"].engine.dispose()
        sink.stop()
    ours = [line for line in every_log_line.lines if not line.startswith(OUTSIDE)]
    assert len(ours) > 50, "the run logged (at DEBUG): otherwise this test proves nothing"
    leaks = [
        (name, line)
        for name, secret in secrets.items()
        for form in {secret, quote(secret, safe=""), quote(secret)}
        for line in ours
        if form in line
    ]
    found = [f"{name}: {line[:300]}" for name, line in leaks]
    assert not found, "secrets in the logs:\n" + "\n".join(found)


def run_everything(
    app: Flask, radicale: CalDAVServer, calendar_http: CalendarHTTPServer, smtp_password: str
) -> dict[str, str]:
    """Admin login, API key, staff, feed tokens, an ICS connection at a secret address, a CalDAV
    connection with a password, syncs, feed fetches, a booking with its emails, a connect link —
    and the failing variants of each; returns every secret used."""
    from calsync.feeds.accounts.admins import create_api_key, get_or_create_company

    services = app.extensions["calsync"]
    make_admin(app)
    with services.sessions.begin() as session:
        _, key = create_api_key(session, get_or_create_company(session), "log test")
    client = app.test_client()
    api = Api(client, key)
    secrets = {
        "API key": key,
        "admin password": ADMIN_PASSWORD,
        "SMTP password": smtp_password,
        "CalDAV password": radicale.password,
        "app secret key": services.settings.secret_key or "",
        "CalDAV Basic credentials": base64.b64encode(
            f"{radicale.username}:{radicale.password}".encode()
        ).decode(),
    }
    # Admin UI: a wrong password, then the right one.
    secrets["wrong admin password"] = "Wrong-Admin-Password-123"
    log_in(client, password=secrets["wrong admin password"])
    assert log_in(client).status_code == 302
    # Staff, feed tokens of every scope and privacy, and the company's.
    every_day = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    staff = api.make_staff(working_hours=every_day, timezone="UTC")
    group = api.post("/groups", {"name": "Desk", "staff_ids": [staff["id"]]}).get_json()
    for scope, scope_id in (("staff", staff["id"]), ("group", group["id"]), ("company", 1)):
        for privacy in ("full", "busy"):
            api.feed_url(scope, scope_id, privacy)
    feeds = api.get("/feeds").get_json()["feeds"]
    for n, feed in enumerate(feeds):
        secrets[f"feed token {n}"] = feed["url"].rsplit("/feeds/", 1)[1].removesuffix(".ics")
    # An ICS calendar at a secret address, read fine, then failing.
    secret_path = "/calendar/ical/zoe%40example.com/private-5ecret0123456789abcdef/basic.ics"
    secrets["secret part of the ICS address"] = "private-5ecret0123456789abcdef"
    ics = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:b\r\n"
        b"DTSTAMP:20260101T000000Z\r\nDTSTART:20300101T090000Z\r\nDTEND:20300101T100000Z\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    url = calendar_http.add(secret_path, ics)
    ics_conn = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url}).get_json()
    assert api.post(f"/connections/{ics_conn['id']}/sync").get_json()["status"] == "ok"
    calendar_http.add(secret_path, b"", status=500)
    assert api.post(f"/connections/{ics_conn['id']}/sync").get_json()["status"] == "error"
    # CalDAV: discovery with the wrong and the right password, a connection, syncs.
    radicale.calendar("work", "Work")
    secrets["wrong CalDAV password"] = "Wrong-CalDAV-Password-456"
    for password in (secrets["wrong CalDAV password"], radicale.password):
        api.post(
            "/caldav/discover",
            {"url": radicale.base_url + "/", "username": radicale.username, "password": password},
        )
    dav = api.post(
        f"/staff/{staff['id']}/connections",
        {
            "kind": "caldav",
            "url": radicale.url_of("work"),
            "username": radicale.username,
            "password": radicale.password,
            "roles": ["conflict", "linked"],
        },
    ).get_json()
    assert dav.get("id"), dav
    assert api.post(f"/connections/{dav['id']}/sync").get_json()["status"] in ("ok", "unchanged")
    # A booking (written into the linked calendar by the next sync), its emails delivered.
    start = "2030-01-02T10:00:00+00:00"
    booked = api.book(staff["id"], start, "2030-01-02T10:30:00+00:00")
    assert booked.status_code == 201, booked.get_json()
    for _ in range(2):
        assert api.post(f"/connections/{dav['id']}/sync").get_json()["status"] in ("ok", "unchanged")
    deliver_due(services.mail)
    # Feeds fetched: full, gzip, revalidated, unknown.
    for n in range(len(feeds)):
        path = f"/feeds/{secrets[f'feed token {n}']}.ics"
        etag = client.get(path).headers.get("ETag")
        client.get(path, headers={"If-None-Match": etag or "", "Accept-Encoding": "gzip"})
    secrets["unknown feed token"] = "Unknown-Feed-Token-" + "z" * 24
    client.get(f"/feeds/{secrets['unknown feed token']}.ics")
    # A wrong API key; a connect link, made in the admin UI and opened by the staff member.
    secrets["wrong API key"] = "csk_Wrong-Api-Key-0123456789"
    client.get("/api/v1/staff", headers={"Authorization": f"Bearer {secrets['wrong API key']}"})
    page = client.post(f"/staff/{staff['id']}/connect-link", data={"csrf_token": csrf_of(client.get("/"))})
    link = re.search(r"/connect/([A-Za-z0-9_.=\-]{20,})", page.get_data(as_text=True))
    assert link, "the admin page shows the new connect link"
    secrets["connect link token"] = link.group(1)
    assert app.test_client().get(f"/connect/{link.group(1)}").status_code == 302
    return secrets
