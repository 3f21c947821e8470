"""Helpers of the admin UI tests: an admin, a logged-in test client, CSRF tokens from pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from calsync.feeds.accounts.admins import create_admin, get_or_create_company
from tests.clock import day_at

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"

_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def make_admin(app: Flask, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> int:
    with app.extensions["calsync"].sessions.begin() as session:
        company = get_or_create_company(session, "Test Salon", "Europe/Berlin")
        profile = app.extensions["calsync"].settings.password_hash_profile
        return create_admin(session, company, email, password, profile=profile).id


def csrf_of(resp: TestResponse) -> str:
    text = resp.get_data(as_text=True)
    found = _META.search(text) or _FIELD.search(text)
    assert found, "the page carries no CSRF token"
    return next(g for g in found.groups() if g)


def log_in(client: FlaskClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD,
           **kw: Any) -> TestResponse:
    token = csrf_of(client.get("/login"))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token}, **kw)


@dataclass
class Browser:
    """A test client that sends each form with the session's CSRF token, like a page would."""

    client: FlaskClient

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.client.get(path, **kw)

    def token(self, page: str = "/") -> str:
        return csrf_of(self.client.get(page))

    def post(self, path: str, data: dict[str, Any] | None = None, *, page: str = "/",
             **kw: Any) -> TestResponse:
        form = dict(data or {})
        form.setdefault("csrf_token", self.token(page))
        return self.client.post(path, data=form, **kw)

    def post_json(self, path: str, *, page: str = "/") -> TestResponse:
        """A fetch() from calsync.js: no form, the token in the X-CSRFToken header."""
        return self.client.post(path, headers={"Accept": "application/json",
                                               "X-CSRFToken": self.token(page)})


def text_of(resp: TestResponse) -> str:
    return resp.get_data(as_text=True)


def words_of(html: str) -> str:
    """The page's text, tags out and spaces collapsed, as a person reads it."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def busy_ics(count: int = 2, *, first_day: int = 2, summary: str = "Dentist") -> bytes:
    """A calendar with `count` one-hour events on the days after `first_day` days from now."""
    base = day_at(0, 10)
    out = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync tests//EN\r\n"
    for i in range(count):
        start = base + timedelta(days=first_day + i)
        out += (f"BEGIN:VEVENT\r\nUID:busy-{i}@tests\r\nDTSTAMP:20260101T000000Z\r\n"
                f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{start + timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n"
                f"SUMMARY:{summary}\r\nEND:VEVENT\r\n")
    return (out + "END:VCALENDAR\r\n").encode()


@pytest.fixture
def admin(app: Flask, client: FlaskClient, api: Any) -> Browser:  # api: the company exists
    """A logged-in admin's browser (the test client with CSRF tokens handled)."""
    make_admin(app)
    log_in(client)
    return Browser(client)
