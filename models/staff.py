"""Staff members and groups of staff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from calsync.models.base import Base, UTCDateTime, utcnow

group_member = Table(
    "group_member",
    Base.metadata,
    Column("group_id", ForeignKey("staff_group.id", ondelete="CASCADE"), primary_key=True),
    Column("staff_id", ForeignKey("staff.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # {"mon": [["09:00", "17:00"]], ...} in the staff member's own time zone.
    working_hours: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Bumped in the same transaction as any change to this staff member or their appointments.
    # Feed versions are sums of these counters: a cheap, multi-process-safe change detector.
    # The UPDATE that bumps it doubles as the per-staff write lock for booking.
    feed_revision: Mapped[int] = mapped_column(Integer, default=1)
    feed_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Per-staff opt-out of bidirectional sync (the company toggle turns it on for everyone).
    bidirectional_opt_out: Mapped[bool] = mapped_column(default=False, server_default=false())
    # When they opted out (self-service page), shown to the admin; None while two-way applies.
    bidirectional_opt_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Part of every self-service connect link (feeds.connect_links); a new value revokes them all.
    connect_nonce: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    groups: Mapped[list[Group]] = relationship(
        secondary=group_member, back_populates="members", lazy="selectin"
    )


class Group(Base):
    __tablename__ = "staff_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[Staff]] = relationship(
        secondary=group_member, back_populates="groups", lazy="selectin", order_by="Staff.id"
    )
