"""segment_index.reuse: the next segment of a family planned beside the previous one. Whatever
the change, the planned parts with the new fragments in place must be exactly the segment built
from nothing, and the sizes its index. segment_index.replan: the order of the next segment from
the changed appointments alone, which must be the order a query of the whole window gives."""

from __future__ import annotations

import random

from calsync.feeds.publishing.segment_index import Index, join, replan, reuse


def _fragment(appt_id: int, revision: int) -> bytes:
    return f"BEGIN:VEVENT\r\nUID:{appt_id}\r\nSEQUENCE:{revision}\r\n{'X' * appt_id}END:VEVENT\r\n".encode()


def _segment(order: list[tuple[int, int]]) -> tuple[bytes, Index]:
    return join(order, [_fragment(appt_id, revision) for appt_id, revision in order])


def _rebuilt(previous: list[tuple[int, int]], now: list[tuple[int, int]]) -> tuple[list, list[int], Index]:
    """Plan `now` beside `previous`, render what it asks for, and check bytes and index."""
    old_bytes, old = _segment(previous)
    ids, revisions = tuple(i for i, _ in now), tuple(r for _, r in now)
    parts, stale_at, sizes = reuse(ids, revisions, old, memoryview(old_bytes))
    rendered = {ids[i]: _fragment(ids[i], revisions[i]) for i in stale_at}
    for i in stale_at:
        sizes[i] = len(rendered[ids[i]])
    made = b"".join(rendered[p] if isinstance(p, int) else p for p in parts)
    expected, index = _segment(now)
    assert made == expected
    assert Index.of(ids, revisions, sizes).ends == index.ends
    return parts, stale_at, old


def test_an_index_lists_where_each_fragment_ends() -> None:
    segment, index = _segment([(3, 1), (1, 2), (2, 1)])
    assert index.ids == (3, 1, 2) and index.revisions == (1, 2, 1)
    assert index.sizes() == [len(_fragment(3, 1)), len(_fragment(1, 2)), len(_fragment(2, 1))]
    start, end = index.span(1)
    assert segment[start:end] == _fragment(1, 2)
    assert index.position() == {3: 0, 1: 1, 2: 2}


def test_a_change_that_keeps_the_order_is_planned_without_looking_up_each_appointment() -> None:
    before = [(i, 1) for i in range(1, 9)]
    parts, stale_at, old = _rebuilt(before, [(i, 2 if i in (4, 5) else 1) for i in range(1, 9)])
    assert stale_at == [3, 4]
    assert [p for p in parts if isinstance(p, int)] == [4, 5]
    assert len(parts) == 4  # the fragments before and after, one slice each
    assert old._position is None  # no id -> place dict was needed
    first, *_, last = _rebuilt(before, [(1, 2), *before[1:7], (8, 3)])[0]
    assert first == 1 and last == 8  # the ends themselves, nothing left over


def test_moves_additions_and_removals_reuse_every_unchanged_fragment() -> None:
    before = [(i, 1) for i in range(1, 9)]
    moved = [(1, 1), (2, 1), (4, 1), (5, 1), (3, 2), (6, 1), (7, 1), (8, 1)]  # 3 moved after 5
    parts, stale_at, _ = _rebuilt(before, moved)
    assert stale_at == [4]
    assert len(parts) == 4  # 1-2, 4-5 (neighbours before too: one slice each), the new 3, 6-8
    _, stale_at, _ = _rebuilt(before, [(1, 1), (9, 1), *before[1:6], (8, 1)])  # 9 booked, 7 gone
    assert stale_at == [1]
    _, stale_at, _ = _rebuilt(before, [])
    assert stale_at == []
    _, stale_at, _ = _rebuilt([], before)
    assert stale_at == list(range(8))


def _index(appointments: dict[int, tuple[int, int]]) -> Index:
    """The index of a segment of `appointments` (id -> (revision, start)), in (start, id) order."""
    order = sorted(appointments, key=lambda i: (appointments[i][1], i))
    return Index.of(tuple(order), tuple(appointments[i][0] for i in order), [1] * len(order),
                    tuple(appointments[i][1] for i in order), staff_revision=7)


def test_replan_places_each_changed_appointment_where_the_window_query_would() -> None:
    rng = random.Random(17)
    for _ in range(400):
        # Few distinct starts, so equal starts (ordered by id) come up often.
        now = {i: (1, rng.randrange(30)) for i in rng.sample(range(1, 60), rng.randrange(0, 25))}
        old = _index(now)
        changed: dict[int, tuple[int, int] | None] = {}
        for appt_id in rng.sample(range(1, 70), rng.randrange(1, 6)):
            if rng.random() < 0.25:
                now.pop(appt_id, None)  # left the window (moved away, cancelled)
                changed[appt_id] = None
            else:
                now[appt_id] = (now.get(appt_id, (1, 0))[0] + 1, rng.randrange(30))  # moved or booked
                changed[appt_id] = now[appt_id]
        expected = _index(now)
        assert replan(old, changed) == (expected.ids, expected.revisions, expected.starts)


def test_a_move_that_keeps_its_place_gives_the_previous_order_back() -> None:
    old = _index({1: (1, 10), 2: (1, 20), 3: (1, 30)})
    ids, revisions, starts = replan(old, {2: (2, 25)})
    assert ids == old.ids and revisions == (1, 2, 1) and starts == (10, 25, 30)
    assert replan(old, {}) == (old.ids, old.revisions, old.starts)


def test_an_index_made_at_a_revision_keeps_its_place_data() -> None:
    old = _index({1: (1, 10), 2: (1, 20)})
    again = old.at_revision(9)
    same = (again.ids, again.revisions, again.ends, again.starts)
    assert same == (old.ids, old.revisions, old.ends, old.starts)
    assert again.staff_revision == 9 and old.staff_revision == 7
