"""Data and servers for issue 17's table (bench/ceiling.py).

The company of the issue: 20 staff and about 9,600 appointments in the feed window, plus one
staff member with only a few appointments (the PATCH baseline) and one with a calendar
connection holding 5,000 busy blocks in the next 60 days (availability). Rows are written with
Core `executemany` (COPY on PostgreSQL is bench/scale.py's): nothing measured here is the load.

Servers run the real app, `serve_app()`, in a subprocess each: gunicorn with
deploy/gunicorn.conf.py and ONE worker, and waitress with its defaults. The app carries
bench.feeds' baseline routes, whose constant route serves the exact bytes of the measured feed
(read from the file BENCH_CEILING_BODY names), so a ratio compares one server with itself.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import create_api_key, get_or_create_company
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.demo import CUSTOMERS, NOTES, SERVICES, STAFF
from calsync.feeds.publishing.feed import feed_window
from calsync.feeds.publishing.tokens import issue_feed_token
from calsync.feeds.scheduling.busy_timeline import rebuild
from calsync.feeds.scheduling.directory import create_staff
from calsync.models import Appointment, Base, BusyBlock, Connection, Customer, utcnow

ROOT = Path(__file__).resolve().parent.parent
ALL_DAY = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
OFFICE = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
ZONES = ["Europe/Berlin", "Europe/Berlin", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]
FEW = 20  # appointments of the PATCH baseline's staff member
AVAILABILITY_DAYS = 60


@dataclass
class Company:
    company_id: int
    staff_ids: list[int]  # the busy staff, ~appointments / staff each
    few_staff_id: int  # FEW appointments
    availability_staff_id: int  # office hours, 100 appointments, busy blocks
    token: str  # the company feed, full privacy
    api_key: str
    window: tuple[datetime, datetime]
    movable: dict[int, list[tuple[int, datetime, datetime]]]  # staff id -> (id, start, end)


def _slot(moment: datetime) -> datetime:
    return moment.replace(minute=(moment.minute // 15) * 15, second=0, microsecond=0)


def populate(
    services: Any, *, staff: int = 20, appointments: int = 9600, busy_blocks: int = 5000,
    seed: int = 2026,
) -> Company:
    rng = random.Random(seed)
    now = utcnow()
    sessions, engine = services.sessions, services.engine
    with sessions.begin() as session:
        company = get_or_create_company(session, "Bench Salon Sommer & Söhne", "Europe/Berlin")

        def member(i: int, hours: dict[str, Any], label: str = "") -> int:
            name = f"{STAFF[i % len(STAFF)][0]} {i + 1}{label}"
            return create_staff(session, company, name=name, email=f"staff{i + 1}@bench.calsync.test",
                                timezone=ZONES[i % len(ZONES)], working_hours=hours).id

        staff_ids = [member(i, ALL_DAY) for i in range(staff)]
        few = member(staff, ALL_DAY, " (few)")
        office = member(staff + 1, OFFICE, " (calendar)")
        _, token = issue_feed_token(session, company, services.sealer, scope="company",
                                    scope_id=company.id, privacy="full")
        _, api_key = create_api_key(session, company, "bench")
        customers = _customers(session, company.id, max(50, appointments // 20))
        window = feed_window(get_company_settings(company), datetime.now(UTC))
        conn_id = _connection(session, company.id, office, now)
        company_id = company.id
    # Inside both window edges, so a day's rollover during the run changes nothing.
    start, end = window[0] + timedelta(days=1), window[1] - timedelta(days=2)
    rows: list[dict[str, Any]] = []
    for staff_id, count in [(s, appointments // staff) for s in staff_ids] + [(few, FEW), (office, 100)]:
        spacing = (end - start) / max(1, count)
        for k in range(count):
            begin = _slot(start + k * spacing + timedelta(minutes=15 * rng.randrange(4)))
            service, minutes = rng.choice(SERVICES)
            rows.append({
                "company_id": company_id, "staff_id": staff_id, "customer_id": rng.choice(customers),
                "uid": f"bench-{staff_id}-{k}@calsync", "sequence": 0, "revision": 1,
                "status": "confirmed", "service": service,
                "location": rng.choice([None, "Salon Mitte, Torstraße 1, 10119 Berlin", "Room 2"]),
                "notes": rng.choice(NOTES), "start_at": begin, "end_at": begin + timedelta(minutes=minutes),
                "created_at": now, "updated_at": now,
            })
    first = _slot(now + timedelta(hours=1))
    step = timedelta(days=AVAILABILITY_DAYS) / max(1, busy_blocks)
    blocks = [{"connection_id": conn_id, "staff_id": office, "item_href": None,
               "start_at": first + i * step, "end_at": first + i * step + timedelta(minutes=10)}
              for i in range(busy_blocks)]
    with engine.begin() as conn:
        for part in range(0, len(rows), 20_000):
            conn.execute(insert(Appointment), rows[part:part + 20_000])
        if blocks:
            conn.execute(insert(BusyBlock), blocks)
    if blocks:
        with sessions.begin() as session:
            rebuild(session, conn_id, office)  # the busy timeline, as a sync writes it
    _analyze(engine)
    movable: dict[int, list[tuple[int, datetime, datetime]]] = {}
    with sessions() as session:
        # Appointments with room after them (the next one starts ≥ 1 h later), in the future.
        for staff_id in [*staff_ids[:2], few]:
            found = session.execute(
                select(Appointment.id, Appointment.start_at, Appointment.end_at)
                .where(Appointment.staff_id == staff_id, Appointment.start_at > now + timedelta(days=2))
                .order_by(Appointment.start_at)
            ).all()
            movable[staff_id] = [(r.id, r.start_at, r.end_at) for r in found[:-1]]
    return Company(company_id, staff_ids, few, office, token, api_key, window, movable)


def _analyze(engine: Any) -> None:
    """PostgreSQL: the planner's statistics of the tables just filled, as autovacuum gathers them
    within a minute of a bulk load (autovacuum_naptime). Without them the plans a run gets
    depended on whether autovacuum had come round yet: a hash join over every customer to read
    one moved appointment, then a better plan partway through some runs (docs/scale.md, eighth
    round). SQLite gathers none unless asked, as a deployment's database."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in Base.metadata.sorted_tables:  # this schema's tables only (search_path)
            conn.execute(text(f'VACUUM ANALYZE "{table.name}"'))


