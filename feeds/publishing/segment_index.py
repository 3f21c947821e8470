"""Where each appointment's VEVENT lies inside a cached segment (a staff member's fragments).

After one appointment changes, its staff member's segment is rebuilt. With the index of the
previous segment in memory, the rebuild reads only (id, revision) of the staff member's
appointments and reuses every unchanged fragment as a slice of the previous segment's bytes:
no fragment bodies are read from the database or encoded again, and one fragment is rendered.
Without it (another process made the segment, or the memory was cleared), the segment is built
from the feed_fragment table as before, and its index kept for the next change.

Indexes are per process, like the memory cache, bounded by count; each names the segment key it
describes, so an index is used only together with the very bytes it was made from.

An index is three flat sequences in segment order rather than a dict of (revision, start, end)
per appointment: the rebuild makes the next one with C-level operations (zip, accumulate) while
it answers, where making ~500 tuples and dict entries cost ~0.3 ms of every first GET after a
change (issue 17, docs/scale.md).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from itertools import accumulate, compress
from operator import ne, sub
from typing import Any

Piece = bytes | memoryview


class Index:
    """The fragments of one segment: appointment ids and revisions in segment order, and where
    each fragment ends in the segment's bytes (it starts where the one before ends). The
    fragment format is part of the segment's family, so the revision alone says which fragment
    a slice is.

    `starts`: each appointment's start as the database driver returns it (segments.py reads it
    untyped: no conversion per row), the segment's order with the ids; `staff_revision`: the
    staff member's feed revision the segment shows. With both, the next rebuild reads only the
    appointments changed since that revision and places them by start (replan)."""

    __slots__ = ("ids", "revisions", "ends", "starts", "staff_revision", "_position")

    def __init__(self, ids: tuple[int, ...], revisions: tuple[int, ...], ends: list[int],
                 starts: tuple[Any, ...] | None = None, staff_revision: int | None = None) -> None:
        self.ids, self.revisions, self.ends = ids, revisions, ends
        self.starts, self.staff_revision = starts, staff_revision
        self._position: dict[int, int] | None = None

    @classmethod
    def of(cls, ids: tuple[int, ...], revisions: tuple[int, ...], sizes: list[int],
           starts: tuple[Any, ...] | None = None, staff_revision: int | None = None) -> Index:
        return cls(ids, revisions, list(accumulate(sizes)), starts, staff_revision)

    def at_revision(self, staff_revision: int) -> Index:
        """The same segment, known to show the staff member's `staff_revision` as well."""
        return Index(self.ids, self.revisions, self.ends, self.starts, staff_revision)

    def sizes(self) -> list[int]:
        ends = self.ends
        return list(map(sub, ends, [0, *ends[:-1]]))

    def span(self, i: int) -> tuple[int, int]:
        return (self.ends[i - 1] if i else 0), self.ends[i]

    def position(self) -> dict[int, int]:
        """Appointment id -> its place; made when a rebuild first needs it (the order changed).
        Two threads may make it at once: both make the same dict."""
        found = self._position
        if found is None:
            found = self._position = dict(zip(self.ids, range(len(self.ids)), strict=True))
        return found


class SegmentIndexes:
    def __init__(self, max_families: int = 20_000) -> None:
        self.max_families = max_families
        self._items: OrderedDict[str, tuple[str, Index]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, family: str) -> tuple[str, Index] | None:
        with self._lock:
            found = self._items.get(family)
            if found is not None:
                self._items.move_to_end(family)
            return found

    def put(self, family: str, segment_key: str, index: Index) -> None:
        with self._lock:
            self._items[family] = (segment_key, index)
            self._items.move_to_end(family)
            while len(self._items) > self.max_families:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def reuse(ids: tuple[int, ...], revisions: tuple[int, ...], previous: Index, view: memoryview,
          ) -> tuple[list[Piece | int], list[int], list[int]]:
    """The next segment of a family, planned beside the previous one (`view`: its bytes) for
    the appointments `ids` at `revisions`, in segment order: its parts (slices of the previous
    bytes, neighbouring fragments as one slice, and in the place of each appointment to render
    its id), the places of those appointments, and every fragment's size (0 for those, until
    they are rendered)."""
    if ids == previous.ids:
        # The same appointments in the same order (a move that kept its place, an edit, the
        # usual change): only revisions differ, found without a Python loop over the segment.
        stale_at = list(compress(range(len(ids)), map(ne, revisions, previous.revisions)))
        sizes = previous.sizes()
        parts: list[Piece | int] = []
        offset = 0
        for i in stale_at:
            first, last = previous.span(i)
            if first > offset:
                parts.append(view[offset:first])
            parts.append(ids[i])
            sizes[i] = 0
            offset = last
        if offset < len(view):
            parts.append(view[offset:])
        return parts, stale_at, sizes
    # Appointments came, went or changed places: each is looked up in the previous segment.
    position, old_revisions, ends = previous.position(), previous.revisions, previous.ends
    parts, stale_at, sizes = [], [], []
    run_start = run_end = -1
    for i, (appt_id, revision) in enumerate(zip(ids, revisions, strict=True)):
        j = position.get(appt_id)
        if j is not None and old_revisions[j] == revision:
            first, last = (ends[j - 1] if j else 0), ends[j]
            sizes.append(last - first)
            if first != run_end:
                if run_end > run_start:
                    parts.append(view[run_start:run_end])
                run_start = first
            run_end = last
        else:
            if run_end > run_start:
                parts.append(view[run_start:run_end])
            run_start = run_end = -1
            parts.append(appt_id)
            stale_at.append(i)
            sizes.append(0)
    if run_end > run_start:
        parts.append(view[run_start:run_end])
    return parts, stale_at, sizes


def replan(previous: Index, changed: dict[int, tuple[int, Any] | None],
           ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
    """The appointments of the next segment (ids, revisions, starts in segment order), given
    those changed since `previous` was made: id -> (revision, start) if it is in the window
    now, None if not. Each changed one leaves its old place and goes where (start, id) sorts it,
    the order of the segment's query; every other keeps its place (it did not change).

    Lists are edited in place (C-level moves), so a move costs no Python loop over the segment;
    a move that keeps the appointment's place gives the previous ids back, and reuse() then
    takes its fast path."""
    assert previous.starts is not None
    ids, revisions, starts = list(previous.ids), list(previous.revisions), list(previous.starts)
    for appt_id in changed:
        try:
            at = ids.index(appt_id)
        except ValueError:
            continue  # new to the window (or to the staff member)
        del ids[at], revisions[at], starts[at]
    for appt_id, now in changed.items():
        if now is None:
            continue
        revision, start = now
        at = bisect_left(starts, start)
        while at < len(starts) and starts[at] == start and ids[at] < appt_id:
            at += 1  # the same start: ordered by id, as the query orders them
        ids.insert(at, appt_id)
        revisions.insert(at, revision)
        starts.insert(at, start)
    return tuple(ids), tuple(revisions), tuple(starts)


def join(order: list[tuple[int, int]], pieces: list[Piece], starts: tuple[Any, ...] | None = None,
         staff_revision: int | None = None) -> tuple[bytes, Index]:
    """The segment (the pieces, copied once) and its index; `order` holds (appointment id,
    revision) of each piece."""
    ids = tuple(appt_id for appt_id, _ in order)
    revisions = tuple(revision for _, revision in order)
    return b"".join(pieces), Index.of(ids, revisions, [len(p) for p in pieces], starts, staff_revision)
