"""Company-wide provider accounts (issues 11/12, the "corporate" mode): a Google Workspace
service account with domain-wide delegation, or a Microsoft 365 app registration with
application permissions, connected once by an admin for every staff member.

The credentials (the service account's JSON key; tenant, client id and secret) are one JSON
document sealed with the credentials key like a CalDAV password, and re-sealed by
`calsync rotate-credentials-key`. A staff member's calendar reached through the account is an
ordinary Connection row of kind google/microsoft with `company_account_id` set (no tokens of
its own); CompanyAccountMember keeps the last reachability check per staff member, which the
admin page shows as a sentence.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import CompanyAccountStatus, ProviderKind, state_column


class CompanyAccount(Base):
    __tablename__ = "company_account"
    # One account per provider and company: a second upload replaces the first.
    __table_args__ = (UniqueConstraint("company_id", "provider"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    provider: Mapped[ProviderKind] = mapped_column(state_column(ProviderKind, 16, "provider"))
    credentials_sealed: Mapped[str] = mapped_column(Text)
    # What the admin recognises it by, nothing secret: the service account's address, or
    # "<client id> in <tenant>".
    display: Mapped[str] = mapped_column(String(400))
    status: Mapped[CompanyAccountStatus] = mapped_column(
        state_column(CompanyAccountStatus, 16, "status"), default=CompanyAccountStatus.UNCHECKED
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CompanyAccountMember(Base):
    """The last check of one staff member's calendar through the company account."""

    __tablename__ = "company_account_member"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("company_account.id", ondelete="CASCADE"), primary_key=True
    )
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)
    address: Mapped[str] = mapped_column(String(320))  # the address checked (the staff email then)
    reachable: Mapped[bool] = mapped_column(Boolean)
    # The provider's reason when not: unauthorized_client, notFound, ErrorAccessDenied, ...
    problem: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
