"""Every state and kind a row holds, as one StrEnum each, and the column type that stores them.

Members equal their strings ("ok" == ConnectionStatus.OK), so code comparing with plain strings
keeps working; the column stays a VARCHAR and the database refuses any other value through a
named CHECK constraint (ck_<table>_<column>), the same one migration 0008 adds.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum


class AppointmentStatus(StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class ConnectionKind(StrEnum):
    """How a staff member's calendar is reached. GOOGLE and MICROSOFT: the providers' own APIs,
    connected through OAuth (feeds.calendars.provider_access)."""

    ICS = "ics"
    CALDAV = "caldav"
    GOOGLE = "google"
    MICROSOFT = "microsoft"


class ProviderKind(StrEnum):
    """The calendar providers connected through OAuth (a subset of ConnectionKind)."""

    GOOGLE = "google"
    MICROSOFT = "microsoft"


class CompanyAccountStatus(StrEnum):
    """A company-wide provider account (models.company_account): UNCHECKED until its first
    check, ERROR when the provider refused the account itself (not one staff member)."""

    UNCHECKED = "unchecked"
    OK = "ok"
    ERROR = "error"


class OAuthPurpose(StrEnum):
    """Where an OAuth consent was started, and so where its callback returns."""

    SELF_SERVICE = "self_service"
    ADMIN = "admin"


class ConnectionStatus(StrEnum):
    """Health of a connection: PENDING until its first sync, STALE when it has not synced for
    longer than the company allows (feeds.calendars.health)."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"
    STALE = "stale"


class Role(StrEnum):
    """What a connected calendar is for: CONFLICT calendars block bookings with their busy time;
    bookings are written into LINKED (two-way) and ADDITIONAL (one-way) calendars."""

    CONFLICT = "conflict"
    LINKED = "linked"
    ADDITIONAL = "additional"


# The roles for which calsync writes into the calendar (so it must be writable CalDAV).
WRITE_ROLES = frozenset({Role.LINKED, Role.ADDITIONAL})


class SyncMode(StrEnum):
    REALTIME = "realtime"
    INTERVAL = "interval"
    MANUAL = "manual"


class ChannelProvider(StrEnum):
    """Whose change notifications a provider channel receives (models.channel)."""

    GOOGLE = "google"
    MICROSOFT = "microsoft"


class AllDayPolicy(StrEnum):
    """Whether an all-day event of a subscribed calendar blocks the day."""

    BUSY = "busy"
    IGNORE = "ignore"


class FeedScope(StrEnum):
    STAFF = "staff"
    GROUP = "group"
    COMPANY = "company"


class PrivacyLevel(StrEnum):
    """What a feed shows of an appointment: everything, no customer details, or busy only."""

    FULL = "full"
    LIMITED = "limited"
    BUSY = "busy"


class AlertKind(StrEnum):
    FAILING = "failing"
    STALE = "stale"


class LinkedItemState(StrEnum):
    """The appointment's copy in a linked/additional calendar. CONFLICT: the calendar changed it
    in a way that was not applied; no push until an admin decides."""

    PENDING = "pending"
    SYNCED = "synced"
    DELETED = "deleted"
    ERROR = "error"
    CONFLICT = "conflict"


class ConflictStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class ConflictResolution(StrEnum):
    """Which version an admin kept."""

    PLATFORM = "platform"
    CALENDAR = "calendar"


class ChangeAction(StrEnum):
    """What happened to an appointment. RESTORED: the staff calendar's copy was put back as the
    platform has it; the customer's appointment did not change."""

    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    RESTORED = "restored"


class ChangeSource(StrEnum):
    """Where a change of an appointment came from."""

    API = "api"
    ADMIN = "admin"
    CALENDAR = "calendar"
    CONFLICT = "conflict"
    DEMO = "demo"
    GOOGLE = "google"  # a move or deletion in a linked Google calendar
    MICROSOFT = "microsoft"  # the same in a linked Microsoft 365 / Outlook.com calendar


class OutboxKind(StrEnum):
    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    ALERT = "alert"
    CONFLICT = "conflict"
    INVITATION = "invitation"


class OutboxStatus(StrEnum):
    """PENDING: waiting to be sent (or no mail server is configured); FAILED: given up."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class ItipMethod(StrEnum):
    """The METHOD of an email's calendar part (RFC 5546 §1.4)."""

    REQUEST = "REQUEST"
    CANCEL = "CANCEL"


class InvitationState(StrEnum):
    """What became of an invitation's connect link; derived from its timestamps, not stored."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def state_column(enum: type[StrEnum], length: int, column: str) -> Enum:
    """A VARCHAR(length) holding one of the enum's values, with a CHECK constraint named after
    the column (ck_<table>_<column> by the naming convention of models.base).

    Not a native PostgreSQL ENUM: adding a value to a CHECK is one ALTER in a transaction, and
    SQLite has no ENUM at all. Values, not member names, are stored (values_callable).
    """
    return Enum(
        enum,
        name=column,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )
