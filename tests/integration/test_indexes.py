"""Indexes that keep feed, availability, booking and sync queries bound to their scope (issue 6).

On every database: the migrated schema has the indexes the queries rely on. On PostgreSQL: with
realistic statistics (a staff member with years of history, thousands of feed tokens), the
queries that a feed request and an availability request really run read only the rows of their
scope — EXPLAIN ANALYZE counts the rows each scan looked at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, inspect, text

from calsync.feeds.accounts.keys import hash_token
from calsync.feeds.publishing import token_rows
from calsync.models import utcnow
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY

# (table, columns) → why; each must exist, with its columns in this order.
EXPECTED = {
    ("appointment", ("staff_id", "start_at")): "feed segments: a staff member's window",
    ("appointment", ("staff_id", "end_at")): "availability and booking: upcoming appointments",
    ("busy_block", ("staff_id", "start_at")): "availability: busy time in a range",
    ("busy_block", ("connection_id",)): "sync: replacing a connection's busy blocks",
    ("connection", ("next_sync_at",)): "scheduler: due connections in order",
    ("connection", ("staff_id",)): "booking: a staff member's connections (pending check)",
    ("customer", ("company_id", "name")): "booking: reusing a matching customer",
    ("feed_token", ("token_hash",)): "feed request: the token",
    ("feed_token", ("scope", "scope_id")): "deleting a staff member or group",
    ("feed_segment", ("family",)): "feed render: dropping older segments",
    ("staff", ("company_id",)): "company feeds: the staff in scope",
    ("sync_conflict", ("connection_id",)): "deleting a connection",
}

HISTORY_DAYS = 1000  # one appointment a day, going back almost three years
UPCOMING = 30  # one a day from tomorrow
STAFF = 40


def _indexes(engine: Engine) -> set[tuple[str, tuple[str, ...]]]:
    found = set()
    inspector = inspect(engine)
    for table in inspector.get_table_names():
        for index in inspector.get_indexes(table):
            found.add((table, tuple(str(c) for c in index["column_names"])))
        for unique in inspector.get_unique_constraints(table):
            found.add((table, tuple(unique["column_names"])))
    return found


def test_the_schema_has_the_indexes_the_queries_need(app: Flask) -> None:
    present = _indexes(app.extensions["calsync"].engine)
    missing = {key: why for key, why in EXPECTED.items() if key not in present}
    assert missing == {}


# --- PostgreSQL plans ---------------------------------------------------------------------------


@pytest.fixture
def history(postgres: Engine, api: Api) -> dict[str, Any]:
    """STAFF staff members with HISTORY_DAYS past and UPCOMING future appointments each, 20,000
    other feed tokens, then ANALYZE: the statistics of a database that has been in use."""
    staff = [
        api.make_staff(name=f"Staff {i}", email=f"s{i}@example.com", working_hours=ALL_DAY)
        for i in range(STAFF)
    ]
    token = api.feed_url("staff", staff[0]["id"]).removeprefix("/feeds/").removesuffix(".ics")
    with postgres.begin() as conn:
        company_id = conn.scalar(text("SELECT company_id FROM staff WHERE id = :id"), {"id": staff[0]["id"]})
        customer = conn.scalar(
            text(
                "INSERT INTO customer (company_id, name, created_at) VALUES (:c, 'Ana', now()) RETURNING id"
            ),
            {"c": company_id},
        )
        conn.execute(
            text("""
            INSERT INTO appointment (company_id, staff_id, customer_id, uid, sequence, revision, status,
                                     service, start_at, end_at, created_at, updated_at)
            SELECT :c, s.id, :customer, 'h-' || s.id || '-' || g, 0, 1, 'confirmed', 'Cut',
                   date_trunc('day', now()) + (g || ' days')::interval + interval '10 hours',
                   date_trunc('day', now()) + (g || ' days')::interval + interval '11 hours', now(), now()
            FROM staff s, generate_series(-CAST(:history AS integer), CAST(:upcoming AS integer)) g
            WHERE s.company_id = :c AND g <> 0
        """),
            {"c": company_id, "customer": customer, "history": HISTORY_DAYS, "upcoming": UPCOMING},
        )
        conn.execute(
            text("""
            INSERT INTO feed_token (company_id, scope, scope_id, name, privacy, token_hash,
                                    token_encrypted, created_at)
            SELECT :c, 'staff', -g, 'other', 'full', md5(g::text) || md5((g + 1)::text), '-', now()
            FROM generate_series(1, 20000) g
        """),
            {"c": company_id},
        )
    with postgres.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return {"staff_id": staff[0]["id"], "token": token}


@pytest.fixture
def statements(postgres: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the app sends while the test runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not many:
            seen.append((statement, parameters))

    event.listen(postgres, "before_cursor_execute", record)
    yield seen
    event.remove(postgres, "before_cursor_execute", record)


def _plan(engine: Engine, sql: str, parameters: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, parameters)
            found = cur.fetchone()[0]
        raw.rollback()
    plan = found if isinstance(found, list) else json.loads(found)
    return plan[0]["Plan"]  # type: ignore[no-any-return]


def _scans(node: dict[str, Any], table: str) -> list[dict[str, Any]]:
    """The plan nodes that read `table`, with how many rows each looked at."""
    found = []
    if node.get("Relation Name") == table:
        looked = (
            node.get("Actual Rows", 0)
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        found.append({"type": node["Node Type"], "index": node.get("Index Name"), "rows": looked})
    for child in node.get("Plans", []):
        found.extend(_scans(child, table))
    return found


def _appointment_scans(
    engine: Engine, statements: list[tuple[str, Any]], marker: str
) -> list[dict[str, Any]]:
    matching = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().startswith("SELECT") and marker in sql and "FROM appointment" in sql
    ]
    assert matching, f"no query with {marker!r} was run"
    return [scan for sql, params in matching for scan in _scans(_plan(engine, sql, params), "appointment")]


def test_a_feed_reads_its_token_and_its_window_only(
    postgres: Engine, api: Api, history: dict[str, Any], statements: list[tuple[str, Any]]
) -> None:
    # The version query runs on the DBAPI cursor (no statement events): explain it as compiled.
    with postgres.connect() as conn:
        lookup = token_rows.FeedLookup(conn.dialect)
    version = _plan(postgres, lookup.sql, dict(lookup.base, digest=hash_token(history["token"])))
    tokens = _scans(version, "feed_token")
    assert [(s["index"], s["rows"]) for s in tokens] == [("uq_feed_token_token_hash", 1)]

    resp = api.client.get(f"/feeds/{history['token']}.ics")
    assert resp.status_code == 200 and resp.data.count(b"BEGIN:VEVENT") > UPCOMING
    scans = _appointment_scans(postgres, statements, "feed_fragment")
    in_window = resp.data.count(b"BEGIN:VEVENT")
    # The feed window (60 days back, a year ahead) out of almost three years of history.
    assert scans and all(s["type"] != "Seq Scan" and s["rows"] <= in_window + 2 for s in scans), scans


def test_availability_reads_upcoming_appointments_not_the_history(
    postgres: Engine, api: Api, history: dict[str, Any], statements: list[tuple[str, Any]]
) -> None:
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    resp = api.get(
        f"/staff/{history['staff_id']}/availability",
        query_string={"start": start.isoformat(), "end": (start + timedelta(days=UPCOMING)).isoformat()},
    )
    assert resp.status_code == 200, resp.get_json()
    scans = _appointment_scans(postgres, statements, "appointment.end_at >")
    # The next 30 days' appointments, not the thousand before them (ix_appointment_staff_end).
    assert scans and all(s["type"] != "Seq Scan" and s["rows"] <= UPCOMING + 2 for s in scans), scans


def test_a_reschedule_reads_the_appointments_around_the_slot_only(
    postgres: Engine, api: Api, history: dict[str, Any], statements: list[tuple[str, Any]]
) -> None:
    """Issue 17: the overlap check read every later appointment of the staff member (end_at
    alone bounded the scan), so a move cost more the more bookings lay ahead."""
    with postgres.connect() as conn:
        moved, start = conn.execute(
            text("SELECT id, start_at FROM appointment WHERE staff_id = :s AND start_at > now() "
                 "ORDER BY start_at LIMIT 1"), {"s": history["staff_id"]}
        ).one()
    later = start + timedelta(hours=1)
    resp = api.patch(f"/appointments/{moved}", json={
        "start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()})
    assert resp.status_code == 200, resp.get_json()
    scans = _appointment_scans(postgres, statements, "appointment.id !=")
    # The appointments overlapping the day before the slot: one or two, not the UPCOMING ahead.
    assert scans and all(s["type"] != "Seq Scan" and s["rows"] <= 3 for s in scans), scans
