"""Segments: one staff member's VEVENT fragments in a feed's window, built from cached
fragments, rendering only the appointments that changed (feed.py explains the levels).

A segment is built one of three ways, the cheapest that is exact:
- beside the previous segment of its family in memory, from the appointments changed since the
  revision it shows: every change writes its staff member's new revision into the appointments
  it touches (Appointment.staff_revision), so one statement reads those and the revision now,
  and segment_index.replan puts each where it belongs (the usual first GET after a change);
- beside it, listing (id, revision, start) of every appointment in the window, when the
  changes cannot be told apart (a revision that no appointment carries, more than FEW of them);
- cold, reading the stored fragments with the rows.

Writes of new fragments and segments can be collected in a `Later` list instead of run in the
session: the web view runs them once the response is sent (they are caches keyed by versions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defaultload, selectinload
from sqlalchemy.types import NullType

from calsync.feeds.publishing.prebuilt import Prebuilt, Reads
from calsync.feeds.publishing.render import FRAGMENT_FORMAT, Variant, render_event
from calsync.feeds.publishing.segment_index import Index, Piece, join, replan, reuse
from calsync.models import STATUS_CONFIRMED, Appointment, Customer, FeedFragment, Staff

# Writes of rendered fragments and segments that a caller runs after answering (render_feed).
Later = list[Callable[[Session], None]]
# Up to this many changed appointments are read one Core row each (the first GET after a
# change); more (a cold render) through the ORM in chunks, staff and customers loaded apart.
FEW = 20

# (staff_id, start_at) is indexed: a range scan in the order we want, no sort. An appointment
# lasts at most a day (booking.MAX_DURATION), so one overlapping the window starts after
# start - 1 day ("low"); that lower bound keeps the scan to the window.
_IN_WINDOW = and_(Appointment.staff_id == bindparam("staff_id"), Appointment.start_at < bindparam("end"),
                  Appointment.start_at > bindparam("low"), Appointment.end_at > bindparam("start"))
_ORDER = (Appointment.start_at, Appointment.id)
# The staff member's revision, read by the same statement as their appointments: one statement
# reads one committed state (SQLite and PostgreSQL alike), so the rows are those of that revision.
_STAFF_REVISION = (select(Staff.feed_revision).where(Staff.id == bindparam("staff_id"))
                   .scalar_subquery().label("staff_revision"))


def _where(show_cancelled: bool) -> Any:
    return _IN_WINDOW if show_cancelled else and_(_IN_WINDOW, Appointment.status == STATUS_CONFIRMED)


# The start as the driver hands it over, not converted per row (segment_index.Index.starts):
# values of one dialect compare among themselves in the order of the column.
_RAW_START = type_coerce(Appointment.start_at, NullType())
# A rebuild beside the previous segment: (id, revision, staff revision, start), nothing else.
_REVISIONS = {cancelled: Prebuilt(select(Appointment.id, Appointment.revision, _STAFF_REVISION, _RAW_START)
                                  .where(_where(cancelled)).order_by(*_ORDER))
              for cancelled in (False, True)}
# An appointment's stored fragment of the variant asked for.
FRAGMENT_OF_VARIANT = and_(FeedFragment.appointment_id == Appointment.id,
                            FeedFragment.variant == bindparam("variant"))
# Without one (a cold render, another process's segment): the stored fragments too.
_WITH_FRAGMENTS = {
    cancelled: select(Appointment.id, Appointment.revision, _STAFF_REVISION, _RAW_START,
                      FeedFragment.revision_key, FeedFragment.body)
    .outerjoin(FeedFragment, FRAGMENT_OF_VARIANT)
    .where(_where(cancelled)).order_by(*_ORDER)
    for cancelled in (False, True)
}
_REVISION_ONLY = Prebuilt(select(Staff.feed_revision).where(Staff.id == bindparam("staff_id")))
# One changed appointment with what its VEVENT shows (render.py) and its stored fragment, if
# another process made it already: one query instead of an ORM load of three objects.
_SHOWN = (Appointment.uid, Appointment.sequence, Appointment.status, Appointment.service,
          Appointment.location, Appointment.notes, Appointment.start_at, Appointment.end_at,
          Appointment.created_at, Appointment.updated_at)
# What _shown and _fragment read of a row, in this order; _CHANGED's own columns follow.
_RENDERED = (Appointment.revision, FeedFragment.revision_key, FeedFragment.body, Staff.name, Staff.timezone,
             Customer.name, Customer.email, Customer.phone, *_SHOWN)
_ONE = Prebuilt(
    select(*_RENDERED)
    .join(Staff, Staff.id == Appointment.staff_id)
    .join(Customer, Customer.id == Appointment.customer_id)
    .outerjoin(FeedFragment, FRAGMENT_OF_VARIANT)
    .where(Appointment.id == bindparam("id"))
)
_SHOWN_NAMES = tuple(c.key for c in _SHOWN)
# The appointments changed since revision `since` of their staff member (Appointment.staff_revision),
# each with what _ONE reads, and in the same statement the staff member's revision now: one
# statement reads one committed state, so the rows are exactly the changes up to that revision.
# A staff member with none still gives one row (the outer join), its appointment columns NULL.
CHANGED_COLUMNS = (*_RENDERED, Staff.feed_revision, Appointment.id, Appointment.staff_revision, _RAW_START)
_CHANGED = Prebuilt(
    select(*CHANGED_COLUMNS)
    .select_from(Staff)
    .outerjoin(Appointment, and_(Appointment.staff_id == Staff.id,
                                 Appointment.staff_revision > bindparam("since")))
    .outerjoin(Customer, Customer.id == Appointment.customer_id)
    .outerjoin(FeedFragment, FRAGMENT_OF_VARIANT)
    .where(Staff.id == bindparam("staff_id"))
    .limit(FEW + 1)
)
_AFTER_SHOWN = len(_RENDERED)
# _CHANGED's own columns: the staff member's revision now, the appointment's id, the revision
# that last changed it, its start as the driver returns it.
_NOW, _ID, _CHANGED_AT, _RAW = range(_AFTER_SHOWN, _AFTER_SHOWN + 4)
_START, _END, _STATUS = (8 + _SHOWN_NAMES.index(name) for name in ("start_at", "end_at", "status"))


@dataclass(frozen=True)
class Changes:
    """One staff member's appointments changed since revision `since` (_CHANGED's rows, at most
    FEW + 1), read by the statement that read their revision `now` (scope_changes.py)."""

    since: int
    now: int
    rows: list[tuple[Any, ...]]


def fragment_key(revision: int) -> str:
    return f"{FRAGMENT_FORMAT}.{revision}"


def build_segment(
    reads: Reads, staff_id: int, revision: int, variant: Variant, window: tuple[datetime, datetime],
    show_cancelled: bool, later: Later | None = None, previous: tuple[bytes, Index] | None = None,
    known: Changes | None = None,
) -> tuple[bytes, Index | None]:
    """One staff member's VEVENTs in the window, rendering only appointments that changed, and
    the segment's index if they are exactly those of the staff member's `revision` (else None).

    `previous`: the last segment of the same family with its index (segment_index.py); its
    unchanged fragments are reused as slices, and only (id, revision) is read per appointment.
    Each query reads what is committed when it runs, so a booking committed since `revision`
    was read may be in the segment: such bytes are served but never kept (render_feed).
    `known`: the changes since a kept segment, read with the staff rows (scope_changes.py).
    """
    start, end = window
    params = {"staff_id": staff_id, "end": end, "low": start - timedelta(days=1), "start": start}
    if previous is None:
        return _build_cold(reads, staff_id, revision, variant, show_cancelled, later, params)
    old_bytes, old = previous
    changes = _changes_since(reads, staff_id, revision, variant, window, show_cancelled, old, known)
    if changes is not None:
        # The changed appointments, read with the revision: exact by construction.
        (ids, revisions, starts), changed_rows = changes
        exact = True
    else:
        rows = _REVISIONS[show_cancelled].all(reads, **params)
        exact = _revision_seen(reads, rows, staff_id) == revision
        ids, revisions = tuple(map(itemgetter(0), rows)), tuple(map(itemgetter(1), rows))
        starts, changed_rows = tuple(map(itemgetter(3), rows)), None
    if ids == old.ids and revisions == old.revisions:
        # Nothing in the window changed (the revision moved for an appointment outside it):
        # the previous bytes, not a copy of them.
        return old_bytes, (old.at_revision(revision) if exact else None)
    parts, stale_at, sizes = reuse(ids, revisions, old, memoryview(old_bytes))
    rendered: dict[int, bytes] = {}
    if stale_at and changed_rows is not None:
        new_rows: list[dict[str, Any]] = []
        rendered = {ids[i]: _fragment(changed_rows[ids[i]], ids[i], variant, new_rows) for i in stale_at}
        _keep_fragments(reads, new_rows, later)
    elif stale_at:
        stale = {ids[i]: revisions[i] for i in stale_at}
        rendered, fresh = _render_stale(reads, variant, stale, later, look_up=True)
        exact = exact and fresh
    segment = b"".join([rendered.get(p, b"") if isinstance(p, int) else p for p in parts])
    if not exact:
        return segment, None
    for i in stale_at:  # exact: each was rendered from the revision listed
        sizes[i] = len(rendered[ids[i]])
    return segment, Index.of(ids, revisions, sizes, starts, revision)


def _changes_since(
    reads: Reads, staff_id: int, revision: int, variant: Variant, window: tuple[datetime, datetime],
    show_cancelled: bool, old: Index, known: Changes | None = None,
) -> tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[Any, ...]], dict[int, Any]] | None:
    """The next segment's appointments planned beside `old` from the appointments changed since
    the revision it shows (one statement, _CHANGED), with those rows by id; None when that
    cannot be told exactly, and the caller lists the window instead:

    - the staff member's revision is no longer `revision` (a change committed since it was read);
    - some revision between old and new has no appointment that carries it: a change that
      wrote none (a staff member's edit, rows loaded in bulk) or an appointment changed again
      since (its earlier change is hidden), so what changed is not known for certain;
    - more than FEW appointments changed (a rename: listing the window costs less).

    `known` is used when it was read beside this very segment (its `since` is the revision the
    segment shows); otherwise _CHANGED reads the changes now.
    """
    since = old.staff_revision
    if since is None or old.starts is None or since >= revision:
        return None
    if known is not None and known.since == since:
        if known.now != revision:
            return None
        rows = known.rows
    else:
        rows = _CHANGED.all(reads, staff_id=staff_id, since=since, variant=variant.key)
        if not rows or rows[0][_NOW] != revision:
            return None
        rows = [row for row in rows if row[_ID] is not None]
    if len(rows) > FEW or {row[_CHANGED_AT] for row in rows} != set(range(since + 1, revision + 1)):
        return None
    start, end = window
    low = start - timedelta(days=1)
    changed: dict[int, tuple[int, Any] | None] = {}
    by_id: dict[int, Any] = {}
    for row in rows:
        appt_id = row[_ID]
        by_id[appt_id] = row
        # _IN_WINDOW and _where's status, on the row's own values.
        shown = (low < row[_START] < end and row[_END] > start
                 and (show_cancelled or row[_STATUS] == STATUS_CONFIRMED))
        changed[appt_id] = (row[0], row[_RAW]) if shown else None
    return replan(old, changed), by_id


def _fragment(row: tuple[Any, ...], appt_id: int, variant: Variant, new_rows: list[dict[str, Any]]) -> bytes:
    """One appointment's fragment from its _ONE (or _CHANGED) row: the stored one if it is of
    the row's revision (another process rendered it), else rendered, and its row for the table
    added to `new_rows`."""
    key = fragment_key(row[0])
    if row[1] == key:
        return row[2].encode("utf-8")  # type: ignore[no-any-return]
    body = render_event(_shown(row), variant)
    new_rows.append({"appointment_id": appt_id, "variant": variant.key, "revision_key": key, "body": body})
    return body.encode("utf-8")


def _build_cold(reads: Reads, staff_id: int, revision: int, variant: Variant, show_cancelled: bool,
                later: Later | None, params: dict[str, Any]) -> tuple[bytes, Index | None]:
    """A segment without a previous one in memory: the stored fragments are read with the rows."""
    rows = reads.session.execute(_WITH_FRAGMENTS[show_cancelled], dict(params, variant=variant.key)).all()
    pieces: list[Piece | None] = []
    stale: dict[int, int] = {}
    for appt_id, appt_revision, _, _, key, body in rows:
        if key == fragment_key(appt_revision):
            pieces.append(body.encode("utf-8"))
        else:
            pieces.append(None)
            stale[appt_id] = appt_revision
    exact = _revision_seen(reads, rows, staff_id) == revision
    if stale:
        rendered, fresh = _render_stale(reads, variant, stale, later, look_up=False)
        exact = exact and fresh
        pieces = [rendered.get(row[0]) if piece is None else piece
                  for row, piece in zip(rows, pieces, strict=True)]
    kept = [row for row, piece in zip(rows, pieces, strict=True) if piece is not None]
    segment, index = join([(row[0], row[1]) for row in kept], [p for p in pieces if p is not None],
                          tuple(row[3] for row in kept), revision)
    return segment, (index if exact else None)


def _revision_seen(reads: Reads, rows: Sequence[Any], staff_id: int) -> int | None:
    """The staff member's revision as the statement that read `rows` saw it."""
    if rows:
        return rows[0][2]  # type: ignore[no-any-return]
    found = _REVISION_ONLY.first(reads, staff_id=staff_id)
    return found[0] if found else None


def _shown(row: tuple[Any, ...]) -> Any:
    """What render_event reads of an appointment (with its staff member and customer), from
    _ONE's row; the values are those the ORM would load (the columns' own result types)."""
    staff = SimpleNamespace(name=row[3], timezone=row[4])
    customer = SimpleNamespace(name=row[5], email=row[6], phone=row[7])
    shown = dict(zip(_SHOWN_NAMES, row[8:_AFTER_SHOWN], strict=True))
    return SimpleNamespace(staff=staff, customer=customer, **shown)


def _render_stale(reads: Reads, variant: Variant, stale: dict[int, int], later: Later | None,
                  look_up: bool) -> tuple[dict[int, bytes], bool]:
    """The fragments of the appointments in `stale` (id -> the revision the segment lists), and
    whether each was made from that revision; a vanished appointment has none.

    `look_up`: whether to look for fragments another process stored (the caller did not)."""
    out: dict[int, bytes] = {}
    fresh = True
    new_rows: list[dict[str, Any]] = []
    if len(stale) <= FEW:
        for appt_id, wanted in stale.items():
            row = _ONE.first(reads, id=appt_id, variant=variant.key)
            if row is None:
                fresh = False
                continue
            fresh = fresh and row[0] == wanted
            out[appt_id] = _fragment(row, appt_id, variant, new_rows)
    else:
        session = reads.session
        ids = list(stale)
        if look_up:  # perhaps rendered by another process already
            for chunk_start in range(0, len(ids), 500):
                for appt_id, key, body in session.execute(
                    select(FeedFragment.appointment_id, FeedFragment.revision_key, FeedFragment.body)
                    .where(FeedFragment.appointment_id.in_(ids[chunk_start:chunk_start + 500]),
                           FeedFragment.variant == variant.key)
                ).all():
                    if key == fragment_key(stale[appt_id]):
                        out[appt_id] = body.encode("utf-8")
            ids = [i for i in ids if i not in out]
        for chunk_start in range(0, len(ids), 500):
            # Staff and customers in two queries of their own rather than repeated on every row;
            # Staff.groups is loaded "selectin" by default: a query a render never needs.
            query = select(Appointment).where(Appointment.id.in_(ids[chunk_start:chunk_start + 500])).options(
                defaultload(Appointment.staff).lazyload(Staff.groups),
                selectinload(Appointment.staff), selectinload(Appointment.customer))
            for appt in session.scalars(query).unique().all():
                fresh = fresh and appt.revision == stale[appt.id]
                body = render_event(appt, variant)
                out[appt.id] = body.encode("utf-8")
                new_rows.append({"appointment_id": appt.id, "variant": variant.key,
                                 "revision_key": fragment_key(appt.revision), "body": body})
        fresh = fresh and len(out) == len(stale)
    _keep_fragments(reads, new_rows, later)
    return out, fresh


def _keep_fragments(reads: Reads, new_rows: list[dict[str, Any]], later: Later | None) -> None:
    if new_rows and later is not None:
        later.append(partial(_store_fragments, rows=new_rows))
    elif new_rows:
        _store_fragments(reads.session, new_rows)


_FRAGMENT_TABLE: Any = FeedFragment.__table__


def _upsert(make_insert: Any) -> Any:
    statement = make_insert(_FRAGMENT_TABLE)
    return statement.on_conflict_do_update(
        index_elements=[_FRAGMENT_TABLE.c.appointment_id, _FRAGMENT_TABLE.c.variant],
        set_={"revision_key": statement.excluded.revision_key, "body": statement.excluded.body},
    )


# Built once: statement building cost more than the write (it runs after the response).
_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}


def _store_fragments(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace fragments, in appointment order. Feeds that share an appointment (its
    staff member's, a group's, the company's) render it concurrently: a delete-then-insert
    failed on PostgreSQL with a unique violation or a deadlock under load (tests/system/test_load.py).
    Whichever render writes last wins; both bodies carry the revision they were made from."""
    rows = sorted(rows, key=lambda row: row["appointment_id"])
    upsert = _UPSERT.get(session.get_bind().dialect.name)
    if upsert is None:
        session.execute(delete(FeedFragment).where(
            FeedFragment.appointment_id.in_([r["appointment_id"] for r in rows]),
            FeedFragment.variant == rows[0]["variant"]))
        session.execute(insert(FeedFragment), rows)
        return
    session.execute(upsert, rows)
