"""Segments: one staff member's VEVENT fragments in a feed's window, built from cached
fragments, rendering only the appointments that changed (feed.py explains the levels).

Writes of new fragments and segments can be collected in a `Later` list instead of run in the
session: the web view runs them once the response is sent (they are caches keyed by versions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.orm import Session, defaultload, selectinload

from calsync.feeds.publishing.render import FRAGMENT_FORMAT, Variant, render_event
from calsync.feeds.publishing.segment_index import Index, Piece, join
from calsync.models import STATUS_CONFIRMED, Appointment, FeedFragment, Staff

# Writes of rendered fragments and segments that a caller runs after answering (render_feed).
Later = list[Callable[[Session], None]]


def build_segment(
    session: Session, staff_id: int, variant: Variant, window: tuple[datetime, datetime],
    show_cancelled: bool, later: Later | None = None,
    previous: tuple[bytes, Index] | None = None,
) -> tuple[bytes, Index]:
    """One staff member's VEVENTs in the window, rendering only appointments that changed.

    `previous`: the last segment of the same family with its index (segment_index.py); its
    unchanged fragments are reused as slices, and only (id, revision) is read per appointment.
    """
    start, end = window
    # (staff_id, start_at) is indexed: a range scan in the order we want, no sort. An
    # appointment lasts at most a day (booking.MAX_DURATION), so one overlapping the window
    # starts after start - 1 day; that lower bound keeps the scan to the window.
    scope = and_(Appointment.staff_id == staff_id, Appointment.start_at < end,
                 Appointment.start_at > start - timedelta(days=1), Appointment.end_at > start)
    if not show_cancelled:
        scope = and_(scope, Appointment.status == STATUS_CONFIRMED)
    order_by = (Appointment.start_at, Appointment.id)
    pieces: dict[int, Piece] = {}
    keys: dict[int, str] = {}
    stale: dict[int, str] = {}
    if previous is not None:
        view, index = memoryview(previous[0]), previous[1]
        rows: Sequence[Any] = session.execute(
            select(Appointment.id, Appointment.revision).where(scope).order_by(*order_by)).all()
        for appt_id, revision in rows:
            wanted = keys[appt_id] = f"{FRAGMENT_FORMAT}.{revision}"
            hit = index.get(appt_id)
            if hit is not None and hit[0] == wanted:
                pieces[appt_id] = view[hit[1]:hit[2]]
            else:
                stale[appt_id] = wanted
        if stale:  # perhaps rendered by another process already
            for appt_id, key, body in session.execute(
                select(FeedFragment.appointment_id, FeedFragment.revision_key, FeedFragment.body)
                .where(FeedFragment.appointment_id.in_(list(stale)), FeedFragment.variant == variant.key)
            ).all():
                if stale.get(appt_id) == key:
                    pieces[appt_id] = body.encode("utf-8")
                    del stale[appt_id]
    else:
        rows = session.execute(
            select(Appointment.id, Appointment.revision, FeedFragment.revision_key, FeedFragment.body)
            .outerjoin(FeedFragment, and_(FeedFragment.appointment_id == Appointment.id,
                                          FeedFragment.variant == variant.key))
            .where(scope).order_by(*order_by)
        ).all()
        for appt_id, revision, key, body in rows:
            wanted = keys[appt_id] = f"{FRAGMENT_FORMAT}.{revision}"
            if key == wanted:
                pieces[appt_id] = body.encode("utf-8")
            else:
                stale[appt_id] = wanted
    if stale:
        rendered = _render_stale(session, variant, stale, later)
        pieces.update((i, body.encode("utf-8")) for i, body in rendered.items())
    return join([row[0] for row in rows], pieces, keys)


def _render_stale(
    session: Session, variant: Variant, stale: dict[int, str], later: Later | None = None
) -> dict[int, str]:
    rendered: dict[int, str] = {}
    ids = list(stale)
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        # Staff.groups is loaded "selectin" by default: a query a render never needs.
        query = select(Appointment).where(Appointment.id.in_(chunk)).options(
            defaultload(Appointment.staff).lazyload(Staff.groups))
        if len(chunk) > 20:
            # Many at once (a cold render): staff and customers in two queries of their own
            # rather than repeated on every row. A few (the first GET after a change): the
            # mapping's joined loading answers in the one query.
            query = query.options(selectinload(Appointment.staff), selectinload(Appointment.customer))
        appointments = session.scalars(query).unique().all()
        new_rows = []
        for appt in appointments:
            body = render_event(appt, variant)
            rendered[appt.id] = body
            new_rows.append({"appointment_id": appt.id, "variant": variant.key,
                             "revision_key": stale[appt.id], "body": body})
        if new_rows and later is not None:
            later.append(partial(_store_fragments, rows=new_rows))
        elif new_rows:
            _store_fragments(session, new_rows)
    return rendered


def _store_fragments(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace fragments, in appointment order. Feeds that share an appointment (its
    staff member's, a group's, the company's) render it concurrently: a delete-then-insert
    failed on PostgreSQL with a unique violation or a deadlock under load (tests/system/test_load.py).
    Whichever render writes last wins; both bodies carry the revision they were made from."""
    rows = sorted(rows, key=lambda row: row["appointment_id"])
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        session.execute(delete(FeedFragment).where(
            FeedFragment.appointment_id.in_([r["appointment_id"] for r in rows]),
            FeedFragment.variant == rows[0]["variant"]))
        session.execute(insert(FeedFragment), rows)
        return
    from sqlalchemy.dialects import postgresql, sqlite

    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement: Any = make_insert(FeedFragment).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=[FeedFragment.appointment_id, FeedFragment.variant],
        set_={"revision_key": statement.excluded.revision_key, "body": statement.excluded.body},
    ))
