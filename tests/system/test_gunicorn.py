"""gunicorn with deploy/gunicorn.conf.py: the preloaded app, forked into worker processes, serves
feeds and the API against the test database, and its access log holds no secret."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from calsync.feeds.settings import Settings
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, events_by_uid, iso, soon
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gunicorn:
    port: int
    proc: subprocess.Popen[bytes]
    access_log: Path
    error_log: Path

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body).encode()
            hdrs = dict(headers or {})
            if payload is not None:
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def logs(self) -> str:
        return f"--- access\n{self.access_log.read_text()}\n--- error\n{self.error_log.read_text()}"


@pytest.fixture
def gunicorn(api: Api, settings: Settings, tmp_path: Path) -> Iterator[Gunicorn]:
    """Started after `api` has migrated the database and made an API key; configured through
    the environment, as in production."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALSYNC_", "GUNICORN_"))}
    env.update(
        {
            "CALSYNC_DATA_DIR": str(settings.data_dir),
            "CALSYNC_DATABASE_URL": settings.resolved_database_url,
            "CALSYNC_SECRET_KEY": settings.secret_key or "",
            "CALSYNC_BASE_URL": settings.base_url,
            "WEB_CONCURRENCY": str(WORKERS),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
        }
    )
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(CONFIG),
            "--access-logfile",
            str(access),
            "--error-logfile",
            str(errors),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Gunicorn(port, proc, access, errors)
    def serving() -> bool:
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{server.logs()}"
        booted = errors.exists() and errors.read_text().count("Booting worker") >= WORKERS
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return booted
        except OSError:
            return False

    wait_until(serving, lambda: f"gunicorn to start:\n{server.logs()}", interval=0.2)
    yield server
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_feeds_and_api_through_gunicorn_workers(api: Api, gunicorn: Gunicorn) -> None:
    auth = {"Authorization": f"Bearer {api.key}"}
    staff = api.make_staff(working_hours=ALL_DAY)
    first = api.book(staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1))).get_json()
    feed = api.feed_url("staff", staff["id"])

    status, headers, body = gunicorn.request("GET", feed)
    assert status == 200, gunicorn.logs()
    assert headers["content-type"] == "text/calendar; charset=utf-8"
    assert set(events_by_uid(body)) == {first["uid"]}
    assert gunicorn.request("GET", feed, {"If-None-Match": headers["etag"]})[0] == 304

    # A booking through the API of one worker shows in the feed served by any worker: the
    # caches are keyed by versions read from the shared database.
    status, _, created = gunicorn.request(
        "POST",
        "/api/v1/appointments",
        auth,
        {
            "staff_id": staff["id"],
            "start": iso(soon(4)),
            "end": iso(soon(4) + timedelta(hours=1)),
            "service": "Haircut",
            "customer": {"name": "Ana", "email": "ana@example.com"},
        },
    )
    assert status == 201, created
    second = json.loads(created)["uid"]

    # Many requests at once, each on its own connection, spread over both forked workers: none
    # may trip over a database connection inherited from the master.
    def one(i: int) -> tuple[int, bytes]:
        if i % 2:
            got = gunicorn.request("GET", "/api/v1/staff", auth)
            return got[0], got[2]
        got = gunicorn.request("GET", feed)
        return got[0], got[2]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(40)))
    assert [status for status, _ in results] == [200] * 40, gunicorn.logs()
    for i, (_, got) in enumerate(results):
        if i % 2:
            assert [s["id"] for s in json.loads(got)["staff"]] == [staff["id"]]
        else:
            assert set(events_by_uid(got)) == {first["uid"], second}


def test_access_log_has_no_secrets_and_the_proxys_client_address(api: Api, gunicorn: Gunicorn) -> None:
    staff = api.make_staff()
    feed = api.feed_url("staff", staff["id"])
    token = feed.removeprefix("/feeds/").removesuffix(".ics")
    assert gunicorn.request("GET", feed + "?probe=query-secret")[0] == 200
    # From the proxy (loopback is in forwarded_allow_ips): the client's address is logged.
    assert gunicorn.request("GET", "/api/v1/staff", {"X-Forwarded-For": "203.0.113.9"})[0] == 401
    gunicorn.proc.send_signal(signal.SIGTERM)  # flushes and closes the logs
    gunicorn.proc.wait(timeout=30)
    log = gunicorn.access_log.read_text()
    assert token not in log and "query-secret" not in log and "probe" not in log
    assert '"GET /feeds/[secret] HTTP/1.1" 200' in log
    assert any(line.startswith("203.0.113.9 ") and "/api/v1/staff" in line for line in log.splitlines())
    assert token not in gunicorn.error_log.read_text()
