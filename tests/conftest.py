"""Shared fixtures: settings on a temporary data dir, the app, an API client, and a guard that
fails any test reaching beyond loopback (docs/architecture.md, "Code style")."""

from __future__ import annotations

import gc
import ipaddress
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import CheckConstraint, Engine, create_engine, inspect, text
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import create_api_key, get_or_create_company
from calsync.feeds.settings import Settings
from calsync.migrations import alembic_config, upgrade_database
from calsync.models import Base, make_engine
from calsync.web import create_app
from tests.clock import start_day

pytest_plugins = ["tests.servers", "tests.admin_helpers", "tests.hostile_servers", "tests.slow_servers",
                  "tests.icaljs", "tests.provider_fixtures"]

# Real-world calendar files, inside the repository with their licence (tests/corpus/README.md).
CORPUS = Path(__file__).resolve().parent / "corpus" / "icalendar"
# Test knobs live outside CALSYNC_: production settings refuse unknown CALSYNC_ variables.
TEST_DATABASE_URL = "TEST_CALSYNC_DATABASE_URL"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker more than there are cores. Most of the
    suite's time is spent waiting on servers, browsers and subprocesses, so a spare worker
    keeps the cores busy; measured on 2 cores, 3 workers beat 2."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow (browsers, subprocess fleets, the load run) go first, keeping their
    order otherwise. With pytest-xdist (`-n auto` in pyproject) the longest tests then start
    at once on their own workers instead of arriving last and leaving the other cores idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture
def no_gc_pauses() -> Iterator[None]:
    """For tests that time what threads do within a second or two (a sync lease, a fetch
    deadline). An xdist worker ends the suite holding 1.5-3 million objects, and a full
    collection of them stopped every thread of the process for up to 2.9 s (measured with
    gc.callbacks over a whole run): CI saw a sync lose its 3 s lease, and its slow server
    never get to read the request, during one. The heap earlier tests left is frozen out of
    the collector for the test (gc.freeze, O(1)); what the test allocates is still collected,
    and the heap is handed back when it ends."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(autouse=True)
def _the_tests_day() -> None:
    """Dates in tests count from the day this test started (tests/clock.py), so a test that
    runs across midnight UTC places everything on the same days."""
    start_day()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


# --- app --------------------------------------------------------------------------------------


# Each test gets a database at the migrations' head without running them: Alembic runs once
# per session into a template, which each test copies (SQLite: the file). On PostgreSQL each
# test gets a schema of its own made by create_all + stamp: the same schema as migrating,
# because the session's template check below (and tests/integration/test_migrations.py for
# SQLite) finds no difference between the migrated schema and the models. The app fixture then
# starts with migrate=False; production always migrates on start (create_app's default).


def _schema_differences(engine: Engine) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def _migrate_and_check(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade_database(engine)
        differences = _schema_differences(engine)
        # autogenerate does not compare CHECK constraints: their names are compared here.
        inspector = inspect(engine)
        for table in Base.metadata.tables.values():
            expected = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            found = {c["name"] for c in inspector.get_check_constraints(table.name)}
            if expected != found:
                differences.append(("check constraints", table.name, expected ^ found))
        assert not differences, f"the migrated schema differs from the models: {differences}"
    finally:
        engine.dispose()


def _postgres_schema(admin: Engine, url: str, schema: str) -> str:
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


def _drop_schema(admin: Engine, schema: str) -> None:
    """Drop a test's schema. A thread the test started may still be finishing a write there
    (a feed's pieces stored after the answer, a worker's last job): the DROP can then be chosen
    as a deadlock's victim, and is tried again once that write has ended."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(10):
        try:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            return
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def _template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """SQLite: a migrated database file to copy. PostgreSQL: None, after checking once that
    migrating a schema gives exactly the models' schema (so create_all is a faithful copy)."""
    url = os.environ.get(TEST_DATABASE_URL)
    if url and url.startswith("postgresql"):
        admin = create_engine(url)
        schema = "t_template_" + uuid.uuid4().hex[:8]
        try:
            _migrate_and_check(_postgres_schema(admin, url, schema))
            yield None
        finally:
            _drop_schema(admin, schema)
            admin.dispose()
        return
    template = tmp_path_factory.mktemp("template") / "migrated.sqlite3"
    _migrate_and_check(f"sqlite:///{template}")
    yield template


def _database_url(tmp_path: Path, template: Path | None, *, migrated: bool = True) -> Iterator[str]:
    """A migrated (or empty) SQLite file in the test's folder, or a fresh PostgreSQL schema per
    test when TEST_CALSYNC_DATABASE_URL points at PostgreSQL (dropped afterwards)."""
    url = os.environ.get(TEST_DATABASE_URL)
    if url and not url.startswith("postgresql"):
        # Another server: the tests share its database as it is (brought to head here).
        if migrated:
            engine = make_engine(url)
            try:
                upgrade_database(engine)
            finally:
                engine.dispose()
        yield url
        return
    if not url:
        path = tmp_path / ("test.sqlite3" if migrated else "empty.sqlite3")
        if migrated:
            assert template is not None
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    admin = create_engine(url)
    schema = "t_" + uuid.uuid4().hex[:16]
    try:
        schema_url = _postgres_schema(admin, url, schema)
        if migrated:
            engine = make_engine(schema_url)
            try:
                with engine.begin() as conn:
                    Base.metadata.create_all(conn)
                command.stamp(alembic_config(engine), "head")
            finally:
                engine.dispose()
        yield schema_url
    finally:
        _drop_schema(admin, schema)
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path, _template_database: Path | None) -> Iterator[str]:
    """A database at the migrations' head, for this test alone."""
    yield from _database_url(tmp_path, _template_database)


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables), for tests of the migrations themselves."""
    yield from _database_url(tmp_path, None, migrated=False)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        base_url="https://cal.example.test",
        secret_key="test-secret-key-" + "x" * 32,
        # Argon2 at production cost spends a third of a second on each of the suite's logins;
        # tests/unit/test_settings.py checks that production settings keep that cost.
        password_hash_profile="fast-for-tests",
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings, migrate=False)  # the database fixture is migrated already
    app.config["TESTING"] = True
    yield app
    app.extensions["calsync"].engine.dispose()


@pytest.fixture
def postgres(app: Flask) -> Engine:
    """The app's engine, for tests of what only PostgreSQL does (query plans, LISTEN/NOTIFY):
    skipped in the SQLite pass, run in the PostgreSQL one (TEST_CALSYNC_DATABASE_URL)."""
    engine: Engine = app.extensions["calsync"].engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: runs in the pass with TEST_CALSYNC_DATABASE_URL")
    return engine


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
