"""Where each appointment's VEVENT lies inside a cached segment (a staff member's fragments).

After one appointment changes, its staff member's segment is rebuilt. With the index of the
previous segment in memory, the rebuild reads only (id, revision) of the staff member's
appointments and reuses every unchanged fragment as a slice of the previous segment's bytes:
no fragment bodies are read from the database or encoded again, and one fragment is rendered.
Without it (another process made the segment, or the memory was cleared), the segment is built
from the feed_fragment table as before, and its index kept for the next change.

Indexes are per process, like the memory cache, bounded by count; each names the segment key it
describes, so an index is used only together with the very bytes it was made from. A rebuilt
segment's index is made once the response is sent (LazyIndex), off the first GET's path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# appointment id -> (its revision, start, end) in the segment's bytes; the fragment format is
# part of the segment's family, so the revision alone says which fragment a slice is
Index = dict[int, tuple[int, int, int]]
Piece = bytes | memoryview


class LazyIndex:
    """A segment's index, made when first asked for: a rebuild after a change hands it out
    unmade and makes it once the response is sent (segments.build_segment), so the next
    rebuild finds it ready."""

    __slots__ = ("_make", "_built")

    def __init__(self, make: Callable[[], Index]) -> None:
        self._make: Callable[[], Index] | None = make
        self._built: Index | None = None

    def build(self) -> Index:
        built = self._built
        if built is None:
            make = self._make
            if make is None:  # made by another thread meanwhile (it sets _built first)
                return self._built  # type: ignore[return-value]
            built = self._built = make()
            self._make = None  # what it referred to (the previous segment) can go
        return built

    def get(self, appt_id: int) -> tuple[int, int, int] | None:
        return self.build().get(appt_id)


class SegmentIndexes:
    def __init__(self, max_families: int = 20_000) -> None:
        self.max_families = max_families
        self._items: OrderedDict[str, tuple[str, Index | LazyIndex]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, family: str) -> tuple[str, Index | LazyIndex] | None:
        with self._lock:
            found = self._items.get(family)
            if found is not None:
                self._items.move_to_end(family)
            return found

    def put(self, family: str, segment_key: str, index: Index | LazyIndex) -> None:
        with self._lock:
            self._items[family] = (segment_key, index)
            self._items.move_to_end(family)
            while len(self._items) > self.max_families:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def join(order: list[tuple[int, int]], pieces: list[Piece]) -> tuple[bytes, Index]:
    """The segment (the pieces, copied once) and its index; `order` holds (appointment id,
    revision) of each piece."""
    index: Index = {}
    offset = 0
    for (appt_id, revision), piece in zip(order, pieces, strict=True):
        size = len(piece)
        index[appt_id] = (revision, offset, offset + size)
        offset += size
    return b"".join(pieces), index
