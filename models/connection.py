"""Connections to staff members' external calendars, the busy blocks read from them, the sync
state per remote item, and alerts about connections that keep failing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import (
    AlertKind,
    AllDayPolicy,
    ConnectionKind,
    ConnectionStatus,
    SyncMode,
    state_column,
)


class Connection(Base):
    __tablename__ = "connection"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ConnectionKind] = mapped_column(state_column(ConnectionKind, 16, "kind"))
    name: Mapped[str] = mapped_column(String(200))
    # The URL can itself be the secret (a "secret address in iCal format"): stored sealed with
    # the credentials key, shown only as url_display with the secret parts cut out.
    url_sealed: Mapped[str] = mapped_column(Text)
    url_display: Mapped[str] = mapped_column(String(300))
    username: Mapped[str | None] = mapped_column(String(320))
    password_sealed: Mapped[str | None] = mapped_column(Text)
    # Google / Microsoft (feeds.calendars.provider_access): the OAuth tokens as one JSON
    # document sealed with the credentials key like a CalDAV password (rotated with it); the
    # account that consented and the calendar's id at the provider. The provider's change
    # token (syncToken / deltaLink) lives in sync_token like a CalDAV one.
    tokens_sealed: Mapped[str | None] = mapped_column(Text)
    account_email: Mapped[str | None] = mapped_column(String(320))
    remote_calendar_id: Mapped[str | None] = mapped_column(String(1000))
    colour: Mapped[str | None] = mapped_column(String(16))
    access_role: Mapped[str | None] = mapped_column(String(32))  # owner | writer | reader | ...
    # Reached through the company-wide account (models.company_account) instead of the staff
    # member's own consent: no tokens of its own; account_email is the address acted as.
    company_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("company_account.id", ondelete="CASCADE"), index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)  # models.enums.Role values
    sync_mode: Mapped[SyncMode] = mapped_column(
        state_column(SyncMode, 16, "sync_mode"), default=SyncMode.INTERVAL
    )
    interval_minutes: Mapped[int] = mapped_column(Integer, default=30)
    all_day: Mapped[AllDayPolicy] = mapped_column(
        state_column(AllDayPolicy, 8, "all_day"), default=AllDayPolicy.BUSY
    )
    treat_all_busy: Mapped[bool] = mapped_column(Boolean, default=False)
    writable: Mapped[bool | None] = mapped_column(Boolean)

    # Health.
    status: Mapped[ConnectionStatus] = mapped_column(
        state_column(ConnectionStatus, 16, "status"), default=ConnectionStatus.PENDING
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_kind: Mapped[str | None] = mapped_column(String(32))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    busy_count: Mapped[int] = mapped_column(Integer, default=0)

    # Change detection: HTTP validators and a hash of the last body (ICS), sync token and CTag
    # (CalDAV). An unchanged calendar costs a request, not a parse.
    http_etag: Mapped[str | None] = mapped_column(String(300))
    http_last_modified: Mapped[str | None] = mapped_column(String(100))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    sync_token: Mapped[str | None] = mapped_column(Text)
    ctag: Mapped[str | None] = mapped_column(String(300))
    # The window the busy blocks were computed for; a moved window forces a fresh expansion.
    window_key: Mapped[str | None] = mapped_column(String(32))

    # Scheduling and the sync lease (see feeds/sync.py for why a lease and not a queue lock).
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BusyBlock(Base):
    """One busy interval read from a connection. Times only: no title, no attendees."""

    __tablename__ = "busy_block"
    __table_args__ = (Index("ix_busy_block_staff_start", "staff_id", "start_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connection.id", ondelete="CASCADE"), index=True
    )
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    # For CalDAV: the item it came from, so an incremental sync replaces just that item's blocks.
    item_href: Mapped[str | None] = mapped_column(String(1000))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BusyTimeline(Base):
    """A connection's busy blocks merged into sorted, disjoint spans, packed as little-endian
    int64 pairs of UTC epoch seconds (feeds.calendars.busy_timeline). Written whenever the
    connection's blocks are, in the same transaction; availability and the booking check read
    this one row instead of thousands of busy_block rows (issue 17: 5,000 rows took longer to
    read than the whole availability answer may take)."""

    __tablename__ = "busy_timeline"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connection.id", ondelete="CASCADE"), primary_key=True
    )
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    spans: Mapped[bytes] = mapped_column(LargeBinary)


class SyncItem(Base):
    """Sync state of one remote item: what two-way sync compares against (vdirsyncer's status)."""

    __tablename__ = "sync_item"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connection.id", ondelete="CASCADE"), primary_key=True
    )
    href: Mapped[str] = mapped_column(String(1000), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(300))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    uid: Mapped[str | None] = mapped_column(String(500))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Alert(Base):
    """One episode of a connection failing or going stale; closed when it syncs again."""

    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connection.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[AlertKind] = mapped_column(state_column(AlertKind, 16, "kind"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
