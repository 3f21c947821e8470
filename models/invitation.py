"""Staff invitations: one row per invitation email sent to a staff member."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow


class Invitation(Base):
    """An invitation email to a staff member ("Invite to sync") and what became of its link.

    The connect link itself is never stored: it is a sealed token that names this row's id
    (feeds.connect_links), so opening the link and connecting a calendar through it can be
    recorded here, and revoking this row stops that one link. Each send or re-send is a row of
    its own, with its own outbox email and its own link.
    """

    __tablename__ = "staff_invitation"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))  # where it was sent (the staff email may change)
    subject: Mapped[str] = mapped_column(String(300))  # as the admin wrote it, placeholders unfilled
    body: Mapped[str] = mapped_column(Text)
    outbox_email_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbox_email.id", ondelete="SET NULL"), index=True
    )
    created_by: Mapped[int | None] = mapped_column(ForeignKey("admin_user.id", ondelete="SET NULL"))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # written to the outbox
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when its link stops working
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first visit through the link
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first calendar connected with it
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
