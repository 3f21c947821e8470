"""The staff of a feed's scope and, in the same statement, the appointments each of them changed
since the segment this process keeps of them (PostgreSQL).

The first GET after a change read the scope's staff rows (their revisions say which segments
are stale), then, per stale segment, the appointments changed since it (segments._CHANGED): two
round trips one after the other, each about a quarter of a millisecond over loopback, beside a
warm GET of ~2.5 ms (issue 17, docs/scale.md, seventh round). The revision each kept segment
shows is known before asking (its index, segment_index.Index.staff_revision), so both are
asked at once: the scope's staff, each joined LATERAL to up to FEW + 1 appointments whose
staff_revision is above that of its kept segment (the index on (staff_id, staff_revision)).
One statement reads one committed state, so each staff member's changes are exactly those up
to the revision read beside them, as with _CHANGED.

Which staff to ask about comes from the scope's last render in this process (FeedCache.staff_of).
A staff member new to the scope, or without a kept segment, gets no changes here and is built
as before (segments.build_segment). SQLite keeps the two statements: its reads are calls inside
the process, microseconds each, and it has no LATERAL.

When the token's row is stale too (a change was heard), the lookup reads it with this statement
(ahead, version._row_with): the token's row joined to the staff of the scope it names. One
statement where the pipeline of two took 0.2-0.4 ms more (docs/scale.md, ninth round), and the
token's version and the staff's revisions then come from one snapshot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, bindparam, column, func, select, true
from sqlalchemy import join as sa_join
from sqlalchemy.dialects.postgresql import ARRAY

from calsync.feeds.publishing.prebuilt import Prebuilt, Prefetch, Reads
from calsync.feeds.publishing.segments import CHANGED_COLUMNS, FEW, FRAGMENT_OF_VARIANT, Changes
from calsync.feeds.publishing.token_rows import (
    SCOPE_STAFF,
    TOKEN_SHOWN,
    scope_staff_filter,
    token_scope_filter,
)
from calsync.models import Appointment, Company, Customer, FeedFragment, FeedToken, Staff

# (staff id, the revision its kept segment shows), as two arrays: one statement text whatever
# their length, so psycopg prepares it once per connection.
_KEPT = (func.unnest(bindparam("ids", type_=ARRAY(Integer)), bindparam("sinces", type_=ARRAY(Integer)))
         .table_valued(column("staff_id", Integer), column("since", Integer))
         .render_derived(name="kept"))
# _CHANGED's columns for one staff member of the outer query: NULL `since` (not kept) matches none.
_CHANGED_OF_STAFF = (
    select(*CHANGED_COLUMNS)
    .select_from(Appointment)
    .join(Customer, Customer.id == Appointment.customer_id)
    .outerjoin(FeedFragment, FRAGMENT_OF_VARIANT)
    # The first condition names the outer row alone: PostgreSQL tests it once per staff member
    # and skips the index probe of one whose revision did not move (most of a company's staff).
    .where(Staff.feed_revision > _KEPT.c.since,
           Appointment.staff_id == Staff.id, Appointment.staff_revision > _KEPT.c.since)
    .limit(FEW + 1)
    .lateral("changed")
)
# A staff row as a render reads it (feed._STAFF_ROWS reads the same): the segment key's id
# and revision, the header's time zone and name.
STAFF_SHOWN = (Staff.id, Staff.feed_revision, Staff.timezone, Staff.name)
STAFF_COLUMNS = len(STAFF_SHOWN)


def _with_changes(columns: tuple[Any, ...], staff: Any) -> Any:
    """`columns`, then each staff row of `staff` (a FROM with the Staff table in it) joined to
    its changes since its kept segment, in staff id order."""
    changed = (sa_join(staff, _KEPT, _KEPT.c.staff_id == Staff.id, isouter=True)
               .outerjoin(_CHANGED_OF_STAFF, true()))
    return select(*columns, *STAFF_SHOWN, *_CHANGED_OF_STAFF.c).select_from(changed).order_by(Staff.id)


_STAFF_AND_CHANGES = {
    scope: Prebuilt(_with_changes((), Staff)
                    .where(scope_staff_filter(scope, bindparam("scope_id"), bindparam("company_id"))))
    for scope in ("staff", "group", "company")
}
# The same columns after the token's row (token_rows.TOKEN_SHOWN and SCOPE_STAFF), for the staff
# of the scope that row names: what a lookup that must read the row again sends instead of it
# (version.lookup_feed's `ahead`), one statement where the token's row and this one were two.
_TOKEN_AND_CHANGES = {
    scope: Prebuilt(
        _with_changes((*TOKEN_SHOWN, *SCOPE_STAFF),
                      sa_join(FeedToken, Company, Company.id == FeedToken.company_id)
                      .outerjoin(Staff, token_scope_filter(scope)))
        .where(FeedToken.token_hash == bindparam("digest"))
    )
    for scope in ("staff", "group", "company")
}
_ID = STAFF_COLUMNS + CHANGED_COLUMNS.index(Appointment.id)


def staff_and_changes(
    reads: Reads, scope: str, scope_id: int, company_id: int, variant_key: str, kept: dict[int, int],
) -> tuple[list[tuple[Any, ...]], dict[int, Changes]]:
    """The scope's staff rows (id, revision, timezone, name) in id order, and for each staff
    member in `kept` (id -> the revision of their kept segment) the appointments changed since,
    as _CHANGED's rows, with that revision."""
    rows = _STAFF_AND_CHANGES[scope].all(reads, **_params(scope_id, company_id, variant_key, kept))
    return split(rows, kept)


def ahead(scope: str, scope_id: int, company_id: int, variant_key: str, kept: dict[int, int],
          key: Any) -> Prefetch:
    """The same question, with the token's row, for a token of `scope` (version.lookup_feed):
    its rows, once the lookup took the token's part, go through `split` as staff_and_changes'."""
    return Prefetch(_TOKEN_AND_CHANGES[scope], _params(scope_id, company_id, variant_key, kept), key, scope)


def _params(scope_id: int, company_id: int, variant_key: str, kept: dict[int, int]) -> dict[str, Any]:
    return {"scope_id": scope_id, "company_id": company_id, "variant": variant_key,
            "ids": list(kept), "sinces": list(kept.values())}


def split(rows: list[tuple[Any, ...]], kept: dict[int, int],
          ) -> tuple[list[tuple[Any, ...]], dict[int, Changes]]:
    """The statement's rows as staff_and_changes returns them."""
    staff_rows: list[tuple[Any, ...]] = []
    changes: dict[int, Changes] = {}
    for row in rows:
        staff_id = row[0]
        if not staff_rows or staff_rows[-1][0] != staff_id:
            staff_rows.append(row[:STAFF_COLUMNS])
            if staff_id in kept:
                changes[staff_id] = Changes(kept[staff_id], row[1], [])
        if row[_ID] is not None:
            changes[staff_id].rows.append(row[STAFF_COLUMNS:])
    return staff_rows, changes
