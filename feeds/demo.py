"""A demo company: staff in two groups and appointments across a daylight-saving change.

Used by `calsync serve --demo`, `calsync demo-data` and the benchmarks. Appointments are booked
through feeds.booking like any other, so the demo obeys working hours and never double-books.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from calsync.feeds.scheduling.availability import find_availability
from calsync.feeds.scheduling.booking import CustomerDetails, book_appointment
from calsync.feeds.scheduling.directory import create_group, create_staff
from calsync.models import ChangeSource, Company

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
    # Candidate slots per staff member from their real availability, then pick at random.
    booked = 0
    attempts = 0
    days = max(1, (end - start).days)
    while booked < appointment_count and attempts < appointment_count * 20:
        attempts += 1
        member = rng.choice(staff)
        service, minutes = rng.choice(SERVICES)
        day_start = start + timedelta(days=rng.randrange(days))
        slots = find_availability(
            session, member, day_start, day_start + timedelta(days=1), timedelta(minutes=minutes),
            step=timedelta(minutes=15),
        ).slots
        if not slots:
            continue
        slot_start, slot_end = rng.choice(slots)
        customer = rng.choice(CUSTOMERS)
        slug = customer.split()[0].lower().encode("ascii", "ignore").decode() or "kunde"
        book_appointment(
            session,
            company,
            staff_id=member.id,
            start=slot_start,
            end=slot_end,
            service=service,
            customer=CustomerDetails(
                name=customer,
                email=f"{slug}{rng.randrange(100)}@example.com",
                phone=f"+49 30 {rng.randrange(1000000, 9999999)}",
            ),
            location=rng.choice([None, "Salon Mitte, Torstraße 1, 10119 Berlin", "Room 2"]),
            notes=rng.choice(NOTES),
            source=ChangeSource.DEMO,
        )
        booked += 1
    return DemoResult([s.id for s in staff], [g.id for g in groups], booked)
