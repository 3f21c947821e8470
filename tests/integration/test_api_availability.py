"""JSON API: GET /staff/{id}/availability — working hours in the staff member's zone, minus
appointments, DST-correct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Api

BERLIN = ZoneInfo("Europe/Berlin")
EVERY_DAY = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def availability(api: Api, staff_id: int, start: datetime, end: datetime, **params: Any) -> Any:
    query = urlencode({"start": z(start), "end": z(end), **params})
    resp = api.get(f"/staff/{staff_id}/availability?{query}")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def periods(items: list[dict[str, str]]) -> list[tuple[datetime, datetime]]:
    out = []
    for item in items:
        a, b = datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["end"])
        assert a.utcoffset() == timedelta(0) and b.utcoffset() == timedelta(0), item
        out.append((a, b))
    return out


def error_fields(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.is_json and resp.get_json()["error"]
    return [e["field"] for e in resp.get_json()["errors"]]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()  # Europe/Berlin, Mon–Fri 09–17


def test_slots_cover_working_hours_in_the_staff_zone(api: Api, staff: dict[str, Any]) -> None:
    # Monday 2030-01-07, whole UTC day; Berlin is UTC+1, so work is 08:00Z–16:00Z.
    got = availability(api, staff["id"], utc(2030, 1, 7), utc(2030, 1, 8), duration=30)
    slots = periods(got["slots"])
    assert got["busy"] == []
    assert len(slots) == 16
    assert slots[0] == (utc(2030, 1, 7, 8), utc(2030, 1, 7, 8, 30))
    assert slots[-1] == (utc(2030, 1, 7, 15, 30), utc(2030, 1, 7, 16))
    assert all(b - a == timedelta(minutes=30) for a, b in slots)
    assert all(s[1] == t[0] for s, t in zip(slots, slots[1:], strict=False))  # step = duration


def test_duration_defaults_to_30_minutes(api: Api, staff: dict[str, Any]) -> None:
    got = availability(api, staff["id"], utc(2030, 1, 7), utc(2030, 1, 8))
    assert len(got["slots"]) == 16


def test_slots_follow_the_staff_zone_not_the_company(api: Api) -> None:
    ny = api.make_staff(timezone="America/New_York")  # UTC-5 in January
    slots = periods(availability(api, ny["id"], utc(2030, 1, 7), utc(2030, 1, 9), duration=60)["slots"])
    assert slots[0] == (utc(2030, 1, 7, 14), utc(2030, 1, 7, 15))
    assert slots[-1] == (utc(2030, 1, 8, 21), utc(2030, 1, 8, 22))
    assert len(slots) == 16


def test_range_clips_working_hours(api: Api, staff: dict[str, Any]) -> None:
    got = availability(api, staff["id"], utc(2030, 1, 7, 10, 10), utc(2030, 1, 7, 12), duration=30)
    # The grid is counted from local midnight: 11:10 local rounds up to 11:30 local.
    assert periods(got["slots"]) == [
        (utc(2030, 1, 7, 10, 30), utc(2030, 1, 7, 11)),
        (utc(2030, 1, 7, 11), utc(2030, 1, 7, 11, 30)),
        (utc(2030, 1, 7, 11, 30), utc(2030, 1, 7, 12)),
    ]


def test_no_slots_on_days_off(api: Api, staff: dict[str, Any]) -> None:
    # Saturday and Sunday.
    got = availability(api, staff["id"], utc(2030, 1, 5), utc(2030, 1, 7), duration=30)
    assert got == {"slots": [], "busy": [], "blocked": None}


def test_booked_appointments_are_busy_not_free(api: Api, staff: dict[str, Any]) -> None:
    sid = staff["id"]
    a = api.book(sid, "2030-01-07T10:00:00+01:00", "2030-01-07T11:00:00+01:00").get_json()
    api.book(sid, "2030-01-07T13:15:00+01:00", "2030-01-07T13:45:00+01:00")
    got = availability(api, sid, utc(2030, 1, 7), utc(2030, 1, 8), duration=30)
    busy = periods(got["busy"])
    assert busy == [
        (utc(2030, 1, 7, 9), utc(2030, 1, 7, 10)),
        (utc(2030, 1, 7, 12, 15), utc(2030, 1, 7, 12, 45)),
    ]
    assert [b["kind"] for b in got["busy"]] == ["appointment", "appointment"]
    slots = periods(got["slots"])
    for s in slots:
        for b in busy:
            assert s[1] <= b[0] or s[0] >= b[1], (s, b)
    starts = [s[0] for s in slots]
    assert utc(2030, 1, 7, 9) not in starts and utc(2030, 1, 7, 9, 30) not in starts
    assert utc(2030, 1, 7, 10) in starts  # right after the first appointment
    # After 12:45Z the grid continues at the next :00/:30 local.
    assert utc(2030, 1, 7, 12, 30) not in starts and utc(2030, 1, 7, 13) in starts
    assert len(slots) == 16 - 2 - 2

    # Every slot offered can actually be booked; a cancelled appointment frees its time.
    assert api.post(f"/appointments/{a['id']}/cancel").status_code == 200
    got = availability(api, sid, utc(2030, 1, 7), utc(2030, 1, 8), duration=30)
    assert len(periods(got["busy"])) == 1
    slot = got["slots"][2]
    assert api.book(sid, slot["start"], slot["end"]).status_code == 201


def test_other_staff_appointments_do_not_count(api: Api, staff: dict[str, Any]) -> None:
    other = api.make_staff(name="O", email="o@example.com")
    api.book(other["id"], "2030-01-07T10:00:00+01:00", "2030-01-07T11:00:00+01:00")
    got = availability(api, staff["id"], utc(2030, 1, 7), utc(2030, 1, 8))
    assert got["busy"] == [] and len(got["slots"]) == 16


def test_step(api: Api, staff: dict[str, Any]) -> None:
    got = availability(api, staff["id"], utc(2030, 1, 7), utc(2030, 1, 8), duration=60, step=15)
    slots = periods(got["slots"])
    # 8 h of work, 60-minute slots starting every 15 minutes: 08:00Z … 15:00Z.
    assert len(slots) == 29
    assert slots[0] == (utc(2030, 1, 7, 8), utc(2030, 1, 7, 9))
    assert slots[1][0] == utc(2030, 1, 7, 8, 15)
    assert slots[-1] == (utc(2030, 1, 7, 15), utc(2030, 1, 7, 16))


@pytest.mark.parametrize(
    ("duration", "local_starts"),
    [
        (120, [9, 11, 13, 15]),  # a 2-hour service starts when work starts, not at 10:00
        (480, [9]),
        (90, [9, 10.5, 12, 13.5, 15]),
        (45, [9, 9.75, 10.5, 11.25, 12, 12.75, 13.5, 14.25, 15, 15.75]),
    ],
)
def test_long_slots_start_when_work_starts(
    api: Api, staff: dict[str, Any], duration: int, local_starts: list[float]
) -> None:
    got = availability(api, staff["id"], utc(2030, 1, 7), utc(2030, 1, 8), duration=duration)
    starts = [a.astimezone(BERLIN) for a, _ in periods(got["slots"])]
    assert [s.hour + s.minute / 60 for s in starts] == local_starts


def test_slots_align_to_the_local_clock_in_a_half_hour_zone(api: Api) -> None:
    kolkata = api.make_staff(timezone="Asia/Kolkata")  # UTC+05:30
    got = availability(api, kolkata["id"], utc(2030, 1, 7), utc(2030, 1, 8), duration=30)
    slots = periods(got["slots"])
    assert slots[0][0] == utc(2030, 1, 7, 3, 30)  # 09:00 local
    for start, _ in slots:
        assert start.astimezone(ZoneInfo("Asia/Kolkata")).minute in (0, 30)


def test_availability_across_the_march_dst_change(api: Api) -> None:
    staff = api.make_staff(timezone="Europe/Berlin", working_hours=EVERY_DAY)
    start = datetime(2030, 3, 30, tzinfo=BERLIN)
    end = datetime(2030, 4, 2, tzinfo=BERLIN)
    slots = periods(availability(api, staff["id"], start, end, duration=60)["slots"])
    assert len(slots) == 3 * 8
    by_day: dict[Any, list[datetime]] = {}
    for a, _ in slots:
        by_day.setdefault(a.astimezone(BERLIN).date(), []).append(a)
    for day, starts in by_day.items():
        local_hours = [s.astimezone(BERLIN).hour for s in starts]
        assert local_hours == list(range(9, 17)), day
    # Before the change 09:00 is 08:00Z; from the Sunday of the change on, 07:00Z.
    firsts = [min(v) for _, v in sorted(by_day.items())]
    assert firsts == [utc(2030, 3, 30, 8), utc(2030, 3, 31, 7), utc(2030, 4, 1, 7)]


def test_availability_on_the_night_of_the_change(api: Api) -> None:
    """Working 00:00–04:00 on the Sunday Berlin skips 02:00–03:00: three hours of work, not four."""
    staff = api.make_staff(timezone="Europe/Berlin", working_hours={"sun": [["00:00", "04:00"]]})
    got = availability(api, staff["id"], utc(2030, 3, 30), utc(2030, 4, 1), duration=60)
    assert periods(got["slots"]) == [
        (utc(2030, 3, 30, 23), utc(2030, 3, 31, 0)),
        (utc(2030, 3, 31, 0), utc(2030, 3, 31, 1)),
        (utc(2030, 3, 31, 1), utc(2030, 3, 31, 2)),
    ]


def test_availability_across_the_october_dst_change(api: Api) -> None:
    staff = api.make_staff(timezone="Europe/Berlin", working_hours=EVERY_DAY)
    start = datetime(2030, 10, 26, tzinfo=BERLIN)
    end = datetime(2030, 10, 29, tzinfo=BERLIN)
    slots = periods(availability(api, staff["id"], start, end, duration=480)["slots"])
    assert slots == [
        (utc(2030, 10, 26, 7), utc(2030, 10, 26, 15)),
        (utc(2030, 10, 27, 8), utc(2030, 10, 27, 16)),
        (utc(2030, 10, 28, 8), utc(2030, 10, 28, 16)),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"duration": "0"}, "duration"),
        ({"duration": "-30"}, "duration"),
        ({"duration": "1441"}, "duration"),
        ({"duration": "half an hour"}, "duration"),
        ({"duration": "30.5"}, "duration"),
        ({"step": "1"}, "step"),
        ({"step": "1441"}, "step"),
        ({"step": "x"}, "step"),
        ({"start": None}, "start"),
        ({"end": None}, "end"),
        ({"start": "2030-01-07T00:00:00"}, "start"),
        ({"start": "monday"}, "start"),
        ({"end": "2031-01-09T00:00:00Z"}, "end"),  # 367 days
        ({"end": "2030-01-06T00:00:00Z"}, "end"),  # before start
        ({"end": "2030-01-07T00:00:00Z"}, "end"),  # empty
        ({"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"}, "start"),
        ({"start": "9999-12-30T00:00:00Z", "end": "9999-12-31T00:00:00Z"}, "start"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_queries_are_422(
    api: Api, staff: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    query: dict[str, Any] = {"start": "2030-01-07T00:00:00Z", "end": "2030-01-08T00:00:00Z"}
    query.update(params)
    query = {k: v for k, v in query.items() if v is not None}
    resp = api.get(f"/staff/{staff['id']}/availability?{urlencode(query)}")
    assert field in error_fields(resp)


def test_a_range_of_366_days_is_allowed(api: Api, staff: dict[str, Any]) -> None:
    got = availability(api, staff["id"], utc(2030, 1, 1), utc(2031, 1, 2), duration=480)
    # One 8-hour slot per working day of 2030 (261 weekdays) plus Thursday 1 January 2031.
    assert len(got["slots"]) == 262


def test_unknown_staff_is_404(api: Api) -> None:
    for sid in (999, 2**64):
        resp = api.get(f"/staff/{sid}/availability?start=2030-01-07T00:00:00Z&end=2030-01-08T00:00:00Z")
        assert resp.status_code == 404
        assert resp.is_json and resp.get_json()["error"]
