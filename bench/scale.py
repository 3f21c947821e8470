"""Scale benchmark (`calsync bench scale`): issue 6's "Benchmark" section, on PostgreSQL.

One run creates two schemas in the given database and drops them at the end: `small` with
10,000 appointments and `large` with 1,000,000 (loaded with COPY). Both hold the same measured
company (20 staff; the measured staff member has 100 appointments in the feed window and a
calendar connection with 5,000 busy blocks in the next 60 days); the rest is other companies of
20 staff, each with a feed token, three calendar connections and their busy blocks. Each schema
is served by its own gunicorn with deploy/gunicorn.conf.py and 4 workers, its app built by
`bench_app()` below: the real app plus bench.feeds' baseline routes.

- Feed latency: the measured staff member's feed from the large and the small database, timed
  alternately over one persistent connection each: warm GET, 304, and the first GET after a
  change (one appointment moved through feeds.booking, so one fragment and the staff member's
  segment are rebuilt). Target: large/small ≤ 1.3.
- Availability: feeds.availability.find_availability over 60 days for that staff member,
  in-process against each database, alternately. Target: under 20 ms on the large one.
- Load: client processes with persistent connections (a bounded number of requests each)
  against the large database's gunicorn: cached 200s and 304s of the feed, beside the constant
  bytes route and the empty 304 route of bench.feeds served by the same gunicorn; and 200s from
  a third gunicorn on the large database without the memory cache (the segment comes from the
  database, as for most polls when there are far more feeds than a cache holds). Requests per
  second, errors, and CPU per request of the gunicorn workers and of their PostgreSQL backends
  (found by application_name), which is what the projection scales.
- Sync throughput: one `calsync worker` process (Redis queue) syncing ICS connections served
  from loopback: a first sync (fetch, parse, expand, store) and an unchanged one (304); syncs
  per second and CPU per sync of the worker and of its PostgreSQL backends.
- Projection: processes needed for 10,000 companies × 20 staff (feeds polled every 30 minutes)
  with 3 connections each synced every 15 minutes (docs/scale.md explains the assumptions).
"""

from __future__ import annotations

import gzip
import http.client
import math
import multiprocessing
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask
from sqlalchemy import Engine, create_engine, func, insert, select, text, update

