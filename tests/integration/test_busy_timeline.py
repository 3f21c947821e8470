"""Busy timelines (feeds.scheduling.busy_timeline, issue 17): each connection's busy blocks kept
merged in one packed row, rebuilt in the transaction that writes the blocks. What availability
and the booking check read from them must be exactly what the busy_block rows say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text

from calsync.feeds.calendars.busy_blocks import replace_blocks
from calsync.feeds.calendars.connections import delete_connection
from calsync.feeds.scheduling.availability import busy_times, find_availability
from calsync.feeds.scheduling.busy_timeline import pack, staff_spans, unpack
from calsync.feeds.scheduling.working_hours import merge as merge_spans
from calsync.migrations import alembic_config, upgrade_database
from calsync.models import BusyBlock, BusyTimeline, Company, Connection, Staff, make_engine, utcnow
from tests.conftest import Api

T0 = datetime(2030, 1, 7, tzinfo=UTC)  # a Monday
ALL_WEEK = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def _connection(app: Flask, company_id: int, staff_id: int, name: str = "Work") -> int:
    now = utcnow()
    with app.extensions["calsync"].sessions.begin() as s:
        return int(
            s.scalars(
                insert(Connection).returning(Connection.id),
                [
                    {
                        "company_id": company_id,
                        "staff_id": staff_id,
                        "kind": "ics",
                        "name": name,
                        "url_sealed": "-",
                        "url_display": "https://calendar.example.invalid/work.ics",
                        "roles": ["conflict"],
                        "sync_mode": "manual",
                        "interval_minutes": 15,
                        "all_day": "busy",
                        "treat_all_busy": False,
                        "status": "ok",
                        "last_attempt_at": now,
                        "last_success_at": now,
                        "consecutive_failures": 0,
                        "busy_count": 0,
                        "next_sync_at": None,
                        "created_at": now,
                        "updated_at": now,
                        "extra": {},
                    }
                ],
            ).one()
        )


def _write(
    app: Flask,
    connection_id: int,
    blocks: list[tuple[str | None, datetime, datetime]],
    hrefs: set[str] | None = None,
) -> None:
    with app.extensions["calsync"].sessions.begin() as s:
        replace_blocks(s, s.get(Connection, connection_id), blocks, hrefs)


def _from_rows(app: Flask, staff_id: int, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """What the busy_block rows say about [start, end), merged: the truth the timeline keeps."""
    with app.extensions["calsync"].sessions() as s:
        rows = s.execute(
            select(BusyBlock.start_at, BusyBlock.end_at).where(
                BusyBlock.staff_id == staff_id, BusyBlock.start_at < end, BusyBlock.end_at > start
            )
        ).all()
    return [(a, b) for a, b in merge_spans([(a, b) for a, b in rows])]  # type: ignore[misc]


def _calendar_busy(
    app: Flask, staff_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    with app.extensions["calsync"].sessions() as s:
        found = [(b.start, b.end) for b in busy_times(s, staff_id, start, end) if b.kind == "calendar"]
    return merge_spans(found)  # type: ignore[arg-type,return-value]


def _clip(
    spans: list[tuple[datetime, datetime]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    return [(max(a, start), min(b, end)) for a, b in spans if b > start and a < end]


@pytest.fixture
def zoe(api: Api) -> dict[str, Any]:
    return api.make_staff(timezone="UTC", working_hours=ALL_WEEK)


def test_packing_round_trips_and_is_little_endian() -> None:
    spans = [(1, 2), (2**40, 2**40 + 5)]
    data = pack(spans)
    assert data[:8] == (1).to_bytes(8, "little")
    assert list(unpack(data)) == [1, 2, 2**40, 2**40 + 5]


block_strategy = st.lists(
    st.tuples(st.integers(0, 6 * 24 * 60), st.integers(1, 300), st.sampled_from(["a", "b", "c", None])),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=block_strategy,
    second=block_strategy,
    window=st.tuples(st.integers(0, 7 * 24 * 60), st.integers(1, 3 * 24 * 60)),
)
def test_the_timeline_says_what_the_rows_say(
    app: Flask, company_id: int, api: Api, first: list, second: list, window: tuple[int, int]
) -> None:
    """Two connections of one staff member with random, overlapping blocks (an incremental
    replace of some items in between): the busy time read for any range equals the merged rows."""
    staff = api.make_staff(timezone="UTC", working_hours=ALL_WEEK)
    work, home = _connection(app, company_id, staff["id"]), _connection(app, company_id, staff["id"], "Home")

    def blocks(spec: list) -> list[tuple[str | None, datetime, datetime]]:
        return [
            (href, T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + length)) for m, length, href in spec
        ]

    _write(app, work, blocks(first))
    _write(app, home, blocks(second))
    _write(app, work, blocks([b for b in second if b[2] == "a"]), hrefs={"a"})  # a CalDAV item changed
    start = T0 + timedelta(minutes=window[0])
    end = start + timedelta(minutes=window[1])
    # Clipped to the range: a merged span may reach past it (the rows overlapping the range
    # are merged with blocks beyond it), which says the same about the range itself.
    assert _clip(_calendar_busy(app, staff["id"], start, end), start, end) == _clip(
        _from_rows(app, staff["id"], start, end), start, end
    )
    with app.extensions["calsync"].sessions() as s:
        counted = s.scalar(select(Connection.busy_count).where(Connection.id == work))
        rows = s.scalar(
            select(text("count(*)")).select_from(BusyBlock).where(BusyBlock.connection_id == work)
        )
    assert counted == rows


def test_slicing_keeps_spans_that_overlap_the_edges(app: Flask, company_id: int, zoe: dict[str, Any]) -> None:
    cid = _connection(app, company_id, zoe["id"])
    _write(
        app,
        cid,
        [(None, T0, T0 + timedelta(hours=2)), (None, T0 + timedelta(hours=5), T0 + timedelta(hours=6))],
    )
    base = int(T0.timestamp())
    with app.extensions["calsync"].sessions() as s:
        db = s.connection()
        # Touching the end of a span is not overlapping it; one second inside is.
        assert staff_spans(db, zoe["id"], base + 7200, base + 5 * 3600) == []
        assert staff_spans(db, zoe["id"], base + 7199, base + 5 * 3600 + 1) == [
            (base, base + 7200),
            (base + 5 * 3600, base + 6 * 3600),
        ]


def test_availability_and_booking_read_the_timeline(
    app: Flask, api: Api, company_id: int, zoe: dict[str, Any]
) -> None:
    cid = _connection(app, company_id, zoe["id"])
    _write(app, cid, [(None, T0 + timedelta(hours=10), T0 + timedelta(hours=11))])
    with app.extensions["calsync"].sessions() as s:
        found = find_availability(
            s, s.get(Staff, zoe["id"]), T0 + timedelta(hours=9), T0 + timedelta(hours=12), timedelta(hours=1)
        )
    assert found.slots == [
        (T0 + timedelta(hours=9), T0 + timedelta(hours=10)),
        (T0 + timedelta(hours=11), T0 + timedelta(hours=12)),
    ]
    assert [(b.start, b.end, b.kind) for b in found.busy] == [
        (T0 + timedelta(hours=10), T0 + timedelta(hours=11), "calendar")
    ]
    refused = api.book(
        zoe["id"],
        (T0 + timedelta(hours=10, minutes=30)).isoformat(),
        (T0 + timedelta(hours=11, minutes=30)).isoformat(),
    )
    assert refused.status_code == 409
    assert "busy at that time in their own calendar" in refused.get_json()["error"]


def test_removing_a_connection_frees_its_time(
    app: Flask, api: Api, company_id: int, zoe: dict[str, Any]
) -> None:
    cid = _connection(app, company_id, zoe["id"])
    slot = (T0 + timedelta(hours=10), T0 + timedelta(hours=11))
    _write(app, cid, [(None, *slot)])
    with app.extensions["calsync"].sessions.begin() as s:
        delete_connection(s, s.get(Company, company_id), cid)
    with app.extensions["calsync"].sessions() as s:
        assert s.scalars(select(BusyTimeline)).all() == []
    assert api.book(zoe["id"], slot[0].isoformat(), slot[1].isoformat()).status_code == 201


def test_the_migration_builds_timelines_from_stored_blocks(tmp_path: Any) -> None:
    """A database with busy blocks from before 0015: after the upgrade its timelines say what the
    rows say (sub-second edges rounded outwards), so availability is the same as before."""
    engine = make_engine(f"sqlite:///{tmp_path / 'before.sqlite3'}")
    command.upgrade(alembic_config(engine), "0014")
    now = utcnow()
    with engine.begin() as conn:
        company = conn.execute(
            insert(Company).returning(Company.id), [{"name": "Old", "timezone": "UTC", "settings": {}}]
        ).scalar_one()
        staff = conn.execute(
            insert(Staff).returning(Staff.id),
            [
                {
                    "company_id": company,
                    "name": "Ann",
                    "email": "ann@example.com",
                    "timezone": "UTC",
                    "working_hours": ALL_WEEK,
                    "created_at": now,
                }
            ],
        ).scalar_one()
    with engine.begin() as conn:
        cid = conn.execute(
            insert(Connection).returning(Connection.id),
            [
                {
                    "company_id": company,
                    "staff_id": staff,
                    "kind": "ics",
                    "name": "Work",
                    "url_sealed": "-",
                    "url_display": "-",
                    "roles": ["conflict"],
                    "sync_mode": "manual",
                    "interval_minutes": 15,
                    "all_day": "busy",
                    "treat_all_busy": False,
                    "status": "ok",
                    "consecutive_failures": 0,
                    "busy_count": 3,
                    "created_at": now,
                    "updated_at": now,
                    "extra": {},
                }
            ],
        ).scalar_one()
        conn.execute(
            insert(BusyBlock),
            [
                {"connection_id": cid, "staff_id": staff, "item_href": None, "start_at": a, "end_at": b}
                for a, b in [
                    (T0 + timedelta(hours=2), T0 + timedelta(hours=3)),
                    (T0, T0 + timedelta(hours=1, microseconds=500)),
                    (T0 + timedelta(minutes=30), T0 + timedelta(minutes=45)),
                ]
            ],
        )
    upgrade_database(engine)
    with engine.connect() as conn:
        data = conn.execute(select(BusyTimeline.spans).where(BusyTimeline.connection_id == cid)).scalar_one()
    base = int(T0.timestamp())
    assert list(unpack(data)) == [base, base + 3601, base + 7200, base + 10800]
    engine.dispose()
