"""Sync and two-way sync of a linked calendar on the memory calendar store: the whole algorithm
(read changes, reconcile, push, remember) against an in-memory SQLite database, no servers. The
same flows run on Radicale and Xandikos in tests/integration/test_twoway.py; the store contract
(tests/integration/test_calendar_store_contract.py) is what makes these fast ones meaningful."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.pool import StaticPool

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.calendars.memory_store import MemoryStore, MemoryStores
from calsync.feeds.calendars.store import StoreUnavailable, Written
from calsync.feeds.calendars.sync import SyncContext, SyncOutcome, sync_connection
from calsync.feeds.scheduling.booking import CustomerDetails, book_appointment
from calsync.feeds.scheduling.directory import create_staff
from calsync.models import (
    STATUS_CANCELLED,
    Appointment,
    Base,
    Company,
    Connection,
    LinkedItem,
    make_engine,
    make_session_factory,
    utcnow,
)
from tests.clock import day_at

URL = "memory://zoe/work/"
EVERY_DAY = {day: [["00:00", "23:59"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@dataclass
class World:
    ctx: SyncContext
    store: MemoryStore
    company_id: int
    staff_id: int
    connection_id: int

    def sync(self) -> SyncOutcome:
        return sync_connection(self.ctx, self.connection_id)

    def book(self, days: int, hour: int) -> int:
        start = day_at(days, hour)
        with self.ctx.sessions.begin() as s:
            company = s.get(Company, self.company_id)
            assert company is not None
            appt = book_appointment(s, company, staff_id=self.staff_id, start=start,
                                    end=start + timedelta(hours=1), service="Haircut",
                                    customer=CustomerDetails(name="Ana", email=None, phone=None))
            return appt.id

    def appointment(self, appt_id: int) -> Appointment:
        with self.ctx.sessions() as s:
            appt = s.get(Appointment, appt_id)
            assert appt is not None
            return appt

    def connection(self) -> Connection:
        with self.ctx.sessions() as s:
            conn = s.get(Connection, self.connection_id)
            assert conn is not None
            return conn

    def copy_of(self, appt_id: int) -> str:
        with self.ctx.sessions() as s:
            href = s.scalar(select(LinkedItem.href).where(LinkedItem.appointment_id == appt_id))
        assert href is not None and href in self.store.hrefs
        return href


@pytest.fixture
def world() -> Iterator[World]:
    engine = make_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    vault = Vault([Fernet.generate_key().decode()])
    stores = MemoryStores()
    store = stores.add(MemoryStore(URL))
    now = utcnow()
    with sessions.begin() as s:
        company = Company(name="Salon", timezone="UTC", settings={"bidirectional_sync": True})
        s.add(company)
        s.flush()
        staff = create_staff(s, company, name="Zoe", email="zoe@example.com", timezone="UTC",
                             working_hours=EVERY_DAY)
        conn = Connection(
            company_id=company.id, staff_id=staff.id, kind="caldav", name="Work",
            url_sealed=vault.seal(URL), url_display=URL, username="zoe", password_sealed=vault.seal("pw"),
            roles=["conflict", "linked"], sync_mode="interval", interval_minutes=30, all_day="busy",
            treat_all_busy=False, writable=True, status="pending", next_sync_at=now, created_at=now,
            updated_at=now, extra={},
        )
        s.add(conn)
        s.flush()
        ids = company.id, staff.id, conn.id
    world = World(SyncContext(sessions=sessions, vault=vault, stores=stores), store, *ids)
    assert world.sync().status == "ok"  # an empty calendar: the staff member can be booked
    yield world
    engine.dispose()


def moved(body: bytes, hours: int) -> bytes:
    """The event as a calendar app leaves it after dragging it `hours` later."""
    def shift(match: re.Match[bytes]) -> bytes:
        at = datetime.strptime(match.group(2).decode(), "%Y%m%dT%H%M%SZ") + timedelta(hours=hours)
        return match.group(1) + at.strftime("%Y%m%dT%H%M%SZ").encode()
    return re.sub(rb"(DT(?:START|END)(?:;[^:]*)?:)(\d{8}T\d{6}Z)", shift, body)


def test_a_booking_is_pushed_and_the_next_sync_reads_nothing_new(world: World) -> None:
    appt = world.book(2, 10)
    assert world.sync().status == "ok"
    href = world.copy_of(appt)
    assert f"UID:{world.appointment(appt).uid}".encode() in world.store.body(href)
    world.store.calls.clear()
    # After a create the calendar is listed in full once (see sync._after_push), but our own
    # write is known by its ETag and not loaded again; then nothing has changed at all.
    assert world.sync().status == "ok"
    assert world.store.calls == ["collection_tag", "list"]
    assert world.sync().status == "unchanged"


def test_a_move_in_the_calendar_reschedules_the_booking(world: World) -> None:
    appt = world.book(2, 10)
    world.sync()
    href = world.copy_of(appt)
    before = world.appointment(appt).start_at
    world.store.put_directly(href, moved(world.store.body(href), 3))
    assert world.sync().status == "ok"
    assert world.appointment(appt).start_at == before + timedelta(hours=3)


def test_a_deletion_in_the_calendar_cancels_the_booking(world: World) -> None:
    keep, gone = world.book(2, 10), world.book(3, 10)
    world.sync()
    world.store.delete_directly(world.copy_of(gone))
    assert world.sync().status == "ok"
    assert world.appointment(gone).status == STATUS_CANCELLED
    assert world.appointment(keep).status != STATUS_CANCELLED


def test_every_booking_vanishing_at_once_cancels_nothing(world: World) -> None:
    appts = [world.book(2, 10), world.book(3, 10)]
    world.sync()
    for appt in appts:
        world.store.delete_directly(world.copy_of(appt))
    outcome = world.sync()
    assert outcome.status == "error" and outcome.error and "confirm it under Sync health" in outcome.error
    assert all(world.appointment(a).status != STATUS_CANCELLED for a in appts)


def test_a_forgotten_sync_token_means_a_full_listing_that_still_sees_a_deletion(world: World) -> None:
    keep, gone = world.book(2, 10), world.book(3, 10)
    world.sync()
    world.sync()  # the creates dropped the token; this sync stores a fresh one
    assert world.connection().sync_token
    world.store.delete_directly(world.copy_of(gone))
    world.store.expire_tokens()
    world.store.calls.clear()
    assert world.sync().status == "ok"
    assert world.store.calls[:2] == ["changes_since", "list"]
    assert world.appointment(gone).status == STATUS_CANCELLED
    assert world.appointment(keep).status != STATUS_CANCELLED


def test_an_unreadable_booking_in_the_calendar_shows_in_the_connection_health(world: World) -> None:
    appt = world.book(2, 10)
    world.sync()
    href = world.copy_of(appt)
    broken = re.sub(rb"DTSTART:\d{8}T\d{6}Z", b"DTSTART:20271399T999999Z", world.store.body(href))
    world.store.put_directly(href, broken)
    outcome = world.sync()
    assert outcome.status == "ok"  # the rest of the calendar synced
    conn = world.connection()
    assert conn.last_error is not None
    assert "1 change(s) made in this calendar to bookings could not be applied" in conn.last_error
    assert "could not be read" in conn.last_error
    assert world.appointment(appt).status != STATUS_CANCELLED


def test_a_calendar_that_cannot_be_reached_keeps_everything_and_says_why(world: World) -> None:
    appt = world.book(2, 10)
    world.sync()
    world.store.fail_next("list", StoreUnavailable("timeout", "The calendar server was too slow."))
    world.store.expire_tokens()
    outcome = world.sync()
    assert outcome.status == "error" and outcome.error == "The calendar server was too slow."
    assert world.connection().last_error_kind == "timeout"
    assert world.appointment(appt).status != STATUS_CANCELLED


def test_a_412_on_a_push_is_re_read_and_decided_not_overwritten(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    appt = world.book(2, 10)
    world.sync()
    href = world.copy_of(appt)
    before = world.appointment(appt).start_at
    with world.ctx.sessions.begin() as s:  # a refresh of our copy is due
        item = s.scalar(select(LinkedItem).where(LinkedItem.appointment_id == appt))
        assert item is not None
        item.state = "pending"
    real_update = world.store.update

    def staff_member_moves_it_first(href: str, body: bytes, etag: str | None) -> Written:
        # The staff member's move lands between our reading and our write.
        monkeypatch.setattr(world.store, "update", real_update)
        world.store.put_directly(href, moved(world.store.body(href), 2))
        return real_update(href, body, etag)

    monkeypatch.setattr(world.store, "update", staff_member_moves_it_first)
    assert world.sync().status == "ok"
    # The 412 made us read the move and apply it, then write the copy at the new ETag: the
    # calendar keeps the staff member's time (now ours too), nothing was overwritten.
    assert world.appointment(appt).start_at == before + timedelta(hours=2)
    assert (before + timedelta(hours=2)).strftime("DTSTART:%Y%m%dT%H%M%SZ").encode() in world.store.body(href)
    assert world.store.calls.count("update") == 2
