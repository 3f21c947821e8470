"""Availability subtracts the appointments first, then each calendar's spans keeping only the
pieces a slot fits in (feeds.scheduling.availability, issue 17). Whatever the order and the
early dropping, the pieces long enough for a slot must be exactly those of the plain
subtraction of everything."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from calsync.feeds.scheduling.busy_timeline import subtract_run
from calsync.feeds.scheduling.working_hours import merge, subtract

spans = st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 300)), max_size=60)


def _disjoint(raw: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return merge([(a, a + length) for a, length in raw])


def _run(raw: list[tuple[int, int]]) -> tuple[array[int], array[int]]:
    merged = _disjoint(raw)
    return array("q", [a for a, _ in merged]), array("q", [b for _, b in merged])


@settings(max_examples=300, deadline=None)
@given(work=spans, appointments=spans, calendars=st.lists(spans, max_size=3), shortest=st.integers(1, 400))
def test_dropping_short_pieces_early_keeps_every_slot(
    work: list, appointments: list, calendars: list, shortest: int
) -> None:
    free = _disjoint(work)
    plain = free
    for raw in calendars:
        plain = subtract_run(plain, *_run(raw))
    plain = subtract(plain, _disjoint(appointments))
    fast = subtract(free, _disjoint(appointments))
    for raw in calendars:
        fast = subtract_run(fast, *_run(raw), shortest=shortest)
    assert [p for p in fast if p[1] - p[0] >= shortest] == [p for p in plain if p[1] - p[0] >= shortest]
    assert all(b - a >= shortest for a, b in fast) or not calendars


def test_short_pieces_are_left_out_and_long_ones_kept() -> None:
    starts, ends = array("q", [10, 30]), array("q", [20, 100])
    assert subtract_run([(0, 200)], starts, ends) == [(0, 10), (20, 30), (100, 200)]
    assert subtract_run([(0, 200)], starts, ends, shortest=10) == [(0, 10), (20, 30), (100, 200)]
    assert subtract_run([(0, 200)], starts, ends, shortest=11) == [(100, 200)]