from calsync.bench.feeds import (
    EMPTY_ETAG,
    Bodies,
    Row,
    _add_baseline_routes,
    _expect,
    _paired,
    _print_table,
    answers,
    free_port,
)
from calsync.bench.sync import CalendarHost, make_calendar
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.publishing.feed import feed_window
from calsync.feeds.publishing.tokens import issue_feed_token
from calsync.feeds.scheduling.availability import find_availability
from calsync.feeds.scheduling.booking import reschedule_appointment
from calsync.feeds.scheduling.busy_timeline import rebuild
from calsync.feeds.settings import Settings
from calsync.models import Appointment, Company, Connection, Staff, utcnow
from calsync.web import create_app

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
WEB_WORKERS = 4
# Within the database pool (5 connections) so no backend comes and goes during a pass: the CPU
# of the worker's PostgreSQL backends is read per process.
SYNC_THREADS = 4
COMPANY_STAFF = 20
TARGET_APPOINTMENTS = 100  # the measured staff member's feed
FILLER_PER_COMPANY = 10_000  # appointments of each other company, over three years
CONNECTIONS_PER_STAFF = 3
BLOCKS_PER_CONNECTION = 30
BUSY_BLOCKS = 5_000
AVAILABILITY_DAYS = 60
WORKING_HOURS = {d: [["09:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
SERVICES = ["Haircut", "Colour & style", "Beard trim", "Consultation", "Blow-dry"]
COPY_BATCH = 50_000
LOAD_PASSES = 2


# --- the databases ----------------------------------------------------------------------------


def _with_options(url: str, schema: str, app_name: str) -> str:
    """The URL with this schema first on the search path and a name PostgreSQL shows."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}&application_name={app_name}"


@dataclass
class Database:
    label: str  # small | large
    base_url: str
    schema: str = field(init=False)
    prefix: str = field(init=False)
    url: str = field(init=False)
    app: Flask | None = None

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.schema = f"bench_scale_{self.label}_{tag}"
        self.prefix = f"calsync_bench_{self.label}_{tag}"
        self.url = self.url_as("bench")

    def url_as(self, role: str) -> str:
        """The URL for one kind of process; PostgreSQL shows the role as application_name, so
        the CPU of its backends can be told apart."""
        return _with_options(self.base_url, self.schema, f"{self.prefix}_{role}")

    @property
    def services(self) -> Any:
        assert self.app is not None
        return self.app.extensions["calsync"]

    @property
    def engine(self) -> Engine:
        return self.services.engine  # type: ignore[no-any-return]


@contextmanager
def _schemas(base_url: str, labels: Iterable[str]) -> Iterator[list[Database]]:
    admin = create_engine(base_url)
    databases = [Database(label, base_url) for label in labels]
    try:
        with admin.begin() as conn:
            for db in databases:
                conn.execute(text(f'CREATE SCHEMA "{db.schema}"'))
        yield databases
    finally:
        for db in databases:
            if db.app is not None:
                db.engine.dispose()
        with admin.begin() as conn:
            for db in databases:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
        admin.dispose()


def _copy(engine: Engine, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY rows into a table through psycopg, committing every COPY_BATCH rows."""
    count = 0
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            with driver.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)
            driver.commit()
            batch.clear()

        for row in rows:
            batch.append(row)
            count += 1
            if len(batch) >= COPY_BATCH:
                flush()
        if batch:
            flush()
    finally:
        raw.close()
    return count


def _next_id(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        # Table names are this module's constants, never input.
        return int(conn.scalar(text(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")) or 1)  # noqa: S608


def _sync_sequence(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        # Table names are this module's constants, never input.
        last = f"(SELECT coalesce(max(id), 1) FROM {table})"  # noqa: S608
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})"))


# --- data -------------------------------------------------------------------------------------


@dataclass
class Target:
    company_id: int
    staff_id: int
    token: str
    moved_id: int  # the appointment the "after a change" rounds move back and forth
    moved_at: tuple[datetime, datetime]


def _slot(moment: datetime) -> datetime:
    return moment.replace(minute=(moment.minute // 15) * 15, second=0, microsecond=0)


def _staff_rows(session: Any, company_id: int, count: int, first: int) -> list[int]:
    now = utcnow()
    rows = [
        {
            "company_id": company_id,
            "name": f"Staff {first + i}",
            "email": f"s{first + i}@bench.test",
            "timezone": "Europe/Berlin",
            "working_hours": WORKING_HOURS,
            "feed_revision": 1,
            "feed_changed_at": now,
            "created_at": now,
        }
        for i in range(count)
    ]
    return list(session.scalars(insert(Staff).returning(Staff.id, sort_by_parameter_order=True), rows))


def _appointments(
    engine: Engine, plan: list[tuple[int, int, int, datetime, datetime, str]], rng: random.Random, tag: str
) -> int:
    """COPY (company, staff, customer, start, end, status) rows as appointments."""
    first = _next_id(engine, "appointment")
    now = utcnow()
    rows = (
        (
            first + i,
            company,
            staff,
            customer,
            f"{tag}-{first + i}@bench.calsync",
            0,
            1,
            status,
            SERVICES[i % len(SERVICES)],
            None,
            None,
            start,
            end,
            now,
            now,
        )
        for i, (company, staff, customer, start, end, status) in enumerate(plan)
    )
    count = _copy(
        engine,
        "appointment",
        [
            "id",
            "company_id",
            "staff_id",
            "customer_id",
            "uid",
            "sequence",
            "revision",
            "status",
            "service",
            "location",
            "notes",
            "start_at",
            "end_at",
            "created_at",
            "updated_at",
        ],
        rows,
    )
    _sync_sequence(engine, "appointment")
    return count


def _customers(engine: Engine, company_id: int, count: int) -> list[int]:
    first = _next_id(engine, "customer")
    now = utcnow()
    _copy(
        engine,
        "customer",
        ["id", "company_id", "name", "email", "phone", "created_at"],
        (
            (first + i, company_id, f"Customer {first + i}", f"c{first + i}@example.com", None, now)
            for i in range(count)
        ),
    )
    _sync_sequence(engine, "customer")
    return list(range(first, first + count))


def _connection(
    session: Any,
    db: Database,
    company_id: int,
    staff_id: int,
    *,
    url: str,
    mode: str,
    next_sync: datetime | None,
    busy: int,
) -> int:
    now = utcnow()
    return int(
        session.scalar(
            insert(Connection).returning(Connection.id),
            {
                "company_id": company_id,
                "staff_id": staff_id,
                "kind": "ics",
                "name": "Work",
                "url_sealed": db.services.vault.seal(url),
                "url_display": url,
                "roles": ["conflict"],
                "sync_mode": mode,
                "interval_minutes": 15,
                "all_day": "busy",
                "treat_all_busy": False,
                "status": "ok",
                "last_attempt_at": now,
                "last_success_at": now,
                "consecutive_failures": 0,
                "busy_count": busy,
                "next_sync_at": next_sync,
                "created_at": now,
                "updated_at": now,
                "extra": {},
            },
        )
    )


def load_target(db: Database, seed: int = 2026) -> Target:
    """The measured company: the same in every database (same seed, same times)."""
    rng = random.Random(seed)
    services = db.services
    now = utcnow()
    with services.sessions.begin() as session:
        company = Company(name="Scale Salon", timezone="Europe/Berlin", settings={})
        session.add(company)
        session.flush()
        staff_ids = _staff_rows(session, company.id, COMPANY_STAFF, 1)
        _, token = issue_feed_token(
            session, company, services.sealer, scope="staff", scope_id=staff_ids[0], privacy="full"
        )
        window = feed_window(get_company_settings(company), now)
        conn_id = _connection(
            session,
            db,
            company.id,
            staff_ids[0],
            url="https://calendar.example.invalid/zoe.ics",
            mode="manual",
            next_sync=None,
            busy=BUSY_BLOCKS,
        )
        company_id = company.id
    customers = _customers(db.engine, company_id, 400)
    # 100 appointments per staff member, evenly over the future part of the feed window.
    start, end = now + timedelta(days=1), window[1] - timedelta(days=2)
    spacing = (end - start) / TARGET_APPOINTMENTS
    plan = []
    for staff_id in staff_ids:
        for k in range(TARGET_APPOINTMENTS):
            begin = _slot(start + k * spacing + timedelta(minutes=15 * rng.randrange(8)))
            length = timedelta(minutes=rng.choice([30, 45, 60]))
            plan.append((company_id, staff_id, rng.choice(customers), begin, begin + length, "confirmed"))
    _appointments(db.engine, plan, rng, "target")
    # 5,000 busy blocks of 10 minutes in the next 60 days (about 83 a day, day and night).
    first_day = _slot(now + timedelta(hours=1))
    step = timedelta(days=AVAILABILITY_DAYS) / BUSY_BLOCKS
    _copy(
        db.engine,
        "busy_block",
        ["connection_id", "staff_id", "item_href", "start_at", "end_at"],
        (
            (conn_id, staff_ids[0], None, first_day + i * step, first_day + i * step + timedelta(minutes=10))
            for i in range(BUSY_BLOCKS)
        ),
    )
    with services.sessions.begin() as session:
        rebuild(session, conn_id, staff_ids[0])  # the busy timeline, as a sync writes it
    with services.sessions() as session:
        moved = session.execute(
            select(Appointment.id, Appointment.start_at, Appointment.end_at)
            # The last one: beyond the 60 days of busy blocks, so moving it is always allowed.
            .where(Appointment.staff_id == staff_ids[0])
            .order_by(Appointment.start_at.desc())
            .limit(1)
        ).one()
    return Target(company_id, staff_ids[0], token, moved.id, (moved.start_at, moved.end_at))


def load_filler(db: Database, appointments: int, seed: int = 7) -> dict[str, int]:
    """Other companies: 20 staff each, 10,000 appointments over the past two years and the next
    one, a feed token per staff member, three connections each with busy blocks."""
    rng = random.Random(seed)
    services = db.services
    now = utcnow()
    counts = {"companies": 0, "appointments": 0, "connections": 0, "busy_blocks": 0, "tokens": 0}
    left = appointments
    index = 0
    while left > 0:
        mine = min(left, FILLER_PER_COMPANY)
        with services.sessions.begin() as session:
            company = Company(name=f"Filler {index}", timezone="Europe/Berlin", settings={})
            session.add(company)
            session.flush()
            staff_ids = _staff_rows(session, company.id, COMPANY_STAFF, 1000 + index * COMPANY_STAFF)
            conn_ids = []
            for k, staff_id in enumerate(staff_ids):
                for c in range(CONNECTIONS_PER_STAFF):
                    # Due in a day: never picked up by this run's scheduler.
                    conn_ids.append(
                        (
                            staff_id,
                            _connection(
                                session,
                                db,
                                company.id,
                                staff_id,
                                url=f"https://cal.example.invalid/{k}/{c}.ics",
                                mode="interval",
                                next_sync=now + timedelta(days=1, seconds=rng.randrange(900)),
                                busy=BLOCKS_PER_CONNECTION,
                            ),
                        )
                    )
            company_id = company.id
        customers = _customers(db.engine, company_id, max(1, mine // 5))
        first, last = now - timedelta(days=730), now + timedelta(days=365)
        per_staff = [
            mine // COMPANY_STAFF + (1 if i < mine % COMPANY_STAFF else 0) for i in range(COMPANY_STAFF)
        ]
        plan = []
        for staff_id, count in zip(staff_ids, per_staff, strict=True):
            spacing = (last - first) / max(1, count)
            for k in range(count):
                begin = _slot(first + k * spacing)
                status = "cancelled" if rng.random() < 0.05 else "confirmed"
                plan.append(
                    (
                        company_id,
                        staff_id,
                        customers[rng.randrange(len(customers))],
                        begin,
                        begin + timedelta(minutes=rng.choice([30, 45, 60, 90])),
                        status,
                    )
                )
        counts["appointments"] += _appointments(db.engine, plan, rng, f"filler{index}")
        counts["busy_blocks"] += _copy(
            db.engine,
            "busy_block",
            ["connection_id", "staff_id", "item_href", "start_at", "end_at"],
            (
                (
                    conn_id,
                    staff_id,
                    None,
                    _slot(now + timedelta(hours=7 * b + rng.randrange(6))),
                    _slot(now + timedelta(hours=7 * b + 7)),
                )
                for staff_id, conn_id in conn_ids
                for b in range(BLOCKS_PER_CONNECTION)
            ),
        )
        with services.sessions.begin() as session:
            for staff_id, conn_id in conn_ids:
                rebuild(session, conn_id, staff_id)  # each connection's busy timeline
        counts["tokens"] += _copy(
            db.engine,
            "feed_token",
            [
                "company_id",
                "scope",
                "scope_id",
                "name",
                "privacy",
                "token_hash",
                "token_encrypted",
                "created_at",
            ],
            (
                (company_id, "staff", staff_id, f"Staff {staff_id}", "full", secrets.token_hex(32), "-", now)
                for staff_id in staff_ids
            ),
        )
        counts["connections"] += len(conn_ids)
        counts["companies"] += 1
        left -= mine
        index += 1
    return counts


def _analyze(db: Database) -> None:
    """VACUUM ANALYZE, as autovacuum would have by the time a database has grown this big."""
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


# --- processes: gunicorn and calsync worker -------------------------------------------------


def bench_app() -> Flask:
    """gunicorn's entry in this benchmark: the real app plus bench.feeds' baseline routes, the
    constant route serving the bytes of the measured feed (BENCH_SCALE_BODY names the file)."""
    app = create_app()
    body = Path(os.environ["BENCH_SCALE_BODY"]).read_bytes()
    _add_baseline_routes(app, Bodies(plain=body, gzipped=gzip.compress(body, mtime=0)))
    return app


def _env(db: Database, role: str, data_dir: Path, secret: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALSYNC_", "GUNICORN_"))}
    env.update(
        {
            "CALSYNC_DATABASE_URL": db.url_as(role),
            "CALSYNC_DATA_DIR": str(data_dir),
            "CALSYNC_SECRET_KEY": secret,
            **extra,
        }
    )
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    role: str

    def children(self) -> list[int]:
        return _children(self.proc.pid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start_gunicorn(
    db: Database, data_dir: Path, secret: str, body_file: Path, role: str = "web", **settings: str
) -> Server:
    port = free_port()
    env = _env(
        db,
        role,
        data_dir,
        secret,
        **settings,
        BENCH_SCALE_BODY=str(body_file),
        WEB_CONCURRENCY=str(WEB_WORKERS),
        GUNICORN_BIND=f"127.0.0.1:{port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "calsync.bench.scale:bench_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(proc, port, role)
    deadline = time.monotonic() + 120
    while len(server.children()) < WEB_WORKERS or not answers(port):
        _expect(proc.poll() is None, f"gunicorn for the {db.label} database exited with {proc.returncode}")
        _expect(time.monotonic() < deadline, "gunicorn did not start")
        time.sleep(0.2)
    return server


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- CPU accounting ---------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _backends(db: Database, role: str) -> list[int]:
    """PostgreSQL backend processes serving one kind of process (by application_name)."""
    with db.engine.connect() as conn:
        return list(
            conn.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                {"n": f"{db.prefix}_{role}"},
            )
        )


# --- measurements -----------------------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def timed(self, path: str, headers: dict[str, str] | None = None) -> tuple[float, int, Any, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=headers or {})
        response = self.conn.getresponse()
        body = response.read()
        return time.perf_counter() - t0, response.status, response, body

    def close(self) -> None:
        self.conn.close()


def _mover(db: Database, target: Target) -> Callable[[], None]:
    """Move the target's first appointment 15 minutes later and back, in turn, through the
    booking rules: every call is a real change, and the data ends as it began."""
    state = {"later": False}

    def move() -> None:
        shift = timedelta(0) if state["later"] else timedelta(minutes=15)
        state["later"] = not state["later"]
        with db.services.sessions.begin() as session:
            company = session.get(Company, target.company_id)
            assert company is not None
            reschedule_appointment(
                session,
                company,
                target.moved_id,
                start=target.moved_at[0] + shift,
                end=target.moved_at[1] + shift,
                within_working_hours=False,
            )

    return move


def _feed_latency(
    dbs: dict[str, Database], servers: dict[str, Server], targets: dict[str, Target], rounds: int, sizes: str
) -> list[Row]:
    clients = {label: Client(servers[label].port) for label in dbs}
    paths = {label: f"/feeds/{targets[label].token}.ics" for label in dbs}
    movers = {label: _mover(dbs[label], targets[label]) for label in dbs}
    etags: dict[str, str] = {}
    lengths: dict[str, int] = {}
    for label in dbs:
        _, status, response, body = clients[label].timed(paths[label])
        _expect(
            status == 200 and body.count(b"BEGIN:VEVENT") == TARGET_APPOINTMENTS,
            f"the {label} feed does not hold the staff member's {TARGET_APPOINTMENTS} appointments",
        )
        etags[label], lengths[label] = response.getheader("ETag"), len(body)
    _expect(lengths["small"] == lengths["large"], "the feed differs between the databases")

    def get(label: str) -> Callable[[], float]:
        def run() -> float:
            t, status, _, body = clients[label].timed(paths[label])
            _expect(status == 200 and len(body) == lengths[label], f"warm GET ({label})")
            return t

        return run

    def revalidate(label: str) -> Callable[[], float]:
        def run() -> float:
            t, status, _, _ = clients[label].timed(paths[label], {"If-None-Match": etags[label]})
            _expect(status == 304, f"304 ({label}) returned {status}")
            return t

        return run

    def after_change(label: str) -> Callable[[], float]:
        def run() -> float:
            movers[label]()
            t, status, response, _ = clients[label].timed(paths[label])
            _expect(status == 200 and response.getheader("ETag") != etags[label], f"changed feed ({label})")
            etags[label] = response.getheader("ETag")
            return t

        return run

    rows = []
    try:
        for name, make in (("warm GET", get), ("304", revalidate)):
            large, small = _paired(rounds, make("large"), make("small"))
            rows.append(Row(f"staff feed {name}: {sizes}", large, small, "≤ 1.3", large / small <= 1.3))
        large, small = _paired(max(3, rounds // 4), after_change("large"), after_change("small"))
        rows.append(
            Row(f"staff feed GET after a change: {sizes}", large, small, "≤ 1.3", large / small <= 1.3)
        )
    finally:
        for client in clients.values():
            client.close()
    return rows


def _availability(dbs: dict[str, Database], targets: dict[str, Target], rounds: int, sizes: str) -> list[Row]:
    def measure(label: str) -> Callable[[], float]:
        db, target = dbs[label], targets[label]

        def run() -> float:
            start = _slot(utcnow() + timedelta(hours=1))
            with db.services.sessions() as session:
                t0 = time.perf_counter()
                staff = session.get(Staff, target.staff_id)
                assert staff is not None
                found = find_availability(
                    session, staff, start, start + timedelta(days=AVAILABILITY_DAYS), timedelta(minutes=30)
                )
                elapsed = time.perf_counter() - t0
            _expect(found.blocked is None and len(found.busy) >= BUSY_BLOCKS, f"availability ({label})")
            return elapsed

        return run

    large, small = _paired(rounds, measure("large"), measure("small"))
    return [
        Row(
            f"availability, 60 days, {BUSY_BLOCKS:,} busy blocks (large db)",
            large,
            None,
            "< 20 ms",
            large < 0.020,
        ),
        Row(f"availability: {sizes}", large, small, "(info)"),
    ]


def _load_client(
    port: int,
    path: str,
    headers: dict[str, str],
    expect: int,
    count: int,
    warmup: int,
    barrier: Any,
    results: Any,
) -> None:
    """One load-generating process: one keep-alive connection, `count` requests after warm-up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def one() -> bool:
        nonlocal conn
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status == expect
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            return False

    for _ in range(warmup):
        one()
    barrier.wait()
    t0 = time.perf_counter()
    ok = sum(one() for _ in range(count))
    results.put((ok, count - ok, time.perf_counter() - t0))
    conn.close()


@dataclass
class LoadResult:
    name: str
    rps: float
    errors: int
    web_cpu_ms: float  # gunicorn workers' CPU per request
    db_cpu_ms: float  # their PostgreSQL backends' CPU per request


def _load(
    db: Database,
    server: Server,
    name: str,
    path: str,
    headers: dict[str, str],
    expect: int,
    clients: int,
    requests: int,
) -> LoadResult:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    per_client = max(1, requests // clients)
    procs = [
        ctx.Process(
            target=_load_client,
            args=(
                server.port,
                path,
                headers,
                expect,
                per_client,
                max(20, per_client // 20),
                barrier,
                results,
            ),
        )
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    web, backends = server.children(), _backends(db, server.role)
    cpu_web, cpu_db = _cpu(web), _cpu(backends)
    outcomes = [results.get(timeout=600) for _ in procs]
    cpu_web, cpu_db = _cpu(web) - cpu_web, _cpu(backends) - cpu_db
    for proc in procs:
        proc.join(timeout=30)
    done = sum(ok for ok, _, _ in outcomes)
    errors = sum(bad for _, bad, _ in outcomes)
    wall = max(t for _, _, t in outcomes)
    total = done + errors
    return LoadResult(name, done / wall, errors, 1000 * cpu_web / total, 1000 * cpu_db / total)


def _mean(results: list[LoadResult]) -> LoadResult:
    n = len(results)
    return LoadResult(
        results[0].name,
        sum(r.rps for r in results) / n,
        sum(r.errors for r in results),
        sum(r.web_cpu_ms for r in results) / n,
        sum(r.db_cpu_ms for r in results) / n,
    )


@dataclass
class SyncResult:
    name: str
    per_second: float
    worker_cpu_ms: float
    db_cpu_ms: float


def _redis_ready(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except Exception as exc:
        raise RuntimeError(
            f"The sync figure needs Redis at {redis_url}: start it or give --redis-url ({exc})."
        ) from exc
    return client


def _sync_throughput(
    db: Database, target: Target, data_dir: Path, secret: str, redis_url: str, connections: int
) -> list[SyncResult]:
    """One `calsync worker` process with SYNC_THREADS threads syncing `connections` ICS
    connections from a loopback host: a first sync, then an unchanged one (304)."""
    queue = f"bench_scale_{uuid.uuid4().hex[:8]}"
    queue_url = f"{redis_url}{'&' if '?' in redis_url else '?'}queue={queue}"
    client = _redis_ready(redis_url)
    host = CalendarHost()
    services = db.services
    now = utcnow()
    ids = []
    with services.sessions.begin() as session:
        staff = session.get(Staff, target.staff_id)
        assert staff is not None
        for i in range(connections):
            head, tail, _ = make_calendar(20, now.date() + timedelta(days=1), seed=i, name=f"Staff {i}")
            url = host.put(f"/c/{i:04d}/basic.ics", head + tail, f'"s{i}"')
            ids.append(
                _connection(
                    session, db, target.company_id, staff.id, url=url, mode="interval", next_sync=None, busy=0
                )
            )
        session.execute(
            update(Connection).where(Connection.id.in_(ids)).values(status="pending", last_success_at=None)
        )
    env = _env(
        db, "worker", data_dir, secret, CALSYNC_QUEUE_URL=queue_url, CALSYNC_ALLOW_PRIVATE_NETWORKS="1"
    )
    log = data_dir / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from calsync.web.cli import main; main(prog_name='calsync')",
                "worker",
                "--workers",
                str(SYNC_THREADS),
                "--no-schedule",
            ],
            cwd=ROOT,
            env=dict(env, PYTHONUNBUFFERED="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The scheduler runs here, on a Huey bound to the same queue.
    from calsync.feeds.jobs import Jobs, make_huey

    jobs = Jobs(make_huey(queue_url, data_dir), lambda: services.sync)
    results = []
    try:
        # Its start (imports, app) must not count as CPU of the first pass.
        deadline = time.monotonic() + 120
        while "Worker started" not in log.read_text():
            _expect(worker.poll() is None and time.monotonic() < deadline, "the worker did not start")
            time.sleep(0.1)
        time.sleep(1)
        for name in ("first sync (fetch, parse, store)", "unchanged sync (304)"):
            started = utcnow()
            with services.sessions.begin() as session:
                session.execute(update(Connection).where(Connection.id.in_(ids)).values(next_sync_at=started))
            backends = _backends(db, "worker")
            cpu_worker, cpu_db = _cpu([worker.pid]), _cpu(backends)
            t0 = time.perf_counter()
            queued = jobs._schedule_due()
            _expect(queued == connections, f"the scheduler queued {queued} of {connections}")
            while True:
                _expect(worker.poll() is None, "the worker died")
                with services.sessions() as session:
                    done = session.scalar(
                        select(func.count())
                        .select_from(Connection)
                        .where(Connection.id.in_(ids), Connection.last_success_at >= started)
                    )
                if done == connections:
                    break
                _expect(time.perf_counter() - t0 < 600, f"only {done} of {connections} synced")
                time.sleep(0.05)
            wall = time.perf_counter() - t0
            backends = sorted(set(backends) | set(_backends(db, "worker")))
            cpu_worker, cpu_db = _cpu([worker.pid]) - cpu_worker, _cpu(backends) - cpu_db
            results.append(
                SyncResult(
                    name, connections / wall, 1000 * cpu_worker / connections, 1000 * cpu_db / connections
                )
            )
        statuses = [seen[-1] for seen in host.statuses.values()]
        _expect(all(s == 304 for s in statuses), "the unchanged pass was not answered with 304s")
    finally:
        _stop(worker, signal.SIGINT)
        host.close()
        for key in client.scan_iter(match=f"huey.*.{queue}*"):
            client.delete(key)
        client.close()
    return results


# --- the projection ---------------------------------------------------------------------------


@dataclass
class Projection:
    """10,000 companies × 20 staff; feeds polled every 30 minutes; 3 connections per staff
    member synced every 15 minutes. The other assumptions are these fields (docs/scale.md)."""

    companies: int = 10_000
    staff_per_company: int = 20
    feed_poll_seconds: int = 1800
    subscribers_per_feed: int = 2  # a phone and a desktop
    changes_per_staff_day: int = 8  # bookings, moves and cancellations: each makes one render
    connections_per_staff: int = 3
    sync_seconds: int = 900
    peak: float = 3.0  # peak over average
    utilisation: float = 0.6  # of a core, at peak
    changed_share: float = 0.2  # syncs that fetch a changed calendar
    fetch_latency_s: float = 0.5  # an external calendar host, TLS included
    sync_threads: int = 12  # docs/deploy.md: up to 15, the database pool's limit
    web_threads: int = 4

    def lines(self, load: dict[str, LoadResult], syncs: list[SyncResult], render_s: float) -> list[str]:
        staff = self.companies * self.staff_per_company
        feed_rps = staff * self.subscribers_per_feed / self.feed_poll_seconds * self.peak
        renders = staff * self.changes_per_staff_day / 86_400 * self.peak
        # Most polls miss the per-process memory cache at this size: priced as reads of the
        # segment from the database (the uncached run), plus one render per change (its
        # latency on a quiet server, an upper bound of its CPU).
        polled = load["feed 200, no memory cache"]
        web_cores = (feed_rps * polled.web_cpu_ms / 1000 + renders * render_s) / self.utilisation
        web_db = feed_rps * polled.db_cpu_ms / 1000 / self.utilisation
        sync_rate = staff * self.connections_per_staff / self.sync_seconds  # even, day and night
        first, same = syncs[0], syncs[1]
        per_sync = self.changed_share * first.worker_cpu_ms + (1 - self.changed_share) * same.worker_cpu_ms
        per_sync_db = self.changed_share * first.db_cpu_ms + (1 - self.changed_share) * same.db_cpu_ms
        sync_cores = sync_rate * per_sync / 1000 / self.utilisation
        in_flight = sync_rate * (self.fetch_latency_s + per_sync / 1000)
        # A Python process uses at most about one core (the GIL): the larger of the two counts.
        web_procs = max(2, math.ceil(web_cores))
        sync_procs = max(math.ceil(sync_cores), math.ceil(in_flight / self.sync_threads))
        return [
            f"Projection ({self.companies:,} companies × {self.staff_per_company} staff = {staff:,} staff; "
            f"×{self.peak:g} at peak, cores at {self.utilisation:.0%}):",
            f"  web: {staff * self.subscribers_per_feed:,} subscriptions polled every "
            f"{self.feed_poll_seconds // 60} min = {feed_rps:,.0f} req/s at {polled.web_cpu_ms:.2f} ms "
            f"(segment from the database), {renders:,.1f} renders/s at {render_s * 1000:.0f} ms → "
            f"{web_cores:.1f} cores → {web_procs} gunicorn worker processes of {self.web_threads} threads; "
            f"PostgreSQL {web_db:.1f} cores;",
            f"  workers: {staff * self.connections_per_staff:,} connections every "
            f"{self.sync_seconds // 60} min = {sync_rate:,.0f} syncs/s, {self.changed_share:.0%} changed → "
            f"{per_sync:.1f} ms CPU each → {sync_cores:.1f} cores; {in_flight:,.0f} fetches in flight at "
            f"{self.fetch_latency_s:g} s → {sync_procs} `calsync worker` processes of {self.sync_threads} "
            f"threads; PostgreSQL {sync_rate * per_sync_db / 1000 / self.utilisation:.1f} cores.",
        ]


# --- the run ----------------------------------------------------------------------------------


def run(
    database_url: str = DEFAULT_DATABASE_URL,
    small: int = 10_000,
    large: int = 1_000_000,
    rounds: int = 100,
    requests: int = 4000,
    clients: int = 4,
    connections: int = 300,
    redis_url: str = DEFAULT_REDIS_URL,
    issue17_only: bool = False,
) -> dict[str, Any]:
    """Run the scale benchmark; print a table and return the figures. Issue 17's table on
    PostgreSQL follows (bench/ceiling.py, bench/reschedule_curve.py)."""
    _expect(database_url.startswith("postgresql"), "the scale benchmark runs on PostgreSQL (--database-url)")
    if issue17_only:
        return _issue17(database_url, small, large, rounds)
    figures = _run(database_url, small, large, rounds, requests, clients, connections, redis_url)
    figures["issue17"] = _issue17(database_url, small, large, rounds)
    return figures


def _issue17(database_url: str, small: int, large: int, rounds: int) -> dict[str, Any]:
    from calsync.bench import ceiling, reschedule_curve

    figures = ceiling.run(rounds=min(rounds, 30), database_url=database_url)
    rows = reschedule_curve.run(database_url, small=small, large=large, rounds=min(rounds, 60))
    _print_table(rows, [
        "Reschedule PATCH in-process (Flask test client, API key): one company of 20 staff owns every "
        "appointment, so the measured staff member holds 1/20 of them; baseline: the same PATCH on the "
        "small database, timed alternately in the same run.",
    ])
    figures["reschedule"] = {r.metric: {"ours_s": r.ours, "base_s": r.base, "passed": r.passed} for r in rows}
    return figures


def _run(database_url: str, small: int, large: int, rounds: int, requests: int, clients: int,
         connections: int, redis_url: str) -> dict[str, Any]:
    _redis_ready(redis_url).close()  # before the long load, not after it
    started = time.perf_counter()
    secret = secrets.token_urlsafe(48)
    figures: dict[str, Any] = {}
    servers: dict[str, Server] = {}
    with (
        tempfile.TemporaryDirectory(prefix="calsync-bench-scale-") as tmp,
        _schemas(database_url, ["small", "large"]) as schemas,
    ):
        data_dir = Path(tmp)
        dbs = {db.label: db for db in schemas}
        targets: dict[str, Target] = {}
        try:
            for label, total in (("small", small), ("large", large)):
                db = dbs[label]
                db.app = create_app(
                    Settings(
                        data_dir=data_dir, database_url=db.url, secret_key=secret, allow_private_networks=True
                    )
                )
                t0 = time.perf_counter()
                targets[label] = load_target(db)
                filler = load_filler(db, total - COMPANY_STAFF * TARGET_APPOINTMENTS)
                _analyze(db)
                with db.engine.connect() as conn:
                    count = conn.scalar(text("SELECT count(*) FROM appointment"))
                figures[f"{label}_appointments"] = count
                figures[f"{label}_load_s"] = time.perf_counter() - t0
                print(
                    f"{label}: {count:,} appointments, {filler['companies'] + 1} companies, "
                    f"{filler['connections'] + 1:,} connections, {filler['busy_blocks'] + BUSY_BLOCKS:,} "
                    f"busy blocks, loaded in {figures[f'{label}_load_s']:.1f} s",
                    flush=True,
                )
            body_file = data_dir / "feed.ics"
            client = dbs["large"].app.test_client()  # type: ignore[union-attr]
            body_file.write_bytes(client.get(f"/feeds/{targets['large'].token}.ics").data)
            for label, db in dbs.items():
                servers[label] = _start_gunicorn(db, data_dir, secret, body_file)
            # The same large database without the per-process memory cache: every request reads
            # the staff member's segment from the feed_segment table, as most requests do when
            # far more feeds are polled than a process's cache holds (docs/scale.md).
            servers["uncached"] = _start_gunicorn(
                dbs["large"], data_dir, secret, body_file, "web_uncached", CALSYNC_FEED_CACHE_BYTES="0"
            )
            print(f"Serving with gunicorn ({WEB_WORKERS} workers each); timing …", flush=True)

            sizes = f"{figures['large_appointments']:,} vs {figures['small_appointments']:,}"
            rows = _feed_latency(dbs, servers, targets, rounds, sizes)
            render_s = rows[-1].ours  # the first GET after a change, large database
            rows += _availability(dbs, targets, max(10, rounds // 5), sizes)

            feed = f"/feeds/{targets['large'].token}.ics"
            status, etag = _etag(servers["large"].port, feed)
            _expect(status == 200, "feed GET before the load")
            cached, uncached = servers["large"], servers["uncached"]
            runs: list[tuple[Server, str, str, dict[str, str], int]] = [
                (cached, "constant route", "/bench/constant", {}, 200),
                (cached, "feed 200", feed, {}, 200),
                (uncached, "feed 200, no memory cache", feed, {}, 200),
                (cached, "empty 304 route", "/bench/empty", {"If-None-Match": EMPTY_ETAG}, 304),
                (cached, "feed 304", feed, {"If-None-Match": etag}, 304),
            ]
            print(
                f"Load: {clients} client processes × {requests // clients:,} requests per run …", flush=True
            )
            # Each run twice, in turn, so drift in the machine's load hits routes and feed alike.
            passes = [
                [_load(dbs["large"], *run_, clients, requests) for run_ in runs] for _ in range(LOAD_PASSES)
            ]
            load = {result.name: _mean([p[i] for p in passes]) for i, result in enumerate(passes[0])}
            for name, base in (
                ("feed 200", "constant route"),
                ("feed 200, no memory cache", "constant route"),
                ("feed 304", "empty 304 route"),
            ):
                ours, theirs = load[name], load[base]
                rows.append(
                    Row(
                        f"{name} under load: req/s vs {base}",
                        1 / ours.rps,
                        1 / theirs.rps,
                        "0 errors",
                        ours.errors == 0 and theirs.errors == 0,
                        note=f"{ours.rps:,.0f} vs {theirs.rps:,.0f} req/s",
                    )
                )
            print(
                f"Sync: one worker process, {SYNC_THREADS} threads, {connections} connections …", flush=True
            )
            syncs = _sync_throughput(dbs["large"], targets["large"], data_dir, secret, redis_url, connections)
        finally:
            for server in servers.values():
                _stop(server.proc)

    figures.update(
        rows={
            row.metric: {"ours_s": row.ours, "base_s": row.base, "ratio": row.ratio, "passed": row.passed}
            for row in rows
        },
        load={name: vars(result) for name, result in load.items()},
        sync=[vars(result) for result in syncs],
        total_seconds=time.perf_counter() - started,
    )
    info = [
        f"Databases: {figures['small_appointments']:,} and {figures['large_appointments']:,} appointments "
        f"(COPY; loaded in {figures['small_load_s']:.0f} s and {figures['large_load_s']:.0f} s); the "
        f"measured feed has {TARGET_APPOINTMENTS} appointments; medians of {rounds} paired rounds.",
        "Under load (large database, gunicorn with 4 workers; rows above show seconds per request "
        "as 1/throughput):",
        *(
            f"  {r.name:<26} {r.rps:8,.0f} req/s  errors {r.errors}  web CPU {r.web_cpu_ms:.2f} ms/req  "
            f"PostgreSQL CPU {r.db_cpu_ms:.2f} ms/req"
            for r in load.values()
        ),
        f"Sync, one worker process with {SYNC_THREADS} threads, {connections} ICS connections of 20 events "
        "on loopback:",
        *(
            f"  {s.name:<34} {s.per_second:7,.1f} syncs/s  worker CPU {s.worker_cpu_ms:.1f} ms/sync  "
            f"PostgreSQL CPU {s.db_cpu_ms:.1f} ms/sync"
            for s in syncs
        ),
        *Projection().lines(load, syncs, render_s),
        f"Whole benchmark {figures['total_seconds']:.0f} s.",
    ]
    _print_table(rows, info)
    figures["passed"] = {row.metric: row.passed for row in rows if row.passed is not None}
    return figures


def _etag(port: int, path: str) -> tuple[int, str]:
    client = Client(port)
    try:
        _, status, response, _ = client.timed(path)
        return status, response.getheader("ETag") or ""
    finally:
        client.close()
