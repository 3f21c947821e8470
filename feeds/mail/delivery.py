"""Deliver the outbox over SMTP: lease an email, send it, record the outcome.

Why a lease and not a queue lock (the same reasoning as feeds/sync.py): two workers (two
deliver jobs, two machines) may look at the same due emails. Each takes an email with one
conditional UPDATE (atomic on SQLite and PostgreSQL alike), so only one of them sends it, and
a worker killed mid-send only holds it until the lease expires. The lease is much longer than
one SMTP exchange can take (see SmtpConfig.timeout), so it never runs out under a live worker.

What this cannot promise: if the mail server accepted an email and the worker died before
marking it sent, it is sent again after the lease. Its Message-ID is stored with it and
repeated, so receiving systems can recognise the duplicate.

No transaction is open while the network is used.

An email stored sealed (it carries secret links, feeds.mail.outbox) is opened only to be sent;
once sent, its body is replaced by a note (feeds.mail.mime.without_body), so the secrets do not
outlive their delivery in the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.mail.mime import without_body
from calsync.feeds.mail.outbox import MessageSealer, mail_identity, stored_message
from calsync.feeds.mail.smtp import DeliveryError, SmtpConfig, SmtpSender
from calsync.models import OutboxEmail, OutboxStatus, utcnow

log = logging.getLogger("calsync.mailer")
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=6)


@dataclass(frozen=True)
class MailContext:
    sessions: sessionmaker[Session]
    smtp: SmtpConfig | None  # None: CALSYNC_SMTP_URL unset, emails wait in the outbox
    max_attempts: int = 8
    lease_seconds: int = 600
    batch_size: int = 100


@dataclass
class DeliveryReport:
    sent: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    not_configured: bool = False


@dataclass(frozen=True)
class _Leased:
    id: int
    to_address: str
    stored: bytes | None  # as in the outbox row: sealed or not; None for a draft
    sealed: bool
    draft: dict[str, Any] | None  # what a draft's message is built from (feeds/mail/drafts.py)
    subject: str
    sealer: MessageSealer | None

    def message(self) -> bytes:
        """The message to send (raises when a sealed one cannot be opened with the keys, or a
        draft cannot be built)."""
        return stored_message(self.sealer, self.stored, self.sealed, self.draft)


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4 … minutes after the 1st, 2nd, 3rd … failed attempt, at most 6 hours: a mail
    server down for a restart is caught quickly, one down for a day is not hammered."""
    return min(FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 20), MAX_RETRY)


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        OutboxEmail.status == OutboxStatus.PENDING,
        or_(OutboxEmail.next_attempt_at.is_(None), OutboxEmail.next_attempt_at <= now),
        or_(OutboxEmail.lease_until.is_(None), OutboxEmail.lease_until < now),
    )


def due_email_ids(ctx: MailContext, now: datetime, limit: int | None = None) -> list[int]:
    with ctx.sessions() as session:
        return list(session.scalars(
            select(OutboxEmail.id).where(*_due(now)).order_by(OutboxEmail.id)
            .limit(limit or ctx.batch_size)
        ))


def _lease(ctx: MailContext, email_id: int, now: datetime) -> _Leased | None:
    with ctx.sessions.begin() as session:
        taken = session.execute(
            update(OutboxEmail).where(OutboxEmail.id == email_id, *_due(now))
            .values(lease_until=now + timedelta(seconds=ctx.lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None  # another worker has it, or it was sent, or it is no longer due
        row = session.execute(
            select(OutboxEmail.to_address, OutboxEmail.message, OutboxEmail.message_sealed,
                   OutboxEmail.draft, OutboxEmail.subject).where(OutboxEmail.id == email_id)
        ).one()
        return _Leased(email_id, row.to_address, None if row.message is None else bytes(row.message),
                       bool(row.message_sealed), row.draft, row.subject, mail_identity(session).sealer)


def _envelope_sender(message: bytes, fallback: str) -> str:
    """MAIL FROM is the From of the stored message: the address that is also the ORGANIZER
    (feeds/itip.py), even if CALSYNC_MAIL_FROM changed since the email was written."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(message)
    try:
        addresses = headers["From"].addresses
        return str(addresses[0].addr_spec) if addresses else fallback
    except (AttributeError, IndexError, TypeError):
        return fallback


def _record_sent(ctx: MailContext, leased: _Leased, message: bytes, now: datetime) -> None:
    done: dict[str, object] = {}
    if leased.stored is None:
        # A draft, built to be sent: the row keeps what went out (the outbox page, a bounce
        # matched by its Message-ID), as for an email written whole.
        done = {"message": message, "draft": None}
    elif leased.sealed:
        # Sent: the secret links are not needed any more (module docstring).
        done = {"message": without_body(message, leased.subject), "message_sealed": False}
    with ctx.sessions.begin() as session:
        session.execute(
            update(OutboxEmail).where(OutboxEmail.id == leased.id)
            # The successful attempt counts too: "2 attempts" on a sent email means it failed
            # once and then went out, as in a mail client's delivery report.
            .values(status=OutboxStatus.SENT, sent_at=now, lease_until=None, next_attempt_at=None,
                    last_error=None, attempts=OutboxEmail.attempts + 1, **done)
            .execution_options(synchronize_session=False)
        )


def _record_failure(ctx: MailContext, email_id: int, error: DeliveryError, now: datetime) -> bool:
    """Count the attempt; True when the email is given up (status failed)."""
    with ctx.sessions.begin() as session:
        email = session.get(OutboxEmail, email_id)
        if email is None:
            return False
        email.attempts += 1
        email.last_error = str(error)
        email.lease_until = None
        if error.permanent or email.attempts >= ctx.max_attempts:
            email.status = OutboxStatus.FAILED
            email.next_attempt_at = None
            return True
        email.next_attempt_at = now + retry_delay(email.attempts)
        return False


def deliver_due(ctx: MailContext, *, now: datetime | None = None) -> DeliveryReport:
    """Send the emails that are due, each by at most one worker; return what happened."""
    report = DeliveryReport()
    if ctx.smtp is None:
        report.not_configured = True
        return report
    sender_fallback = "calsync@localhost"
    with SmtpSender(ctx.smtp) as smtp:
        for email_id in due_email_ids(ctx, now or utcnow()):
            moment = now or utcnow()
            leased = _lease(ctx, email_id, moment)
            if leased is None:
                continue
            try:
                message = leased.message()
                smtp.send(_envelope_sender(message, sender_fallback), leased.to_address, message)
            except DeliveryError as exc:
                gave_up = _record_failure(ctx, email_id, exc, moment)
                report.failed_attempts += 1
                report.gave_up += gave_up
                # The error names the server, never the recipient or a password.
                log.warning("email %s not delivered%s: %s", email_id,
                            " (giving up)" if gave_up else "", exc)
                continue
            except Exception:
                # A bug must not leave the email leased until the lease expires, nor stop the batch.
                log.exception("email %s: unexpected error while sending", email_id)
                _record_failure(ctx, email_id, DeliveryError(
                    "The email could not be sent because of an internal error; it will be retried."), moment)
                report.failed_attempts += 1
                continue
            _record_sent(ctx, leased, message, moment)
            report.sent += 1
    if report.sent or report.failed_attempts:
        log.info("outbox: %d sent, %d failed attempts, %d given up (mail server %s)",
                 report.sent, report.failed_attempts, report.gave_up, ctx.smtp.display)
    return report