def _customers(session: Session, company_id: int, count: int) -> list[int]:
    rows = []
    for i in range(count):
        name = CUSTOMERS[i % len(CUSTOMERS)]
        slug = name.split()[0].lower().encode("ascii", "ignore").decode() or "kunde"
        rows.append({"company_id": company_id, "name": name, "email": f"{slug}{i}@example.com",
                     "phone": f"+49 30 {1000000 + i * 7919}", "created_at": utcnow()})
    return list(session.scalars(insert(Customer).returning(Customer.id, sort_by_parameter_order=True), rows))


def _connection(session: Session, company_id: int, staff_id: int, now: datetime) -> int:
    return int(session.scalars(insert(Connection).returning(Connection.id), [{
        "company_id": company_id, "staff_id": staff_id, "kind": "ics", "name": "Work",
        "url_sealed": "-", "url_display": "https://calendar.example.invalid/work.ics",
        "roles": ["conflict"], "sync_mode": "manual", "interval_minutes": 15, "all_day": "busy",
        "treat_all_busy": False, "status": "ok", "last_attempt_at": now, "last_success_at": now,
        "consecutive_failures": 0, "busy_count": 0, "next_sync_at": None, "created_at": now,
        "updated_at": now, "extra": {},
    }]).one())


# --- servers ----------------------------------------------------------------------------------


def serve_app() -> Flask:
    """The served app: calsync plus bench.feeds' baseline routes with the feed's bytes."""
    from calsync.bench.feeds import Bodies, _add_baseline_routes
    from calsync.web import create_app

    app = create_app()
    body = Path(os.environ["BENCH_CEILING_BODY"]).read_bytes()
    _add_baseline_routes(app, Bodies(plain=body, gzipped=gzip.compress(body, compresslevel=6, mtime=0)))
    return app


def serve_waitress(port: int) -> None:
    import waitress

    waitress.serve(serve_app(), host="127.0.0.1", port=port, ident="calsync-bench", _quiet=True)


@dataclass
class Server:
    name: str  # gunicorn | waitress
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(name: str, env: dict[str, str], port: int, ready: Any) -> Server:
    env = dict(env, PYTHONUNBUFFERED="1")
    if name == "gunicorn":
        env.update(WEB_CONCURRENCY="1", GUNICORN_BIND=f"127.0.0.1:{port}")
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
               "--access-logfile", "/dev/null", "calsync.bench.ceiling_setup:serve_app()"]
    else:
        cmd = [sys.executable, "-c",
               f"from calsync.bench.ceiling_setup import serve_waitress; serve_waitress({port})"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, proc, port)
    deadline = time.monotonic() + 120
    while not ready(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"benchmark sanity check failed: {name} did not start")
        time.sleep(0.2)
    return server
