"""A demo company: staff in two groups and appointments across a daylight-saving change.

Used by `calsync serve --demo`, `calsync demo-data` and the benchmarks. Appointments follow
booking's rules (working hours, never double-booked, history written) but are planned in memory
and inserted in bulk: booking them one by one through feeds.booking took minutes for 10,000.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from calsync.feeds.scheduling.availability import slots_within
from calsync.feeds.scheduling.booking import CustomerDetails, mark_feed_changed
from calsync.feeds.scheduling.directory import create_group, create_staff
from calsync.feeds.scheduling.working_hours import (
    Interval,
    merge,
    parse_timezone,
    subtract,
    working_intervals,
)
from calsync.models import (
    STATUS_CONFIRMED,
    Appointment,
    AppointmentChange,
    ChangeAction,
    ChangeSource,
    Company,
    Customer,
    Staff,
)

STAFF = [
    ("Zoë Müller", "Europe/Berlin"),
    ("José Ñúñez", "Europe/Berlin"),
    ("Łukasz Żółć", "Europe/Berlin"),
    ("Ayşe Yılmaz", "Europe/Berlin"),
    ("Søren Ødegård", "America/New_York"),
    ("山田 花子", "Europe/Berlin"),
]
CUSTOMERS = [
    "Amélie Dubois", "Björn Åkesson", "Chloé Lefèvre", "Dmitri Иванов", "Eoin Ó Briain",
    "François Nöel", "Göran Şahin", "Hélène Brontë", "Ingrid Ærø", "Jürgen Weiß",
    "Katarzyna Wójcik", "Léa Châtelet", "Māris Ozoliņš", "Nuño Peña", "Océane Martín",
]
SERVICES = [
    ("Haircut", 30), ("Colour & style", 90), ("Beard trim", 15),
    ("Deep-tissue massage", 60), ("Facial; sensitive skin", 45), ("Manicure, gel", 45),
]
NOTES = [
    None,
    None,
    "Allergic to lavender; prefers a quiet room.\nParking: back entrance, code 4711.",
    "First visit — ask about the loyalty card, please",
    "Läuft über die Versicherung, Rechnung an: Müller GmbH",
]


@dataclass(frozen=True)
class DemoResult:
    staff_ids: list[int]
    group_ids: list[int]
    appointments: int


def next_dst_change(tz_name: str, after: datetime, within_days: int = 400) -> datetime | None:
    """The first UTC day on which the zone's offset changes, or None for zones without DST."""
    tz = ZoneInfo(tz_name)
    day = after.astimezone(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    offset = day.astimezone(tz).utcoffset()
    for _ in range(within_days):
        day += timedelta(days=1)
        if day.astimezone(tz).utcoffset() != offset:
            return day
    return None


def demo_window(now: datetime, tz_name: str) -> tuple[datetime, datetime]:
    """A week back to at least six weeks ahead, stretched to two weeks past the next DST change
    so the demo always shows one."""
    start = now - timedelta(days=7)
    end = now + timedelta(weeks=6)
    change = next_dst_change(tz_name, now)
    if change is not None:
        end = max(end, change + timedelta(days=14))
    return start, end


def load_demo(
    session: Session,
    company: Company,
    *,
    staff_count: int = 6,
    appointment_count: int = 200,
    now: datetime | None = None,
    seed: int = 2026,
) -> DemoResult:
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    staff = []
    for i in range(staff_count):
        name, tz = STAFF[i % len(STAFF)]
        if i >= len(STAFF):
            name = f"{name} {i // len(STAFF) + 1}"
        email = f"staff{i + 1}@demo.calsync.test"
        staff.append(create_staff(session, company, name=name, email=email, timezone=tz))
    half = max(1, len(staff) // 2)
    groups = [
        create_group(session, company, name="Hair & Beauty", staff_ids=[s.id for s in staff[:half]]),
        create_group(
            session, company, name="Massage & Wellness", staff_ids=[s.id for s in staff[half:]]
        ),
    ]
    start, end = demo_window(now, company.timezone)
    plan = _plan(rng, staff, start, end, appointment_count)
    booked = _insert(session, company, plan, now)
    return DemoResult([s.id for s in staff], [g.id for g in groups], booked)


@dataclass
class _Booking:
    staff: Staff
    start: datetime
    end: datetime
    service: str
    customer: CustomerDetails
    location: str | None
    notes: str | None


def _plan(rng: random.Random, staff: list[Staff], start: datetime, end: datetime,
          count: int) -> list[_Booking]:
    """Random free slots, as booking would accept them: inside working hours, never on top of
    another appointment. Each staff member's working time is computed once per day and their
    appointments are kept sorted, so an attempt costs a bisect instead of a day's availability
    read from the database (10,000 took minutes that way; issue 17)."""
    days = max(1, (end - start).days)
    work: dict[tuple[int, int], list[Interval]] = {}
    taken: dict[int, list[Interval]] = {member.id: [] for member in staff}
    zones = {member.id: parse_timezone(member.timezone) for member in staff}
    step = timedelta(minutes=15)
    plan: list[_Booking] = []
    attempts = 0
    while len(plan) < count and attempts < count * 20:
        attempts += 1
        member = rng.choice(staff)
        service, minutes = rng.choice(SERVICES)
        day = rng.randrange(days)
        day_start = start + timedelta(days=day)
        day_end = day_start + timedelta(days=1)
        hours = work.get((member.id, day))
        if hours is None:
            hours = work[(member.id, day)] = merge(list(
                working_intervals(member.working_hours, member.timezone, day_start, day_end)))
        mine = taken[member.id]
        # Appointments last at most a day, so none starting before day_start - 1 day overlaps.
        first = bisect.bisect_left(mine, (day_start - timedelta(days=1),))
        last = bisect.bisect_left(mine, (day_end,))
        free = subtract(hours, merge([(a, b) for a, b in mine[first:last] if b > day_start]))
        slots = slots_within(free, timedelta(minutes=minutes), step, zones[member.id])
        if not slots:
            continue
        slot = rng.choice(slots)
        bisect.insort(mine, slot)
        customer = rng.choice(CUSTOMERS)
        slug = customer.split()[0].lower().encode("ascii", "ignore").decode() or "kunde"
        plan.append(_Booking(
            member, slot[0], slot[1], service,
            CustomerDetails(name=customer, email=f"{slug}{rng.randrange(100)}@example.com",
                            phone=f"+49 30 {rng.randrange(1000000, 9999999)}"),
            rng.choice([None, "Salon Mitte, Torstraße 1, 10119 Berlin", "Room 2"]), rng.choice(NOTES),
        ))
    return plan


def _insert(session: Session, company: Company, plan: list[_Booking], now: datetime) -> int:
    """Write the planned appointments in bulk, with what booking writes beside each one: the
    history entry and the staff member's feed revision. The demo's customers have made-up
    addresses (no email is written for ChangeSource.DEMO) and its new staff no calendars."""
    if not plan:
        return 0
    customers = {
        (name, email, phone): cid for cid, name, email, phone in session.execute(
            select(Customer.id, Customer.name, Customer.email, Customer.phone)
            .where(Customer.company_id == company.id))
    }
    wanted = list(dict.fromkeys(
        (b.customer.name, b.customer.email, b.customer.phone) for b in plan
        if (b.customer.name, b.customer.email, b.customer.phone) not in customers))
    if wanted:
        new_ids = session.scalars(insert(Customer).returning(Customer.id, sort_by_parameter_order=True), [
            {"company_id": company.id, "name": n, "email": e, "phone": p, "created_at": now}
            for n, e, p in wanted])
        customers.update(zip(wanted, new_ids, strict=True))
    rows: list[dict[str, Any]] = [{
        "company_id": company.id, "staff_id": b.staff.id,
        "customer_id": customers[(b.customer.name, b.customer.email, b.customer.phone)],
        "uid": f"{uuid.uuid4()}@calsync", "sequence": 0, "revision": 1, "status": STATUS_CONFIRMED,
        "service": b.service, "location": b.location, "notes": b.notes,
        "start_at": b.start.astimezone(UTC), "end_at": b.end.astimezone(UTC),
        "created_at": now, "updated_at": now,
    } for b in plan]
    ids = list(session.scalars(
        insert(Appointment).returning(Appointment.id, sort_by_parameter_order=True), rows))
    session.execute(insert(AppointmentChange), [{
        "appointment_id": appt_id, "action": ChangeAction.BOOKED, "source": ChangeSource.DEMO,
        "detail": {"start": b.start.astimezone(UTC).isoformat(), "end": b.end.astimezone(UTC).isoformat()},
        "sequence": 0, "created_at": now,
    } for appt_id, b in zip(ids, plan, strict=True)])
    for staff_id, booked in Counter(b.staff.id for b in plan).items():
        # What lock_staff does once per booking, once per staff member.
        session.execute(update(Staff).where(Staff.id == staff_id)
                        .values(feed_revision=Staff.feed_revision + booked))
    for member in {b.staff.id: b.staff for b in plan}.values():
        session.refresh(member, ["feed_revision"])
        mark_feed_changed(member)
    session.flush()
    return len(plan)
