"""Several real `calsync worker` processes sharing one Redis queue (issue 6, the scale path).

Three worker processes (four threads each) sync 300 ICS connections served by a loopback HTTP
server that records, per calendar, the interval of every fetch and which worker process made
it. Every job is queued three times in a row, and each fetch is slowed down, so a broken lease
would show as overlapping fetches of one calendar. Then a worker is killed with SIGKILL while
the server holds its request open: Huey has no acknowledgement, so that job is gone; once the
connection's lease has expired the scheduler queues it again, and another worker syncs it.

The test process plays the scheduler (`Jobs._schedule_due`, what the periodic task runs every
minute), so nothing waits for a wall-clock minute; the workers run with --no-schedule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.jobs import due_connection_ids
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Connection, utcnow
from tests.clock import day_at
from tests.redis_queue import private_queue_url
from tests.servers import serve_in_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CONNECTIONS = 300
STAFF = 30
WORKERS = 3
THREADS = 4
FETCH_DELAY = 0.1  # seconds each fetch is held by the server: room for overlaps to show
FETCH_TIMEOUT = 8  # the killed worker must still be waiting when it is killed
LEASE = 10  # > FETCH_TIMEOUT, as the settings require
WAIT = 90  # hang guard for each phase, not a speed requirement


# --- a calendar host that records who fetched what, and when -----------------------------------


@dataclass
class Fetch:
    path: str
    pid: int | None  # the worker process on the other end of the TCP connection
    start: float
    end: float = 0.0


def _peer_pid(peer_port: int, server_port: int, pids: list[int]) -> int | None:
    """Which of `pids` owns the client socket 127.0.0.1:peer_port → our server (Linux /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, remote = cols[1].split(":"), cols[2].split(":")
        # An established socket (state 01); a closed one of an earlier request has inode 0.
        if int(local[1], 16) == peer_port and int(remote[1], 16) == server_port and cols[3] == "01":
            inode = cols[9]
            break
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return pid
            except OSError:
                continue
    return None


class CalendarHost:
    """ICS calendars at /cal/<n>.ics with ETags; every fetch is delayed and recorded. A held
    path keeps its next request open until released."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.fetches: list[Fetch] = []
        self.worker_pids: list[int] = []
        self.active = 0
        self.max_active = 0
        self.held: dict[str, threading.Event] = {}
        self.holding: dict[str, Fetch] = {}
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                host._serve(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # twelve workers connect at once; the default is 5

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = serve_in_thread(self.server)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hold(self, path: str) -> threading.Event:
        release = threading.Event()
        self.held[path] = release
        self.arrived.clear()
        return release

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        fetch = Fetch(
            path, _peer_pid(request.client_address[1], self.port, self.worker_pids), time.monotonic()
        )
        with self._lock:
            self.fetches.append(fetch)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            release = self.held.pop(path, None)
            if release is not None:
                self.holding[path] = fetch
                self.arrived.set()
                release.wait(WAIT)
            time.sleep(FETCH_DELAY)
            body = self.bodies.get(path)
            if body is None:
                request.send_response(404)
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            tag = f'"{abs(hash(body)):x}"'
            if request.headers.get("If-None-Match") == tag:
                request.send_response(304)
                request.send_header("ETag", tag)
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(200)
            request.send_header("Content-Type", "text/calendar; charset=utf-8")
            request.send_header("ETag", tag)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            request.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the killed worker's request
        finally:
            fetch.end = time.monotonic()
            with self._lock:
                self.active -= 1

    def by_path(self) -> dict[str, list[Fetch]]:
        found: dict[str, list[Fetch]] = {}
        for fetch in list(self.fetches):
            found.setdefault(fetch.path, []).append(fetch)
        return found

    def overlaps(self) -> list[tuple[str, Fetch, Fetch]]:
        """Pairs of fetches of the same calendar that were in flight at the same time."""
        bad = []
        for path, fetches in self.by_path().items():
            ordered = sorted(fetches, key=lambda f: f.start)
            bad.extend((path, a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b.start < a.end)
        return bad

    def close(self) -> None:
        for release in self.held.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()


def _calendar(n: int) -> bytes:
    day = day_at(2 + n % 20, 9)
    events = []
    for k in range(2):
        start = day + timedelta(hours=2 * k)
        events.append(
            f"BEGIN:VEVENT\r\nUID:fleet-{n}-{k}@test\r\nDTSTAMP:20260101T000000Z\r\n"
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{start + timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n"
            "SUMMARY:Private\r\nEND:VEVENT\r\n"
        )
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//fleet//EN\r\n" + "".join(events) + "END:VCALENDAR\r\n"
    ).encode()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def queue_url() -> Iterator[str]:
    """A queue of this test's own on the test Redis: parallel runs never share jobs."""
    yield from private_queue_url("fleet", "redis://127.0.0.1:6379/14")


@pytest.fixture
def settings(settings: Settings, queue_url: str) -> Settings:
    return settings.model_copy(
        update={
            "allow_private_networks": True,
            "queue_url": queue_url,
            "fetch_timeout_seconds": float(FETCH_TIMEOUT),
            "sync_lease_seconds": LEASE,
        }
    )


@pytest.fixture
def calendar_host() -> Iterator[CalendarHost]:
    host = CalendarHost()
    yield host
    host.close()


@dataclass
class Fleet:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def wait_ready(self) -> None:
        """Until every worker has built its app and is about to consume (so all of them compete
        for the first jobs)."""
        def started() -> bool:
            assert len(self.alive()) == WORKERS, f"a worker did not start:\n{self.output()}"
            return all("Worker started" in log.read_text() for log in self.logs)

        wait_until(started, lambda: f"the workers to start:\n{self.output()}", limit=WAIT, interval=0.2)

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)


