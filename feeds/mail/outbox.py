"""The outbox (DESIGN.md): emails written in the same transaction as the change that causes them,
delivered later by feeds.mailer.

The outbox row is the source of truth. Whoever commits a transaction that wrote rows may ask
the queue to deliver right away (`take_written` tells them); a lost request only delays the
email until the next scheduled delivery run.

Functions here take the session only, so what the sender looks like (CALSYNC_MAIL_FROM, the
base URL for links) travels in `session.info`, set once on the session factory by the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.errors import CalsyncError, NotFoundError
from calsync.models import Company, OutboxEmail, utcnow

IDENTITY_KEY = "calsync.mail_identity"
WRITTEN_KEY = "calsync.outbox_written"
STATUSES = ("pending", "sent", "failed")


class AlreadySentError(CalsyncError):
    """A sent email is never sent again (retry of a sent email)."""


@dataclass(frozen=True)
class MailIdentity:
    from_address: str = "calsync@localhost"
    base_url: str | None = None


def configure_sessions(factory: sessionmaker[Session], identity: MailIdentity) -> None:
    """Every session of the factory knows the sender identity (session.info is per session)."""
    info: dict[Any, Any] = dict(factory.kw.get("info") or {})
    info[IDENTITY_KEY] = identity
    factory.configure(info=info)


def mail_identity(session: Session) -> MailIdentity:
    identity = session.info.get(IDENTITY_KEY)
    return identity if isinstance(identity, MailIdentity) else MailIdentity()


def add_email(session: Session, email: OutboxEmail) -> OutboxEmail | None:
    """Add the email unless one with its dedupe key exists; None when it was a duplicate.

    Checked with a read, not by catching the unique violation: a failed INSERT would break the
    caller's transaction (the booking). Two transactions cannot race here for the same
    appointment change: booking holds the staff member's write lock (feeds/booking.py), and
    the unique constraint stays as the backstop.
    """
    exists = session.scalar(select(OutboxEmail.id).where(OutboxEmail.dedupe_key == email.dedupe_key))
    if exists is not None:
        return None
    email.status = "pending"
    email.attempts = 0
    email.created_at = email.created_at or utcnow()
    session.add(email)
    session.info[WRITTEN_KEY] = True
    return email


def take_written(session: Session) -> bool:
    """True (once) when the session wrote outbox rows since this was last asked."""
    return bool(session.info.pop(WRITTEN_KEY, False))


def list_emails(
    session: Session, company: Company, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[OutboxEmail]:
    query = select(OutboxEmail).where(OutboxEmail.company_id == company.id)
    if status is not None:
        query = query.where(OutboxEmail.status == status)
    query = query.order_by(OutboxEmail.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def get_email(session: Session, company: Company, email_id: int) -> OutboxEmail:
    email = session.get(OutboxEmail, email_id)
    if email is None or email.company_id != company.id:
        raise NotFoundError(f"There is no email with id {email_id}.")
    return email


def retry_email(
    session: Session, company: Company, email_id: int, now: datetime | None = None
) -> OutboxEmail:
    """Make a failed (or waiting) email due now, with a fresh set of attempts.

    A lease held by a worker that is sending it right now is left alone, so a retry can never
    make two workers send the same email.
    """
    email = get_email(session, company, email_id)
    if email.status == "sent":
        raise AlreadySentError(
            f"Email {email_id} was already sent; calsync never sends the same email twice.")
    email.status = "pending"
    email.attempts = 0
    email.next_attempt_at = now or utcnow()
    session.info[WRITTEN_KEY] = True
    return email
