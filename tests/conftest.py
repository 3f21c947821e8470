"""Shared fixtures: settings on a temporary data dir, the app, an API client, and a guard that
fails any test reaching beyond loopback (STYLE.md)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import create_api_key, get_or_create_company
from calsync.feeds.settings import Settings
from calsync.web import create_app

pytest_plugins = ["tests.servers", "tests.admin_helpers", "tests.hostile_servers"]

# Real-world calendar files, inside the repository with their licence (tests/corpus/README.md).
CORPUS = Path(__file__).resolve().parent / "corpus" / "icalendar"


# --- network guard ----------------------------------------------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _guarded(real):  # type: ignore[no-untyped-def]
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise AssertionError(f"test tried to reach {address!r}: tests may only use loopback")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


# --- app --------------------------------------------------------------------------------------


def _database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite in the test's folder, or a fresh PostgreSQL schema per test when
    CALSYNC_TEST_DATABASE_URL points at PostgreSQL (dropped afterwards)."""
    url = os.environ.get("CALSYNC_TEST_DATABASE_URL")
    if not url:
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    if not url.startswith("postgresql"):
        yield url
        return
    import uuid

    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    joiner = "&" if "?" in url else "?"
    try:
        yield f"{url}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield from _database_url(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        base_url="https://cal.example.test",
        secret_key="test-secret-key-" + "x" * 32,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["calsync"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """A session of the app's database for arranging and checking; the test commits."""
    session = app.extensions["calsync"].sessions()
    yield session
    session.rollback()
    session.close()


@pytest.fixture
def company_id(app: Flask) -> int:
    with app.extensions["calsync"].sessions.begin() as session:
        return get_or_create_company(session, "Test Salon", "Europe/Berlin").id


@dataclass
class Api:
    """The JSON API as a client sees it, with the bearer key filled in."""

    client: FlaskClient
    key: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get("/api/v1" + path, headers=self._headers(), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post("/api/v1" + path, json=json, headers=self._headers(), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.patch("/api/v1" + path, json=json, headers=self._headers(), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete("/api/v1" + path, headers=self._headers(), **kw)

    # Arranging helpers that go through the API like a real integration would.
    def make_staff(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Zoë Müller", "email": "zoe@example.com", "timezone": "Europe/Berlin"}
        body.update(fields)
        resp = self.post("/staff", body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    def book(self, staff_id: int, start: str, end: str, **fields: Any) -> Any:
        body = {
            "staff_id": staff_id,
            "start": start,
            "end": end,
            "service": "Haircut",
            "customer": {"name": "Chloé Lefèvre", "email": "chloe@example.com", "phone": "+33 1 23"},
        }
        body.update(fields)
        return self.post("/appointments", body)

    def feed_url(self, scope: str, scope_id: int, privacy: str = "full") -> str:
        """Path of a newly issued feed token of that scope and privacy."""
        resp = self.post("/feeds", {"scope": scope, "scope_id": scope_id, "privacy": privacy})
        assert resp.status_code == 201, resp.get_json()
        return "/feeds/" + resp.get_json()["url"].rsplit("/feeds/", 1)[1]


@pytest.fixture
def api(app: Flask, client: FlaskClient, company_id: int) -> Api:
    with app.extensions["calsync"].sessions.begin() as session:
        company = get_or_create_company(session)
        _, key = create_api_key(session, company, "tests")
    return Api(client, key)
