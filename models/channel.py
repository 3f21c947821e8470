"""Change-notification channels of provider connections (issues 11/12): a Google `events.watch`
channel or a Microsoft Graph subscription, one live row per connection in realtime mode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import ChannelProvider, state_column


class ProviderChannel(Base):
    """One channel/subscription. The secret the provider echoes (Google's channel token,
    Graph's clientState) is stored only as a SHA-256 hash: a leaked database cannot forge
    notifications. A stopped channel keeps its row (stopped_at) until the connection goes, so a
    late notification for it is recognised and ignored rather than logged as forged."""

    __tablename__ = "provider_channel"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"), index=True)
    provider: Mapped[ChannelProvider] = mapped_column(state_column(ChannelProvider, 16, "provider"))
    # Google: the channel id we chose; Graph: the subscription id Graph chose.
    channel_id: Mapped[str] = mapped_column(String(200), unique=True)
    # Google: resourceId (channels.stop needs it); Graph: the subscribed resource path.
    resource_id: Mapped[str | None] = mapped_column(String(500))
    secret_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # De-duplication. Google numbers its messages per channel (X-Goog-Message-Number, rising);
    # Graph does not, so the keys of its latest notifications are kept (a bounded list).
    last_message_number: Mapped[int | None] = mapped_column(BigInteger)
    recent_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Set by a notification, cleared when its sync starts: a burst queues one sync, not many.
    sync_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
