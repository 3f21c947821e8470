"""Where each appointment's VEVENT lies inside a cached segment (a staff member's fragments).

After one appointment changes, its staff member's segment is rebuilt. With the index of the
previous segment in memory, the rebuild reads only (id, revision) of the staff member's
appointments and reuses every unchanged fragment as a slice of the previous segment's bytes:
no fragment bodies are read from the database or encoded again, and one fragment is rendered.
Without it (another process made the segment, or the memory was cleared), the segment is built
from the feed_fragment table as before, and its index kept for the next change.

Indexes are per process, like the memory cache, bounded by count; each names the segment key it
describes, so an index is used only together with the very bytes it was made from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# appointment id -> (revision key of its fragment, start, end) in the segment's bytes
Index = dict[int, tuple[str, int, int]]
Piece = bytes | memoryview


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


def join(order: list[int], pieces: dict[int, Piece], keys: dict[int, str]) -> tuple[bytes, Index]:
    """The segment (pieces in `order`, copied once) and its index."""
    index: Index = {}
    offset = 0
    for appt_id in order:
        size = len(pieces[appt_id])
        index[appt_id] = (keys[appt_id], offset, offset + size)
        offset += size
    return b"".join([pieces[appt_id] for appt_id in order]), index
