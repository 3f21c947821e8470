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

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, or_, select
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
    timezone: str = "UTC"  # the staff member's: the times in the sentences are on their clock
    more: tuple[int, ...] = ()  # the other calendars of theirs that block bookings too

    @property
    def connection_ids(self) -> tuple[int, ...]:
        """Every calendar that blocks booking them, the one the sentence names first."""
        return (self.connection_id, *self.more)

    def sentence(self) -> str:
        """The whole explanation, for the booking error and the API."""
        return f"{self.headline()} {self.remedy()}"

    def headline(self) -> str:
        if self.last_success_at is None and not self.reason:
            since = f"has not synced yet (it was added on {self._when(self.added_at)})"
        elif self.last_success_at is None:
            since = f"has not synced since it was added on {self._when(self.added_at)}"
        else:
            since = f"has not synced since {self._when(self.last_success_at)}"
        why = (f", because {_lower_first(self.reason.rstrip('.'))}" if self.reason
               else ", so their busy time is unknown")
        others = ""
        if len(self.more) == 1:
            others = "; and 1 more calendar has not synced either"
        elif self.more:
            others = f"; and {len(self.more)} more calendars have not synced either"
        name = self.connection_name
        return f"{self.staff_name} can't be booked: the calendar '{name}' {since}{why}{others}."

    def outlook(self) -> str:
        """When the block ends by itself, for the pages that already link to the fix."""
        if self.lifts_at is not None:
            return f"From {self._when(self.lifts_at)} bookings go ahead without {self._them()}."
        return "Bookings stay stopped until it syncs or is removed." if not self.more else (
            "Bookings stay stopped until they sync or are removed.")

    def remedy(self) -> str:
        fix = f"Fix or remove {self._them()} on {self.staff_name}'s staff page"
        if self.lifts_at is not None:
            return f"{fix}; from {self._when(self.lifts_at)} bookings go ahead without {self._them()}."
        return (f"{fix}, or set Stale calendars to \"Keep the last known busy times\" in the "
                f"settings to book without {self._them()}.")

    def _them(self) -> str:
        return "them" if self.more else "it"

    def _when(self, moment: datetime) -> str:
        return _when(moment, self.timezone)


def _lower_first(text: str) -> str:
    """'The calendar was not found' → 'the calendar was not found', to follow "because"; a first
    word in capitals (an 'ICS address', 'HTTP 500') is left as it is."""
    head = text.split(" ", 1)[0]
    if len(head) > 1 and head[0].isupper() and head[1:].islower():
        return text[0].lower() + text[1:]
    return text


def _when(moment: datetime, timezone: str = "UTC") -> str:
    """'06 Dec 2026, 22:06 CET': on the staff member's clock, the zone named."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = moment.astimezone(zone)
    return f"{local:%d %b %Y, %H:%M} {local.tzname() or timezone}"


def calendar_blocks(
    session: Session, company: Company, staff_ids: list[int] | None = None, now: datetime | None = None
) -> dict[int, CalendarBlock]:
    """The calendar block of each blocked staff member of the company (by staff id): the first
    blocking calendar, named, and how many more there are."""
    now = now or utcnow()
    settings = get_company_settings(company)
    stale_after = timedelta(hours=settings.stale_after_hours)
    blocking_stale = settings.stale_policy == "block"
    query = (
        select(Connection, Staff.name, Staff.timezone)
        .join(Staff, Staff.id == Connection.staff_id)
        .where(Connection.company_id == company.id)
        .order_by(Connection.id)
    )
    if staff_ids is not None:
        query = query.where(Connection.staff_id.in_(staff_ids))
    found: dict[int, CalendarBlock] = {}
    for conn, staff_name, timezone in session.execute(query).all():
        lifts_at: datetime | None = None
        if conn.last_success_at is None:
            new_until = conn.created_at + stale_after
            if now < new_until:
                lifts_at = None if blocking_stale else new_until
            elif not blocking_stale:
                continue  # stale, and the company books without stale calendars
        elif not (conn.status == ConnectionStatus.STALE and blocking_stale):
            continue
        first = found.get(conn.staff_id)
        if first is not None:  # another blocking calendar: counted, and the block lasts as long
            lifts = None if first.lifts_at is None or lifts_at is None else max(first.lifts_at, lifts_at)
            found[conn.staff_id] = replace(first, more=(*first.more, conn.id), lifts_at=lifts)
            continue
        found[conn.staff_id] = CalendarBlock(
            staff_id=conn.staff_id, staff_name=staff_name, connection_id=conn.id,
            connection_name=conn.name, added_at=conn.created_at,
            last_success_at=conn.last_success_at, reason=conn.last_error, lifts_at=lifts_at,
            timezone=timezone or "UTC",
        )
    return found


# The only connections that can block: never synced, or stale (calendar_blocks skips the
# others whatever the policy). Most staff have none, and availability asks on every request:
# one prebuilt, indexed query then answers, without loading the company or any connection.
_MIGHT_BLOCK = (
    select(Connection.id)
    .where(Connection.staff_id == bindparam("staff_id"),
           or_(Connection.last_success_at.is_(None), Connection.status == ConnectionStatus.STALE))
    .limit(1)
)


def calendar_block(session: Session, staff: Staff, now: datetime | None = None) -> CalendarBlock | None:
    if session.execute(_MIGHT_BLOCK, {"staff_id": staff.id}).first() is None:
        return None
    company = session.get(Company, staff.company_id)
    if company is None:
        return None
    return calendar_blocks(session, company, [staff.id], now).get(staff.id)
