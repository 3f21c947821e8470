"""Two-way sync and customer email: the outbox, appointment history, conflicts, and the state of
each appointment's copy in a staff member's linked or additional calendar."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import (
    ChangeAction,
    ChangeSource,
    ConflictResolution,
    ConflictStatus,
    ItipMethod,
    LinkedItemState,
    OutboxKind,
    OutboxStatus,
    state_column,
)


class OutboxEmail(Base):
    """An email written in the same transaction as the change that causes it, sent later.

    (uid, sequence, kind) is unique: the same change can never be emailed twice, whichever
    worker picks it up or however often delivery is retried.
    """

    __tablename__ = "outbox_email"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_outbox_email_dedupe_key"),
        Index("ix_outbox_email_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    appointment_id: Mapped[int | None] = mapped_column(
        ForeignKey("appointment.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[OutboxKind] = mapped_column(state_column(OutboxKind, 32, "kind"))
    method: Mapped[ItipMethod | None] = mapped_column(state_column(ItipMethod, 16, "method"))
    uid: Mapped[str | None] = mapped_column(String(255))
    sequence: Mapped[int | None] = mapped_column(Integer)
    dedupe_key: Mapped[str] = mapped_column(String(400))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    # The whole RFC 5322 message; None while the email is a draft (feeds/mail/drafts.py: a
    # customer's appointment email is built when it is delivered, from `draft`).
    message: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    draft: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # True: `message` is sealed with the credentials vault because it carries secret links
    # (feeds.mail.outbox); after delivery the secret body is dropped and this is False again.
    message_sealed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[OutboxStatus] = mapped_column(
        state_column(OutboxStatus, 16, "status"), default=OutboxStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AppointmentChange(Base):
    """One applied change of an appointment: what, from where, by whom."""

    __tablename__ = "appointment_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id", ondelete="CASCADE"), index=True)
    action: Mapped[ChangeAction] = mapped_column(state_column(ChangeAction, 32, "action"))
    source: Mapped[ChangeSource] = mapped_column(state_column(ChangeSource, 32, "source"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sequence: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LinkedItem(Base):
    """The copy of one appointment in one linked/additional calendar, and what we last knew of
    it: the sync state two-way sync compares against (href, ETag, content hash)."""

    __tablename__ = "linked_item"
    __table_args__ = (UniqueConstraint("connection_id", "appointment_id", name="uq_linked_item_conn_appt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"), index=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id", ondelete="CASCADE"), index=True)
    href: Mapped[str | None] = mapped_column(String(1000))
    etag: Mapped[str | None] = mapped_column(String(300))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # The appointment as it was when the calendar copy was last in step with it.
    pushed_revision: Mapped[int] = mapped_column(Integer, default=0)
    pushed_sequence: Mapped[int] = mapped_column(Integer, default=0)
    synced_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[LinkedItemState] = mapped_column(
        state_column(LinkedItemState, 16, "state"), default=LinkedItemState.PENDING
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conflict(Base):
    """A calendar-side change that was not applied: both sides changed, or the move collides."""

    __tablename__ = "sync_conflict"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id", ondelete="CASCADE"), index=True)
    # Indexed: deleting a connection sets this to NULL, which must not scan every conflict.
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connection.id", ondelete="SET NULL"), index=True
    )
    reason: Mapped[str] = mapped_column(Text)
    calendar_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    calendar_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    calendar_deleted: Mapped[bool] = mapped_column(default=False)
    platform_start: Mapped[datetime] = mapped_column(UTCDateTime)
    platform_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[ConflictStatus] = mapped_column(
        state_column(ConflictStatus, 16, "status"), default=ConflictStatus.OPEN
    )
    resolution: Mapped[ConflictResolution | None] = mapped_column(
        state_column(ConflictResolution, 16, "resolution")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
