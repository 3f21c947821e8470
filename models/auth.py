"""Admin users of the web UI, their failed-login counters, and API keys of the JSON API."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow


class AdminUser(Base):
    __tablename__ = "admin_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Part of every login session's id (web/admin): bumping it ends all of this admin's
    # sessions at their next request, even a copied cookie (logout, password change, disabling).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # cannot log in when set


class LoginThrottle(Base):
    """Failed admin logins of one email or one client address (feeds.login_lockout).

    In the database, not in process memory, so the limit holds across workers and machines.
    """

    __tablename__ = "login_throttle"

    # SHA-256 of "account:<email> from:<ip>" or "address:<ip>": a fixed size whatever an
    # attacker types.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The key is shown once; only its SHA-256 is kept (keys are 256-bit random, no slow hash needed).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
