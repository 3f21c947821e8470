"""Why a staff member cannot be booked because of one of their calendar connections.

We cannot know when someone is busy while a calendar of theirs has never been read, so a
connection that has never synced blocks booking them — but only for a while: a connection
that has still never synced `stale_after_hours` after it was added counts as stale, and the
company's stale policy decides, as for a calendar that stopped syncing (`keep`, the default:
bookings go ahead without its busy time; `block`: they stay stopped until it syncs or is
removed). So a broken address can never leave a staff member unbookable without end, and
everyone who meets the block (staff page, Sync health, Calendar sync, the booking error, the
API) reads the same sentence, naming the calendar, since when and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import get_company_settings
from calsync.models import Company, Connection, ConnectionStatus, Staff, utcnow


@dataclass(frozen=True)
class CalendarBlock:
    staff_id: int
    staff_name: str
    connection_id: int
    connection_name: str
    added_at: datetime
    last_success_at: datetime | None  # None: never synced
    reason: str | None  # the last error, a sentence
    lifts_at: datetime | None  # when bookings go ahead without it; None: not by itself

    def sentence(self) -> str:
        """The whole explanation, for the booking error and the API."""
        return f"{self.headline()} {self.remedy()}"

    def headline(self) -> str:
        if self.last_success_at is None and not self.reason:
            since = f"has not synced yet (it was added on {_when(self.added_at)})"
        elif self.last_success_at is None:
            since = f"has not synced since it was added on {_when(self.added_at)}"
        else:
            since = f"has not synced since {_when(self.last_success_at)}"
        why = f" because: {self.reason.rstrip('.')}." if self.reason else ", so their busy time is unknown."
        return f"{self.staff_name} can't be booked: the calendar '{self.connection_name}' {since}{why}"

    def outlook(self) -> str:
        """When the block ends by itself, for the pages that already link to the fix."""
        if self.lifts_at is not None:
            return f"From {_when(self.lifts_at)} bookings go ahead without it."
        return "Bookings stay stopped until it syncs or is removed."

    def remedy(self) -> str:
        fix = f"Fix or remove it on {self.staff_name}'s staff page"
        if self.lifts_at is not None:
            return f"{fix}; from {_when(self.lifts_at)} bookings go ahead without it."
        return (f"{fix}, or set Stale calendars to \"Keep the last known busy times\" in the "
                "settings to book without it.")


def _when(moment: datetime) -> str:
    return f"{moment:%d %b %Y, %H:%M} UTC"


def calendar_blocks(
    session: Session, company: Company, staff_ids: list[int] | None = None, now: datetime | None = None
) -> dict[int, CalendarBlock]:
    """The first calendar block of each blocked staff member of the company (by staff id)."""
    now = now or utcnow()
    settings = get_company_settings(company)
    stale_after = timedelta(hours=settings.stale_after_hours)
    blocking_stale = settings.stale_policy == "block"
    query = (
        select(Connection, Staff.name)
        .join(Staff, Staff.id == Connection.staff_id)
        .where(Connection.company_id == company.id)
        .order_by(Connection.id)
    )
    if staff_ids is not None:
        query = query.where(Connection.staff_id.in_(staff_ids))
    found: dict[int, CalendarBlock] = {}
    for conn, staff_name in session.execute(query).all():
        if conn.staff_id in found:
            continue
        lifts_at: datetime | None = None
        if conn.last_success_at is None:
            new_until = conn.created_at + stale_after
            if now < new_until:
                lifts_at = None if blocking_stale else new_until
            elif not blocking_stale:
                continue  # stale, and the company books without stale calendars
        elif not (conn.status == ConnectionStatus.STALE and blocking_stale):
            continue
        found[conn.staff_id] = CalendarBlock(
            staff_id=conn.staff_id, staff_name=staff_name, connection_id=conn.id,
            connection_name=conn.name, added_at=conn.created_at,
            last_success_at=conn.last_success_at, reason=conn.last_error, lifts_at=lifts_at,
        )
    return found


def calendar_block(session: Session, staff: Staff, now: datetime | None = None) -> CalendarBlock | None:
    company = session.get(Company, staff.company_id)
    if company is None:
        return None
    return calendar_blocks(session, company, [staff.id], now).get(staff.id)
