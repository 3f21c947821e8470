"""Feed tokens and the two render caches behind published feeds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DDL, ForeignKey, Index, Integer, LargeBinary, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import FeedScope, PrivacyLevel, state_column


class FeedToken(Base):
    """The secret in a feed URL. Only its hash is searchable; the token itself is kept
    encrypted with the application's key so an admin can see the URL again."""

    __tablename__ = "feed_token"
    # Deleting a staff member or group revokes its tokens by (scope, scope_id).
    __table_args__ = (Index("ix_feed_token_scope", "scope", "scope_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    scope: Mapped[FeedScope] = mapped_column(state_column(FeedScope, 16, "scope"))
    scope_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    privacy: Mapped[PrivacyLevel] = mapped_column(state_column(PrivacyLevel, 16, "privacy"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class FeedFragment(Base):
    """One appointment rendered as a VEVENT for one variant (privacy level and scope kind).

    Valid while `revision_key` matches the appointment's revision and the company's feed epoch,
    so a feed render re-serialises only appointments that changed.
    """

    __tablename__ = "feed_fragment"

    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointment.id", ondelete="CASCADE"), primary_key=True
    )
    variant: Mapped[str] = mapped_column(String(32), primary_key=True)
    revision_key: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


class FeedSegment(Base):
    """The VEVENTs of one staff member's appointments in a feed window, for one variant.

    A feed body is its header plus one segment per staff member in scope, so a change to one
    appointment re-reads one staff member's fragments, not the whole company's. Keyed by the
    staff member's feed revision, so every process can share it without going stale.
    """

    __tablename__ = "feed_segment"

    segment_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    # Everything in the key but the revision: lets a new segment delete its older versions.
    family: Mapped[str] = mapped_column(String(150), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# PostgreSQL compresses a large value (TOAST) with pglz unless told otherwise, and a 300 kB
# segment took ~4 ms of the server's CPU to write that way, on the machine that serves the
# next request; lz4 (PostgreSQL 14 and later, where built with it) took ~1 ms for the same size
# on disk (issue 17, docs/scale.md). Where it is not available the column keeps the default.
# Migration 0017 repeats this text.
SEGMENT_LZ4_SQL = """
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        EXECUTE 'ALTER TABLE feed_segment ALTER COLUMN body SET COMPRESSION lz4';
    END IF;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- a server built without lz4
END $$
"""
event.listen(FeedSegment.__table__, "after_create", DDL(SEGMENT_LZ4_SQL).execute_if(dialect="postgresql"))
