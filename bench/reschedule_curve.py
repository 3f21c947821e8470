"""The reschedule row of issue 17 on PostgreSQL: a PATCH through the API at 10k and at 1M
appointments (`calsync bench scale` prints it; `--reschedule-only` runs it alone).

Each size is one schema of its own (bench.scale._schemas, dropped at the end) holding ONE
company of 20 staff that owns every appointment, spread over two years back and one ahead: the
measured staff member has 500 appointments at 10k and 50,000 at 1M, so the curve shows whether
a move costs more as a staff member's history grows. Rows are COPY'd (bench.scale._copy), then
VACUUM ANALYZE. The PATCH runs in-process through the Flask test client with an API key (the
view, validation, booking rules, history, the customer's email, the commit); the two databases
are timed alternately, one move 15 minutes later and back in turn, and the p50 is reported.
Baseline: the same PATCH against the 10k database, in the same run.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, text

from calsync.bench.feeds import Row, _expect, _paired
from calsync.feeds.accounts.admins import create_api_key
from calsync.feeds.settings import Settings
from calsync.models import Appointment, Company, Customer, Staff, utcnow
from calsync.web import create_app

ALL_DAY = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
STAFF = 20


def _load(db: Any, appointments: int, data_dir: Any, secret: str) -> dict[str, Any]:
    from calsync.bench.scale import _copy, _next_id, _sync_sequence

    db.app = create_app(Settings(data_dir=data_dir, database_url=db.url, secret_key=secret))
    services = db.services
    now = utcnow().replace(second=0, microsecond=0)
    with services.sessions.begin() as session:
        company = Company(name="Curve Salon", timezone="Europe/Berlin", settings={})
        session.add(company)
        session.flush()
        staff_ids = list(session.scalars(insert(Staff).returning(Staff.id, sort_by_parameter_order=True), [
            {"company_id": company.id, "name": f"Staff {i}", "email": f"s{i}@bench.test",
             "timezone": "Europe/Berlin", "working_hours": ALL_DAY, "feed_revision": 1,
             "feed_changed_at": now, "created_at": now} for i in range(STAFF)]))
        customer = session.scalar(insert(Customer).returning(Customer.id), {
            "company_id": company.id, "name": "Customer", "email": "customer@example.com",
            "phone": None, "created_at": now})
        _, key = create_api_key(session, company, "bench")
        company_id = company.id
    first_id = _next_id(services.engine, "appointment")
    start = now - timedelta(days=730)
    span = timedelta(days=1095)
    per_staff = appointments // STAFF
    spacing = span / per_staff
    rng = random.Random(appointments)

    def rows() -> Any:
        i = 0
        for staff_id in staff_ids:
            for k in range(per_staff):
                begin = start + k * spacing
                begin = begin.replace(minute=(begin.minute // 15) * 15)
                status = "cancelled" if rng.random() < 0.05 else "confirmed"
                yield (first_id + i, company_id, staff_id, customer, f"curve-{first_id + i}@bench", 0, 1,
                       status, "Haircut", begin, begin + timedelta(minutes=15), now, now)
                i += 1

    count = _copy(services.engine, "appointment",
                  ["id", "company_id", "staff_id", "customer_id", "uid", "sequence", "revision", "status",
                   "service", "start_at", "end_at", "created_at", "updated_at"], rows())
    _sync_sequence(services.engine, "appointment")
    with services.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    with services.sessions() as session:
        # A confirmed appointment a month ahead: a move 15 minutes later stays clear of the next.
        moved = session.execute(
            select(Appointment.id, Appointment.start_at, Appointment.end_at)
            .where(Appointment.staff_id == staff_ids[0], Appointment.status == "confirmed",
                   Appointment.start_at > now + timedelta(days=30))
            .order_by(Appointment.start_at).limit(1)
        ).one()
    return {"count": count, "per_staff": per_staff, "key": key, "moved": tuple(moved)}


def _mover(db: Any, loaded: dict[str, Any]) -> Any:
    client = db.app.test_client()
    appt_id, start, end = loaded["moved"]
    headers = {"Authorization": f"Bearer {loaded['key']}"}
    state = {"later": False}

    def move() -> float:
        shift = timedelta(0) if state["later"] else timedelta(minutes=15)
        state["later"] = not state["later"]
        body = json.dumps({"start": (start + shift).isoformat(), "end": (end + shift).isoformat()})
        t0 = time.perf_counter()
        response = client.patch(f"/api/v1/appointments/{appt_id}", data=body, headers=headers,
                                content_type="application/json")
        elapsed = time.perf_counter() - t0
        _expect(response.status_code == 200,
                f"PATCH returned {response.status_code}: {response.data[:200]!r}")
        return elapsed

    return move


def run(database_url: str, small: int = 10_000, large: int = 1_000_000, rounds: int = 60,
        data_dir: Any = None, secret: str = "") -> list[Row]:
    """Load both sizes, time the PATCH alternately; returns the rows (the caller prints)."""
    import secrets
    import tempfile
    from pathlib import Path

    from calsync.bench.scale import _schemas

    secret = secret or secrets.token_urlsafe(48)
    with tempfile.TemporaryDirectory(prefix="calsync-bench-curve-") as tmp, \
            _schemas(database_url, ["curve_small", "curve_large"]) as schemas:
        dbs = dict(zip(("small", "large"), schemas, strict=True))
        loaded = {}
        for label, size in (("small", small), ("large", large)):
            t0 = time.perf_counter()
            loaded[label] = _load(dbs[label], size, Path(data_dir or tmp), secret)
            print(f"reschedule curve: {loaded[label]['count']:,} appointments "
                  f"({loaded[label]['per_staff']:,} per staff member) loaded in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        big, little = _paired(rounds, _mover(dbs["large"], loaded["large"]),
                              _mover(dbs["small"], loaded["small"]))
    sizes = f"{loaded['large']['count']:,} vs {loaded['small']['count']:,}"
    per = f"{loaded['large']['per_staff']:,} vs {loaded['small']['per_staff']:,} per staff member"
    return [
        Row(f"reschedule PATCH (PostgreSQL, in-process), p50 at {loaded['large']['count']:,}", big, None,
            "p50 ≤ 15 ms", big <= 0.015),
        Row(f"reschedule PATCH: {sizes} appointments ({per})", big, little, "≤ 1.2", big / little <= 1.2),
    ]
