"""OAuth states issued for "Connect Google Calendar" / "Connect Outlook" (issues 11/12): one row
per consent screen opened, so that a callback is accepted once, across every worker.

The state itself travels sealed in the provider's redirect (feeds.calendars.providers.base:
staff member, provider, PKCE verifier, nonce); the row holds the nonce and what the callback
must agree with. `used_at` is set by one conditional UPDATE when the callback is accepted: a
second callback with the same state (a reload, a replay) finds it set and is refused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import OAuthPurpose, ProviderKind, state_column


class OAuthStateRecord(Base):
    __tablename__ = "oauth_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    provider: Mapped[ProviderKind] = mapped_column(state_column(ProviderKind, 16, "provider"))
    # Where the person returns: their self-service page or the admin's staff page.
    purpose: Mapped[OAuthPurpose] = mapped_column(state_column(OAuthPurpose, 16, "purpose"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
