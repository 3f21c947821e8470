"""What a move or a cancellation costs and keeps (issue 17): the staff member is locked and the
appointment read in one UPDATE and one SELECT (feeds/scheduling/booking.py lock_appointment),
feed_changed_at follows mark_feed_changed's rule inside that UPDATE, and the customer's email
is still written in the same transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import create_api_key
from calsync.models import Appointment, Company, OutboxEmail, Staff
from tests.conftest import Api
from tests.mail_helpers import parse_imip, written

DAY = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def at(clock: str) -> str:
    return f"2030-01-07T{clock}:00+01:00"


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = app.extensions["calsync"].engine

    def record(conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        seen.append(" ".join(sql.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _staff_row(app: Flask, staff_id: int) -> tuple[int, datetime]:
    with app.extensions["calsync"].sessions() as s:
        staff = s.get(Staff, staff_id)
        assert staff is not None
        return staff.feed_revision, staff.feed_changed_at


def _set_changed_at(app: Flask, staff_id: int, when: datetime) -> None:
    with app.extensions["calsync"].sessions.begin() as s:
        s.execute(update(Staff).where(Staff.id == staff_id).values(feed_changed_at=when))


@pytest.fixture
def booked(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    staff = api.make_staff(working_hours=DAY)
    appt = api.book(staff["id"], at("10:00"), at("10:30"))
    assert appt.status_code == 201
    return staff, appt.get_json()


def test_a_move_reads_the_appointment_once_and_writes_each_row_once(
    app: Flask, api: Api, booked: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, appt = booked
    with statements(app) as seen:
        resp = api.patch(f"/appointments/{appt['id']}", {"start": at("11:00"), "end": at("11:30")})
    assert resp.status_code == 200
    writes = [s.split(" SET ")[0].split(" (")[0] for s in seen if not s.startswith("SELECT")]
    assert sorted(writes) == sorted(["UPDATE staff", "UPDATE appointment",
                                     "INSERT INTO appointment_change", "INSERT INTO outbox_email"])
    # The lock's UPDATE carries feed_changed_at and finds the staff member by the appointment.
    [lock] = [s for s in seen if s.startswith("UPDATE staff")]
    assert "feed_changed_at" in lock and "SELECT appointment.staff_id" in lock
    assert len([s for s in seen if s.startswith("SELECT appointment.id")]) == 1
    assert not [s for s in seen if "group_member" in s]  # no selectin of Staff.groups
    assert not [s for s in seen if s.startswith("SELECT appointment_change")]  # previous time in hand
    assert len(seen) <= 12, "\n".join(seen)


def test_feed_changed_at_moves_to_now_and_never_back(
    app: Flask, api: Api, booked: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    staff, appt = booked
    path = f"/appointments/{appt['id']}"
    _set_changed_at(app, staff["id"], datetime(2020, 1, 1, tzinfo=UTC))
    revision, _ = _staff_row(app, staff["id"])
    before = datetime.now(UTC)
    assert api.patch(path, {"start": at("11:00"), "end": at("11:30")}).status_code == 200
    moved_revision, changed = _staff_row(app, staff["id"])
    assert moved_revision == revision + 1
    assert before <= changed <= datetime.now(UTC)

    # Another process's clock ahead of this one: the time stays, the revision still moves on.
    ahead = datetime.now(UTC) + timedelta(minutes=5)
    _set_changed_at(app, staff["id"], ahead)
    assert api.post(f"{path}/cancel").status_code == 200
    assert _staff_row(app, staff["id"]) == (moved_revision + 1, ahead)

    # Booking locks the same way.
    _set_changed_at(app, staff["id"], datetime(2020, 1, 1, tzinfo=UTC))
    before = datetime.now(UTC)
    assert api.book(staff["id"], at("12:00"), at("12:30")).status_code == 201
    assert _staff_row(app, staff["id"])[1] >= before


def test_the_move_and_its_email_are_one_transaction(
    app: Flask, api: Api, booked: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    staff, appt = booked
    assert api.book(staff["id"], at("13:00"), at("13:30")).status_code == 201
    # Refused (the slot is taken): nothing of the move is kept, no email, no revision bump.
    revision = _staff_row(app, staff["id"])[0]
    path = f"/appointments/{appt['id']}"
    assert api.patch(path, {"start": at("13:15"), "end": at("13:45")}).status_code == 409
    assert _staff_row(app, staff["id"])[0] == revision
    with app.extensions["calsync"].sessions() as s:
        kinds = [e.kind for e in s.scalars(select(OutboxEmail).order_by(OutboxEmail.id))]
    assert kinds == ["booked", "booked"]
    # Applied: the new time, SEQUENCE and the email with the previous time, together.
    assert api.patch(path, {"start": at("14:00"), "end": at("14:30")}).status_code == 200
    with app.extensions["calsync"].sessions() as s:
        email = s.scalars(select(OutboxEmail).order_by(OutboxEmail.id.desc())).first()
        moved = s.get(Appointment, appt["id"])
        assert email is not None and moved is not None
        assert (email.kind, email.uid, email.sequence) == ("rescheduled", appt["uid"], moved.sequence)
        assert moved.sequence == 1
        imip = parse_imip(written(email))
    assert (imip.method, str(imip.event["SEQUENCE"]), str(imip.event["UID"])) == ("REQUEST", "1", appt["uid"])
    assert "10:00–10:30" in imip.text and "14:00–14:30" in imip.text  # where it was, where it is


def test_another_companys_appointment_is_404_and_locks_nothing(
    app: Flask, api: Api, db: Session, booked: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    staff, appt = booked
    company = Company(name="Other Co", timezone="UTC", settings={})
    db.add(company)
    db.flush()
    _, key = create_api_key(db, company, "other")
    db.commit()
    other = Api(api.client, key)
    before = _staff_row(app, staff["id"])
    for resp in (other.patch(f"/appointments/{appt['id']}", {"start": at("11:00"), "end": at("11:30")}),
                 other.post(f"/appointments/{appt['id']}/cancel")):
        assert resp.status_code == 404
        assert resp.get_json()["error"] == f"There is no appointment with id {appt['id']}."
    assert _staff_row(app, staff["id"]) == before
    assert api.get(f"/appointments/{appt['id']}").get_json() == appt
