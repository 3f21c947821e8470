"""Login throttling: repeated failed admin logins slow down whoever makes them, for a while.

Two counters per attempt: one for the account typed *from this client address* (a guessed
password on one account) and one for the client address alone (one machine trying many
accounts). There is no counter of the account alone: it would let anyone lock the real admin
out with five wrong passwords from anywhere, and keep them out with one more attempt per lock
expiry (OWASP Authentication Cheat Sheet, "Account lockout": throttle the attacker, not the
account). An attacker spread over many addresses is slowed by the per-address counters and by
the password hash's cost.

A counter that reaches its limit locks for a minute, then twice as long with each further
failure, at most an hour; it starts again after a quiet quarter of an hour. Unknown emails are
counted like known ones, so a lockout never tells which accounts exist.

The counters live in the database (models.LoginThrottle), not in a process: the limit holds
whichever worker or machine answers the next attempt. Keys are hashed, so whatever is typed into
the email field costs one fixed-size row, and old rows are pruned on the way.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from calsync.models import LoginThrottle, utcnow

EMAIL_LIMIT = 5
ADDRESS_LIMIT = 20
QUIET = timedelta(minutes=15)
FIRST_LOCK = timedelta(minutes=1)
MAX_LOCK = timedelta(hours=1)


def _keys(email: str, address: str | None) -> list[tuple[str, int]]:
    """(key, limit) of the counters an attempt counts on: the account from this address, and
    the address. Without a known address (no REMOTE_ADDR) every such attempt shares one."""
    where = address or "unknown"
    return [
        (_digest(f"account:{email.strip().lower()} from:{where}"), EMAIL_LIMIT),
        (_digest("address:" + where), ADDRESS_LIMIT),
    ]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def lock_duration(failures: int, limit: int) -> timedelta | None:
    """How long `failures` consecutive failures lock a counter with this limit (None: not)."""
    if failures < limit:
        return None
    return min(FIRST_LOCK * 2 ** min(failures - limit, 10), MAX_LOCK)


def locked_for(
    session: Session, email: str, address: str | None, now: datetime | None = None
) -> timedelta | None:
    """The time left before this email may try again from this address, or None (not locked)."""
    now = now or utcnow()
    keys = [key for key, _limit in _keys(email, address)]
    until = [
        moment for moment in session.scalars(
            select(LoginThrottle.locked_until).where(
                LoginThrottle.key.in_(keys), LoginThrottle.locked_until > now
            )
        )
        if moment is not None
    ]
    return max(until) - now if until else None


def record_login_failure(
    session: Session, email: str, address: str | None, now: datetime | None = None
) -> None:
    """Count a failed login for the email and the address, locking a counter at its limit.

    The increment is one UPDATE, so two processes failing at once both count.
    """
    now = now or utcnow()
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < now - QUIET - MAX_LOCK,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )
    for key, limit in _keys(email, address):
        counted = session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key, LoginThrottle.last_failure_at >= now - QUIET)
            .values(failures=LoginThrottle.failures + 1, last_failure_at=now)
            .execution_options(synchronize_session=False)
        )
        if counted.rowcount != 1:  # type: ignore[attr-defined]
            _restart(session, key, now)
        failures = session.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == key)) or 1
        duration = lock_duration(failures, limit)
        if duration is not None:
            session.execute(
                update(LoginThrottle).where(LoginThrottle.key == key)
                .values(locked_until=now + duration)
                .execution_options(synchronize_session=False)
            )


def _restart(session: Session, key: str, now: datetime) -> None:
    """Start the counter at one: a new key, or one whose last failure is long enough ago."""
    reset = session.execute(
        update(LoginThrottle).where(LoginThrottle.key == key)
        .values(failures=1, last_failure_at=now, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if reset.rowcount == 1:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(LoginThrottle(key=key, failures=1, last_failure_at=now))
    except IntegrityError:  # another process inserted it first: count on its row
        session.execute(
            update(LoginThrottle).where(LoginThrottle.key == key)
            .values(failures=LoginThrottle.failures + 1, last_failure_at=now)
            .execution_options(synchronize_session=False)
        )


def clear_login_failures(session: Session, email: str, address: str | None) -> None:
    """Forget the account's failures from this address after a successful login (the address
    keeps its count)."""
    key, _limit = _keys(email, address)[0]
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))


def describe_wait(wait: timedelta) -> str:
    """'1 minute', '12 minutes': the rounded-up wait, for the message on the login page."""
    minutes = max(1, -(-int(wait.total_seconds()) // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
