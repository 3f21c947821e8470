"""The company: the tenant that owns staff, customers, appointments and settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow


class Company(Base):
    __tablename__ = "company"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Company-wide toggles, validated by feeds.company_settings.CompanySettings.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Bumped whenever something that every feed of the company depends on changes (settings,
    # the set of staff, group membership). Part of every feed version of the company.
    feed_epoch: Mapped[int] = mapped_column(Integer, default=1)
    feed_epoch_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