@pytest.fixture
def fleet(app: Flask, settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    """`calsync worker` processes configured through the environment, as in production."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(
        {
            "CALSYNC_DATA_DIR": str(settings.data_dir),
            "CALSYNC_DATABASE_URL": settings.resolved_database_url,
            "CALSYNC_SECRET_KEY": settings.secret_key or "",
            "CALSYNC_ALLOW_PRIVATE_NETWORKS": "1",
            "CALSYNC_QUEUE_URL": settings.queue_url or "",
            "CALSYNC_FETCH_TIMEOUT_SECONDS": str(FETCH_TIMEOUT),
            "CALSYNC_SYNC_LEASE_SECONDS": str(LEASE),
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [
        sys.executable,
        "-c",
        "from calsync.web.cli import main; main(prog_name='calsync')",
        "worker",
        "--workers",
        str(THREADS),
        "--no-schedule",
    ]
    fleet = Fleet()
    for i in range(WORKERS):
        log = tmp_path / f"worker-{i}.log"
        fleet.logs.append(log)
        with log.open("wb") as out:
            fleet.procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=Path(__file__).resolve().parents[2],
                )
            )
    yield fleet
    for proc in fleet.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in fleet.procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the test ------------------------------------------------------------------------------------


def _states(app: Flask) -> dict[int, Any]:
    with app.extensions["calsync"].sessions() as s:
        rows = s.execute(
            select(
                Connection.id,
                Connection.status,
                Connection.last_success_at,
                Connection.lease_until,
                Connection.lease_owner,
                Connection.busy_count,
            )
        )
        return {row.id: row for row in rows}


def _wait_for(app: Flask, fleet: Fleet, done: Any, what: str) -> dict[int, Any]:
    def finished() -> dict[int, Any] | None:
        states = _states(app)
        if done(states):
            return states
        assert len(fleet.alive()) >= WORKERS - 1, f"a worker died:\n{fleet.output()}"
        return None

    return wait_until(finished, lambda: f"{what}:\n{fleet.output()}", limit=WAIT, interval=0.3)


def test_three_workers_share_300_connections_and_a_killed_job_is_retried(
    app: Flask, calendar_host: CalendarHost, fleet: Fleet
) -> None:
    services = app.extensions["calsync"]
    calendar_host.worker_pids = fleet.pids
    with services.sessions.begin() as session:
        company = get_or_create_company(session, "Fleet Salon", "Europe/Berlin")
        staff = [
            create_staff(
                session, company, name=f"Staff {i}", email=f"s{i}@example.com", timezone="Europe/Berlin"
            )
            for i in range(STAFF)
        ]
        ids = []
        for n in range(CONNECTIONS):
            path = f"/cal/{n}.ics"
            calendar_host.bodies[path] = _calendar(n)
            conn = create_connection(
                session,
                company,
                services.vault,
                staff[n % STAFF].id,
                ConnectionInput(kind="ics", url=calendar_host.url(path)),
                allow_private=True,
            )
            ids.append(conn.id)
    path_of = {cid: f"/cal/{n}.ics" for n, cid in enumerate(ids)}
    fleet.wait_ready()

    # 1. Every connection is due; each is queued three times in a row, as three schedulers (or
    #    a backlog) would queue it, so several threads pick up the same connection at once.
    assert sorted(due_connection_ids(services.sync, utcnow())) == sorted(ids)
    for cid in ids:
        for _ in range(3):
            services.jobs.sync_task(cid, True)
    seen = [-1]

    def quiet(states: dict[int, Any]) -> bool:
        """All synced, no lease held, the queue drained and no fetch since the last look."""
        count, seen[0] = seen[0], len(calendar_host.fetches)
        return (
            all(states[c].status == "ok" and states[c].lease_owner is None for c in ids)
            and services.jobs.huey.pending_count() == 0
            and calendar_host.active == 0
            and count == seen[0]
        )

    states = _wait_for(app, fleet, quiet, "syncing all connections")

    assert all(states[c].busy_count == 2 for c in ids)
    fetched = calendar_host.by_path()
    assert set(fetched) == set(path_of.values())  # every calendar was read
    assert calendar_host.overlaps() == []  # and never by two workers at the same time
    assert calendar_host.max_active > 1  # the workers did run side by side
    # Every worker process took a share of the work.
    by_pid: dict[int | None, int] = {}
    for fetch in calendar_host.fetches:
        by_pid[fetch.pid] = by_pid.get(fetch.pid, 0) + 1
    assert set(by_pid) == set(fleet.pids), by_pid

    # 2. A worker is killed while the calendar host holds its request open.
    victim = ids[0]
    path = path_of[victim]
    before = len(fetched[path])
    release = calendar_host.hold(path)
    with services.sessions.begin() as session:
        session.execute(update(Connection).where(Connection.id == victim).values(next_sync_at=utcnow()))
    assert services.jobs._schedule_due() == 1
    assert calendar_host.arrived.wait(WAIT), f"the held fetch never came:\n{fleet.output()}"
    held = calendar_host.holding[path]
    row = _states(app)[victim]
    owner_pid = int(row.lease_owner.split(":")[1])
    assert owner_pid == held.pid and owner_pid in fleet.pids
    killed = next(p for p in fleet.procs if p.pid == owner_pid)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=WAIT)
    release.set()

    # The lease outlives its worker, so nobody syncs the connection meanwhile; once it has
    # expired, the connection is due again (its next sync time was never moved on).
    row = _states(app)[victim]
    assert row.lease_owner is not None and row.lease_owner.split(":")[1] == str(owner_pid)
    lease_until = row.lease_until
    assert victim not in due_connection_ids(services.sync, lease_until - timedelta(seconds=1))
    assert victim in due_connection_ids(services.sync, lease_until + timedelta(seconds=1))
    last_success = row.last_success_at

    # The scheduler's next runs after the lease has expired queue it for another worker.
    def retried(states: dict[int, Any]) -> bool:
        if utcnow() > lease_until:
            services.jobs._schedule_due()
        st = states[victim]
        return st.status == "ok" and st.last_success_at > last_success and st.lease_owner is None

    row = _wait_for(app, fleet, retried, "the retry of the killed worker's job")[victim]
    assert row.lease_until is None and row.busy_count == 2
    fetches = calendar_host.by_path()[path]
    assert len(fetches) == before + 2  # the one that was cut off, and the retry
    assert fetches[-1].pid in fleet.alive() and fetches[-1].pid != owner_pid
    assert calendar_host.overlaps() == []
    assert fleet.alive() == [p for p in fleet.pids if p != owner_pid]
