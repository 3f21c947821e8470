"""The outbox (docs/architecture.md): emails written in the same transaction as the change that causes them,
delivered later by feeds.mailer.

The outbox row is the source of truth. Whoever commits a transaction that wrote rows may ask
the queue to deliver right away (`take_written` tells them); a lost request only delays the
email until the next scheduled delivery run.

Functions here take the session only, so what the sender looks like (CALSYNC_MAIL_FROM, the
base URL for links) travels in `session.info`, set once on the session factory by the app.

Secrets at rest: an email that carries secret links (an invitation: its connect link and feed
URLs open a staff member's page and calendar) is written sealed (`add_email(..., secret=True)`)
with the sealer in the identity — the credentials vault, whose key is not in the database — so
a copy of the database does not hold them. Delivery opens it, and once the email is sent its
body is dropped (feeds.mail.delivery): the headers stay for the outbox page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker

from calsync.feeds.errors import CalsyncError
from calsync.feeds.lookup import get_owned
from calsync.feeds.mail.drafts import compose
from calsync.models import Company, OutboxEmail, OutboxStatus, utcnow

IDENTITY_KEY = "calsync.mail_identity"
WRITTEN_KEY = "calsync.outbox_written"
STATUSES = tuple(OutboxStatus)


class AlreadySentError(CalsyncError):
    """A sent email is never sent again (retry of a sent email)."""


class MessageSealer(Protocol):
    """Authenticated encryption of a message (feeds.accounts.credentials.Vault)."""

    def seal(self, secret: str) -> str: ...

    def open(self, sealed: str) -> str: ...


class NoSealerError(CalsyncError):
    """An email with secrets was to be written by a session that cannot seal it."""


@dataclass(frozen=True)
class MailIdentity:
    from_address: str = "calsync@localhost"
    base_url: str | None = None
    sealer: MessageSealer | None = None  # seals emails that carry secrets


def configure_sessions(factory: sessionmaker[Session], identity: MailIdentity) -> None:
    """Every session of the factory knows the sender identity (session.info is per session)."""
    info: dict[Any, Any] = dict(factory.kw.get("info") or {})
    info[IDENTITY_KEY] = identity
    factory.configure(info=info)


def mail_identity(session: Session) -> MailIdentity:
    identity = session.info.get(IDENTITY_KEY)
    return identity if isinstance(identity, MailIdentity) else MailIdentity()


def add_email(session: Session, email: OutboxEmail, *, secret: bool = False) -> OutboxEmail | None:
    """Add the email unless one with its dedupe key exists; None when it was a duplicate.

    `secret`: the message carries secret links; it is stored sealed (module docstring).

    One INSERT that does nothing on a duplicate key (no read first, and no failed INSERT that
    would break the caller's transaction, the booking); the row is then the email's, attached
    to the session as if loaded. Two transactions cannot race here for the same appointment
    change (booking holds the staff member's write lock, feeds/booking.py); were they to, the
    second waits for the first and inserts nothing.
    """
    email.status = OutboxStatus.PENDING
    email.attempts = 0
    email.created_at = email.created_at or utcnow()
    email.message_sealed = secret
    if secret:
        # Drafts (feeds/mail/drafts.py) carry no secrets: only finished messages are sealed.
        if email.message is None:
            raise NoSealerError("Only a finished message can be sealed; this email is a draft.")
        email.message = seal_message(session, email.message)
    insert_new = _INSERT_NEW.get(session.get_bind().dialect.name)
    if insert_new is None:  # pragma: no cover - other dialects: read, then add
        if session.scalar(select(OutboxEmail.id).where(OutboxEmail.dedupe_key == email.dedupe_key)):
            return None
        session.add(email)
    else:
        values = {c.key: getattr(email, c.key) for c in _COLUMNS}
        new_id = session.execute(insert_new, values).scalar()
        if new_id is None:
            return None
        for key, value in values.items():  # each column loaded (None where unset), none expired
            setattr(email, key, value)
        email.id = new_id
        # Persistent without a second statement: what was inserted is what the object holds.
        make_transient_to_detached(email)
        session.add(email)
    session.info[WRITTEN_KEY] = True
    return email


_OUTBOX: Any = OutboxEmail.__table__
_COLUMNS = [c for c in _OUTBOX.columns if c.key != "id"]
# Built once, per dialect: Core, not the ORM's unit of work (issue 17: the flush of one row
# cost more than the statement).
_INSERT_NEW = {
    name: make(_OUTBOX).on_conflict_do_nothing(index_elements=[_OUTBOX.c.dedupe_key])
    .returning(_OUTBOX.c.id)
    for name, make in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


def seal_message(session: Session, message: bytes) -> bytes:
    sealer = mail_identity(session).sealer
    if sealer is None:
        raise NoSealerError(
            "This email carries secret links and cannot be stored unsealed; the app configures "
            "its sessions with the credentials vault (configure_sessions).")
    # The message is 7-bit (feeds.mail.mime); latin-1 maps any byte to one character and back.
    return sealer.seal(message.decode("latin-1")).encode("ascii")


def open_message(sealer: MessageSealer | None, message: bytes, sealed: bool) -> bytes:
    """The stored message as it is sent; raises if it is sealed and cannot be opened."""
    if not sealed:
        return message
    if sealer is None:
        raise NoSealerError("This email is sealed, and this session has no key to open it.")
    return sealer.open(message.decode("ascii")).encode("latin-1")


def stored_message(sealer: MessageSealer | None, message: bytes | None, sealed: bool,
                   draft: dict[str, Any] | None) -> bytes:
    """The message of an outbox row as it is sent: its draft built (the same bytes each time),
    or its message, opened if sealed."""
    if message is None:
        if draft is None:
            raise ValueError("This outbox email has neither a message nor a draft.")
        return compose(draft)
    return open_message(sealer, bytes(message), sealed)


def readable_message(session: Session, email: OutboxEmail) -> bytes:
    """The message of an outbox row in the clear (sealed ones opened with the session's
    sealer, drafts built)."""
    return stored_message(mail_identity(session).sealer, email.message, email.message_sealed, email.draft)


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
    return get_owned(session, OutboxEmail, email_id, company, "email")


def retry_email(
    session: Session, company: Company, email_id: int, now: datetime | None = None
) -> OutboxEmail:
    """Make a failed (or waiting) email due now, with a fresh set of attempts.

    A lease held by a worker that is sending it right now is left alone, so a retry can never
    make two workers send the same email.
    """
    email = get_email(session, company, email_id)
    if email.status == OutboxStatus.SENT:
        raise AlreadySentError(
            f"Email {email_id} was already sent; calsync never sends the same email twice.")
    email.status = OutboxStatus.PENDING
    email.attempts = 0
    email.next_attempt_at = now or utcnow()
    session.info[WRITTEN_KEY] = True
    return email
