"""JSON API: booking, rescheduling, cancelling and listing appointments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Api

BERLIN = ZoneInfo("Europe/Berlin")
EVERY_DAY = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
# Monday 7 January 2030, Berlin is UTC+1.
MON = "2030-01-07"


def at(clock: str, day: str = MON) -> str:
    """An ISO 8601 moment on the Berlin wall clock in winter (UTC+1)."""
    return f"{day}T{clock}:00+01:00"


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def utc(value: str) -> datetime:
    """Parse a response moment and check it is written in UTC."""
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    return moment


def error_fields(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.is_json and resp.get_json()["error"]
    return [e["field"] for e in resp.get_json()["errors"]]


def conflict(resp: Any) -> str:
    """The sentence of a 409."""
    assert resp.status_code == 409, resp.get_data(as_text=True)
    assert resp.is_json
    message = resp.get_json()["error"]
    assert isinstance(message, str) and len(message) > 20 and message.endswith(".")
    return message  # type: ignore[no-any-return]


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()


def book(api: Api, staff_id: int, start: str, end: str, **fields: Any) -> dict[str, Any]:
    resp = api.book(staff_id, start, end, **fields)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


# --- book ------------------------------------------------------------------------------------


def test_book_returns_the_appointment_in_utc(api: Api, staff: dict[str, Any]) -> None:
    resp = api.book(staff["id"], at("10:00"), at("10:30"), location="Salon 2", notes="Ünïcødé")
    assert resp.status_code == 201
    appt = resp.get_json()
    assert isinstance(appt["id"], int)
    assert isinstance(appt["uid"], str) and len(appt["uid"]) >= 20
    assert appt["sequence"] == 0
    assert appt["status"] == "confirmed"
    assert appt["staff_id"] == staff["id"]
    assert utc(appt["start"]) == datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    assert utc(appt["end"]) == datetime(2030, 1, 7, 9, 30, tzinfo=UTC)
    assert appt["service"] == "Haircut"
    assert appt["location"] == "Salon 2"
    assert appt["notes"] == "Ünïcødé"
    assert appt["customer"]["name"] == "Chloé Lefèvre"
    assert appt["customer"]["email"] == "chloe@example.com"
    assert appt["customer"]["phone"] == "+33 1 23"
    # What was stored is what was returned.
    assert api.get(f"/appointments/{appt['id']}").get_json() == appt


def test_every_booking_gets_its_own_uid(api: Api, staff: dict[str, Any]) -> None:
    uids = {book(api, staff["id"], at(f"{h:02}:00"), at(f"{h:02}:30"))["uid"] for h in (9, 10, 11)}
    assert len(uids) == 3


def test_offsets_are_instants_not_wall_times(api: Api, staff: dict[str, Any]) -> None:
    # 09:00Z is 10:00 in Berlin: the same slot as at("10:00"), written differently.
    book(api, staff["id"], "2030-01-07T09:00:00Z", "2030-01-07T09:30:00Z")
    conflict(api.book(staff["id"], at("10:00"), at("10:30")))
    conflict(api.book(staff["id"], "2030-01-07T04:00:00-05:00", "2030-01-07T04:30:00-05:00"))


def test_naive_datetimes_are_422_naming_the_field(api: Api, staff: dict[str, Any]) -> None:
    assert error_fields(api.book(staff["id"], "2030-01-07T10:00:00", at("10:30"))) == ["start"]
    assert error_fields(api.book(staff["id"], at("10:00"), "2030-01-07T10:30:00")) == ["end"]
    assert api.get("/appointments").get_json() == {"appointments": []}


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (at("10:30"), at("10:00"), "end"),  # end before start
        (at("10:00"), at("10:00"), "end"),  # empty
        (at("10:00"), "2030-01-08T10:30:00+01:00", "end"),  # longer than a day
        ("tomorrow", at("10:30"), "start"),
        ("2030-13-01T10:00:00Z", at("10:30"), "start"),
        ("2030-01-07", at("10:30"), "start"),
        ("9999-12-31T23:00:00+00:00", "9999-12-31T23:30:00+00:00", "start"),
        ("0001-01-01T00:00:00+14:00", "0001-01-01T00:30:00+14:00", "start"),
    ],
)
def test_invalid_times_are_422(api: Api, staff: dict[str, Any], start: str, end: str, field: str) -> None:
    assert field in error_fields(api.book(staff["id"], start, end))
    assert api.get("/appointments").get_json() == {"appointments": []}


def test_overlapping_booking_is_409(api: Api, staff: dict[str, Any]) -> None:
    first = book(api, staff["id"], at("10:00"), at("11:00"))
    for start, end in [
        (at("10:00"), at("11:00")),  # same
        (at("10:30"), at("11:30")),  # overlaps the end
        (at("09:30"), at("10:01")),  # overlaps the start
        (at("10:15"), at("10:45")),  # inside
        (at("09:00"), at("12:00")),  # around
    ]:
        message = conflict(api.book(staff["id"], start, end))
        assert "already has an appointment" in message
    assert [a["id"] for a in api.get("/appointments").get_json()["appointments"]] == [first["id"]]


def test_back_to_back_bookings_are_allowed(api: Api, staff: dict[str, Any]) -> None:
    book(api, staff["id"], at("10:00"), at("11:00"))
    book(api, staff["id"], at("11:00"), at("11:30"))
    book(api, staff["id"], at("09:30"), at("10:00"))
    assert len(api.get("/appointments").get_json()["appointments"]) == 3


def test_other_staff_are_not_blocked(api: Api, staff: dict[str, Any]) -> None:
    other = api.make_staff(name="Other", email="o@example.com")
    book(api, staff["id"], at("10:00"), at("11:00"))
    book(api, other["id"], at("10:00"), at("11:00"))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (at("08:00"), at("08:30")),  # before work
        (at("08:45"), at("09:15")),  # starts before work
        (at("16:45"), at("17:15")),  # runs past the end
        (at("17:00"), at("17:30")),  # after work
        (at("10:00", "2030-01-06"), at("10:30", "2030-01-06")),  # a Sunday
        ("2030-01-07T07:30:00Z", "2030-01-07T08:30:00Z"),  # 08:30 local, written in UTC
    ],
)
def test_outside_working_hours_is_409(api: Api, staff: dict[str, Any], start: str, end: str) -> None:
    message = conflict(api.book(staff["id"], start, end))
    assert "does not work" in message


def test_split_working_hours(api: Api) -> None:
    staff = api.make_staff(working_hours={"mon": [["09:00", "12:00"], ["13:00", "17:00"]]})
    book(api, staff["id"], at("11:30"), at("12:00"))
    book(api, staff["id"], at("13:00"), at("13:30"))
    conflict(api.book(staff["id"], at("11:45"), at("13:15")))  # spans the lunch break
    conflict(api.book(staff["id"], at("12:15"), at("12:45")))


def test_unknown_staff_is_404(api: Api) -> None:
    api.make_staff()
    resp = api.book(999, at("10:00"), at("10:30"))
    assert resp.status_code == 404
    assert resp.is_json and resp.get_json()["error"]


def test_customer_and_field_validation(api: Api, staff: dict[str, Any]) -> None:
    sid = staff["id"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer": None}, "customer"),
        ({"customer": {}}, "customer"),
        ({"customer": {"name": "X", "email": "nope"}}, "customer"),
        ({"customer": {"name": "X", "phone": "call me"}}, "customer"),
        ({"customer": {"name": "X", "phone": "1\r\n2"}}, "customer"),
        ({"customer": {"name": "X", "vip": True}}, "customer"),
        ({"service": ""}, "service"),
        ({"service": None}, "service"),
        ({"location": "x" * 501}, "location"),
        ({"notes": "x" * 5001}, "notes"),
        ({"staff_id": "abc"}, "staff_id"),
        ({"staff_id": None}, "staff_id"),
        ({"staff_id": 10**30}, "staff_id"),
        ({"start": None}, "start"),
        ({"start": True}, "start"),
        ({"price": 10}, "price"),
    ]
    base = {"staff_id": sid, "start": at("10:00"), "end": at("10:30"), "service": "Cut",
            "customer": {"name": "Chloé"}}
    for fields, field in cases:
        got = error_fields(api.post("/appointments", {**base, **fields}))
        assert got and all(f.split(".")[0] == field for f in got), (fields, got)
    assert api.get("/appointments").get_json() == {"appointments": []}


def test_appointment_junk_never_500(api: Api, staff: dict[str, Any]) -> None:
    appt = book(api, staff["id"], at("10:00"), at("10:30"))
    for body in (None, [], [1, 2], "x", 7, {"start": [], "end": {}}, {"customer": "Chloé"},
                 {"staff_id": [staff["id"]]}, {"start": "x" * 100_000, "end": "y"},
                 {"start": "2030-01-07T10:00:00+25:00", "end": "2030-01-07T10:30:00+01:00"}):
        for resp in (api.post("/appointments", body), api.patch(f"/appointments/{appt['id']}", body)):
            assert resp.status_code == (422 if isinstance(body, dict) else 400), (body, resp.get_data()[:200])
            assert resp.is_json
    assert api.get(f"/appointments/{appt['id']}").get_json() == appt


# --- reschedule ------------------------------------------------------------------------------


def test_reschedule_bumps_sequence_and_keeps_uid(api: Api, staff: dict[str, Any]) -> None:
    appt = book(api, staff["id"], at("10:00"), at("10:30"))
    resp = api.patch(f"/appointments/{appt['id']}", {"start": at("14:00"), "end": at("15:00")})
    assert resp.status_code == 200
    moved = resp.get_json()
    assert moved["uid"] == appt["uid"]
    assert moved["id"] == appt["id"]
    assert moved["sequence"] == 1
    assert utc(moved["start"]) == datetime(2030, 1, 7, 13, 0, tzinfo=UTC)
    assert utc(moved["end"]) == datetime(2030, 1, 7, 14, 0, tzinfo=UTC)
    assert api.get(f"/appointments/{appt['id']}").get_json() == moved

    # The old slot is free again, the new one is taken.
    book(api, staff["id"], at("10:00"), at("10:30"))
    conflict(api.book(staff["id"], at("14:30"), at("15:00")))

    again = api.patch(f"/appointments/{appt['id']}", {"start": at("15:00"), "end": at("15:30")})
    assert again.get_json()["sequence"] == 2
    assert again.get_json()["uid"] == appt["uid"]


def test_reschedule_may_overlap_its_own_old_slot(api: Api, staff: dict[str, Any]) -> None:
    appt = book(api, staff["id"], at("10:00"), at("11:00"))
    resp = api.patch(f"/appointments/{appt['id']}", {"start": at("10:30"), "end": at("11:30")})
    assert resp.status_code == 200
    assert resp.get_json()["sequence"] == 1


def test_reschedule_to_the_same_time_is_not_a_change(api: Api, staff: dict[str, Any]) -> None:
    appt = book(api, staff["id"], at("10:00"), at("10:30"))
    # The same instants written in UTC.
    resp = api.patch(f"/appointments/{appt['id']}",
                     {"start": "2030-01-07T09:00:00Z", "end": "2030-01-07T09:30:00Z"})
    assert resp.status_code == 200
    assert resp.get_json()["sequence"] == 0


def test_reschedule_onto_another_appointment_is_409_and_changes_nothing(
    api: Api, staff: dict[str, Any]
) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    b = book(api, staff["id"], at("11:00"), at("11:30"))
    message = conflict(api.patch(f"/appointments/{a['id']}", {"start": at("11:15"), "end": at("11:45")}))
    assert "already has an appointment" in message
    assert api.get(f"/appointments/{a['id']}").get_json() == a
    assert api.get(f"/appointments/{b['id']}").get_json() == b


def test_reschedule_outside_working_hours_is_409(api: Api, staff: dict[str, Any]) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    conflict(api.patch(f"/appointments/{a['id']}", {"start": at("18:00"), "end": at("18:30")}))
    assert api.get(f"/appointments/{a['id']}").get_json() == a


def test_reschedule_validation(api: Api, staff: dict[str, Any]) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    path = f"/appointments/{a['id']}"
    assert error_fields(api.patch(path, {"start": at("11:00")})) == ["end"]
    assert error_fields(api.patch(path, {"start": "2030-01-07T11:00:00", "end": at("11:30")})) == ["start"]
    assert error_fields(api.patch(path, {"start": at("11:30"), "end": at("11:00")})) == ["end"]
    assert error_fields(api.patch(path, {"start": at("11:00"), "end": at("11:30"), "staff_id": 2})) == [
        "staff_id"
    ]
    assert api.get(path).get_json() == a


# --- cancel ----------------------------------------------------------------------------------


def test_cancel(api: Api, staff: dict[str, Any]) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    resp = api.post(f"/appointments/{a['id']}/cancel")
    assert resp.status_code == 200
    cancelled = resp.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["sequence"] == 1
    assert cancelled["uid"] == a["uid"]
    assert (cancelled["start"], cancelled["end"]) == (a["start"], a["end"])
    assert api.get(f"/appointments/{a['id']}").get_json() == cancelled

    message = conflict(api.post(f"/appointments/{a['id']}/cancel"))
    assert "already cancelled" in message
    message = conflict(api.patch(f"/appointments/{a['id']}", {"start": at("12:00"), "end": at("12:30")}))
    assert "cancelled" in message
    assert api.get(f"/appointments/{a['id']}").get_json() == cancelled


def test_a_cancelled_slot_can_be_booked_again(api: Api, staff: dict[str, Any]) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    assert api.post(f"/appointments/{a['id']}/cancel").status_code == 200
    b = book(api, staff["id"], at("10:00"), at("10:30"))
    assert b["uid"] != a["uid"]
    assert b["sequence"] == 0


def test_reschedule_then_cancel_sequence(api: Api, staff: dict[str, Any]) -> None:
    a = book(api, staff["id"], at("10:00"), at("10:30"))
    api.patch(f"/appointments/{a['id']}", {"start": at("11:00"), "end": at("11:30")})
    api.patch(f"/appointments/{a['id']}", {"start": at("12:00"), "end": at("12:30")})
    final = api.post(f"/appointments/{a['id']}/cancel").get_json()
    assert (final["sequence"], final["uid"], final["status"]) == (3, a["uid"], "cancelled")


# --- get and list ----------------------------------------------------------------------------


def test_unknown_appointment_is_404(api: Api, staff: dict[str, Any]) -> None:
    for aid in (999, 2**63, 10**30):
        for resp in (
            api.get(f"/appointments/{aid}"),
            api.patch(f"/appointments/{aid}", {"start": at("10:00"), "end": at("10:30")}),
            api.post(f"/appointments/{aid}/cancel"),
        ):
            assert resp.status_code == 404, aid
            assert resp.is_json and resp.get_json()["error"]


def test_list_with_filters(api: Api) -> None:
    ana = api.make_staff(name="Ana", email="ana@example.com")["id"]
    bo = api.make_staff(name="Bo", email="bo@example.com")["id"]
    a1 = book(api, ana, at("10:00", "2030-01-08"), at("10:30", "2030-01-08"))
    a2 = book(api, ana, at("10:00"), at("10:30"))
    b1 = book(api, bo, at("09:00"), at("09:30"))
    a3 = book(api, ana, at("15:00"), at("16:00"))
    api.post(f"/appointments/{a3['id']}/cancel")

    def ids(query: str) -> list[int]:
        resp = api.get("/appointments" + query)
        assert resp.status_code == 200, resp.get_json()
        return [a["id"] for a in resp.get_json()["appointments"]]

    # In start order, cancelled ones included (with their status).
    assert ids("") == [b1["id"], a2["id"], a3["id"], a1["id"]]
    assert ids(f"?staff_id={ana}") == [a2["id"], a3["id"], a1["id"]]
    assert ids(f"?staff_id={bo}") == [b1["id"]]
    assert ids("?staff_id=999") == []
    # start/end select appointments overlapping [start, end).
    assert ids("?start=2030-01-08T00:00:00%2B01:00") == [a1["id"]]
    assert ids("?end=2030-01-07T10:00:00%2B01:00") == [b1["id"]]
    assert ids("?start=2030-01-07T10:15:00%2B01:00&end=2030-01-07T15:30:00%2B01:00") == [a2["id"], a3["id"]]
    assert ids("?start=2030-01-07T10:30:00%2B01:00&end=2030-01-07T15:00:00%2B01:00") == []
    assert ids(f"?staff_id={ana}&start=2030-01-07T00:00:00Z&end=2030-01-08T00:00:00Z") == [
        a2["id"], a3["id"],
    ]
    assert ids("?limit=2") == [b1["id"], a2["id"]]
    assert ids("?limit=2&offset=2") == [a3["id"], a1["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?start=2030-01-07T00:00:00", "start"),
        ("?start=yesterday", "start"),
        ("?end=2030-01-07", "end"),
        ("?staff_id=ana", "staff_id"),
        ("?staff_id=99999999999999999999999", "staff_id"),
        ("?limit=0", "limit"),
        ("?limit=100000", "limit"),
        ("?offset=-1", "offset"),
        ("?offset=99999999999999999999999", "offset"),
        ("?status=confirmed", "status"),
    ],
)
def test_list_query_validation(api: Api, query: str, field: str) -> None:
    assert error_fields(api.get("/appointments" + query)) == [field]


# --- daylight saving time --------------------------------------------------------------------


def test_booking_across_the_march_dst_change(api: Api) -> None:
    """Europe/Berlin springs forward on Sunday 2030-03-31: 09:00 local is 08:00Z the day before
    and 07:00Z the day after. Both must be accepted, and 08:30 local after the change refused."""
    staff = api.make_staff(timezone="Europe/Berlin", working_hours=EVERY_DAY)
    before = datetime(2030, 3, 30, 9, 0, tzinfo=BERLIN)
    after = datetime(2030, 4, 1, 9, 0, tzinfo=BERLIN)
    # Make sure the dates really straddle the change.
    assert before.utcoffset() == timedelta(hours=1)
    assert after.utcoffset() == timedelta(hours=2)

    for local in (before, after):
        appt = book(api, staff["id"], local.isoformat(), (local + timedelta(minutes=30)).isoformat())
        assert utc(appt["start"]) == local.astimezone(UTC)
        assert utc(appt["end"]) == (local + timedelta(minutes=30)).astimezone(UTC)
    assert before.astimezone(UTC).hour == 8 and after.astimezone(UTC).hour == 7

    # The day of the change itself: 09:00 is already summer time.
    sunday = datetime(2030, 3, 31, 9, 0, tzinfo=BERLIN)
    appt = book(api, staff["id"], sunday.isoformat(), (sunday + timedelta(hours=1)).isoformat())
    assert utc(appt["start"]) == datetime(2030, 3, 31, 7, 0, tzinfo=UTC)

    early = datetime(2030, 4, 1, 8, 30, tzinfo=BERLIN)
    message = conflict(api.book(staff["id"], early.isoformat(), (early + timedelta(minutes=30)).isoformat()))
    assert "does not work" in message
    # The same refusal when the client writes the instant in UTC (06:30Z).
    conflict(api.book(staff["id"], "2030-04-01T06:30:00Z", "2030-04-01T07:00:00Z"))
    # 08:00Z on the Monday is 10:00 local: fine, although it was 09:00 local before the change.
    book(api, staff["id"], "2030-04-01T08:00:00Z", "2030-04-01T08:30:00Z")


def test_booking_across_the_october_dst_change(api: Api) -> None:
    """Autumn (Sunday 2030-10-27): the last half hour of work, 16:30 local, is 14:30Z the day
    before and 15:30Z the day after; 17:00 local stays refused on both days."""
    staff = api.make_staff(timezone="Europe/Berlin", working_hours=EVERY_DAY)
    for day, offset in ((datetime(2030, 10, 26), 2), (datetime(2030, 10, 28), 1)):
        local = day.replace(hour=16, minute=30, tzinfo=BERLIN)
        assert local.utcoffset() == timedelta(hours=offset)
        appt = book(api, staff["id"], local.isoformat(), (local + timedelta(minutes=30)).isoformat())
        assert utc(appt["start"]) == local.astimezone(UTC)
        late = local + timedelta(minutes=30)
        conflict(api.book(staff["id"], late.isoformat(), (late + timedelta(minutes=30)).isoformat()))
