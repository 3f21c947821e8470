"""Connection health: status, next sync time, backoff, and alert episodes.

An alert is opened once per episode (N consecutive failures, or no success for too long) and
closed by the next success, so an admin hears about a broken calendar once, not every minute:
a connection has at most one open alert, failing or stale.

A calendar that has never synced is new: whoever added it saw it checked on the page, and its
failures are shown there (and on Sync health) but not emailed, so adding five broken addresses
sends no mail. If it still has not synced when it turns stale (the company's
stale_after_hours after it was added), that stale alert is emailed — the same moment the
stale policy starts to decide whether it blocks bookings (feeds.scheduling.calendar_block).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import MIN_STALE_HOURS, get_company_settings
from calsync.feeds.mail.notifications import queue_alert_emails
from calsync.models import Alert, AlertKind, Company, Connection, ConnectionStatus, SyncMode

REALTIME_SECONDS = 60
MAX_BACKOFF = timedelta(hours=6)
# Realtime with a live change channel (feeds/calendars/channels.py): notifications bring the
# changes; this poll only catches the ones that never came.
PUSHED_POLL_SECONDS = 15 * 60
PUSH_UNTIL_KEY = "push_until"  # Connection.extra: expiry of the live channel, ISO 8601


def push_live(conn: Connection, now: datetime) -> bool:
    until = (conn.extra or {}).get(PUSH_UNTIL_KEY)
    try:
        return bool(until) and datetime.fromisoformat(str(until)) > now
    except ValueError:
        return False


def next_sync(conn: Connection, now: datetime) -> datetime | None:
    if conn.sync_mode == SyncMode.MANUAL:
        return None
    if conn.sync_mode == SyncMode.REALTIME:
        seconds = PUSHED_POLL_SECONDS if push_live(conn, now) else REALTIME_SECONDS
        return now + timedelta(seconds=seconds)
    return now + timedelta(minutes=max(1, conn.interval_minutes))


def _backoff(conn: Connection, now: datetime) -> datetime | None:
    """Retry sooner than the interval at first, then back off exponentially (1, 2, 4 … min)."""
    regular = next_sync(conn, now)
    if regular is None:
        return None
    delay = min(timedelta(minutes=2 ** min(conn.consecutive_failures - 1, 10)), MAX_BACKOFF)
    return min(regular, now + delay) if conn.consecutive_failures <= 3 else max(regular, now + delay)


def _open_alert(session: Session, conn: Connection) -> Alert | None:
    """The connection's open alert episode, of either kind."""
    return session.scalar(
        select(Alert).where(Alert.connection_id == conn.id, Alert.resolved_at.is_(None)).limit(1)
    )


def is_new(conn: Connection, company: Company, now: datetime) -> bool:
    """Never synced, and added less than the company's stale_after_hours ago."""
    limit = timedelta(hours=get_company_settings(company).stale_after_hours)
    return conn.last_success_at is None and now - conn.created_at < limit


def _raise_alert(session: Session, conn: Connection, kind: AlertKind, now: datetime, message: str) -> Alert:
    """Open an alert episode and email it (admins and the staff member) in the same transaction;
    a new calendar's alert is shown on the pages only (see the module's docstring)."""
    alert = Alert(company_id=conn.company_id, connection_id=conn.id, kind=kind, created_at=now,
                  message=message)
    session.add(alert)
    company = session.get(Company, conn.company_id)
    assert company is not None
    if not is_new(conn, company, now):
        queue_alert_emails(session, alert)
    return alert


def record_success(session: Session, conn: Connection, now: datetime) -> None:
    conn.status = ConnectionStatus.OK
    conn.last_success_at = now
    conn.last_error = None
    conn.last_error_kind = None
    conn.consecutive_failures = 0
    conn.next_sync_at = next_sync(conn, now)
    conn.updated_at = now
    for alert in session.scalars(
        select(Alert).where(Alert.connection_id == conn.id, Alert.resolved_at.is_(None))
    ):
        alert.resolved_at = now


def record_failure(session: Session, conn: Connection, kind: str, message: str, now: datetime, *,
                   alert_now: bool = False, retry_after: float | None = None) -> None:
    """`alert_now`: a failure only a person can fix (a provider's consent revoked), alerted at
    the first failure instead of after the company's threshold. `retry_after`: the provider
    asked to wait that many seconds; the next try is then, plus jitter, so that connections
    throttled together do not come back together."""
    conn.status = ConnectionStatus.ERROR
    conn.last_error = message
    conn.last_error_kind = kind
    conn.consecutive_failures += 1
    conn.next_sync_at = _backoff(conn, now)
    if retry_after is not None and conn.next_sync_at is not None:
        wait = retry_after + random.uniform(1.0, 1.0 + retry_after / 5)  # noqa: S311 - jitter
        conn.next_sync_at = max(conn.next_sync_at, now + timedelta(seconds=wait))
    conn.updated_at = now
    company = session.get(Company, conn.company_id)
    assert company is not None
    settings = get_company_settings(company)
    failing = alert_now or conn.consecutive_failures >= settings.alert_after_failures
    if failing and _open_alert(session, conn) is None:
        _raise_alert(session, conn, AlertKind.FAILING, now,
                     f"The calendar '{conn.name}' needs to be connected again: {message}" if alert_now else
                     f"The calendar '{conn.name}' has failed to sync {conn.consecutive_failures} times "
                     f"in a row: {message}")


def mark_stale(session: Session, now: datetime) -> int:
    """Mark connections whose last success is too old as stale and open an alert for each; a
    connection that never synced counts from when it was added."""
    count = 0
    # Only connections past the smallest threshold a company can choose are candidates, so the
    # scan (every minute) reads the few that may be stale, not every connection of every company.
    oldest_fresh = now - timedelta(hours=MIN_STALE_HOURS)
    for conn in session.scalars(
        select(Connection).where(or_(
            and_(Connection.status.in_((ConnectionStatus.OK, ConnectionStatus.ERROR)),
                 Connection.last_success_at < oldest_fresh),
            and_(Connection.status.in_((ConnectionStatus.PENDING, ConnectionStatus.ERROR)),
                 Connection.last_success_at.is_(None), Connection.created_at < oldest_fresh),
        ))
    ):
        company = session.get(Company, conn.company_id)
        assert company is not None
        limit = timedelta(hours=get_company_settings(company).stale_after_hours)
        last = conn.last_success_at or conn.created_at
        if now - last > limit:
            conn.status = ConnectionStatus.STALE
            count += 1
            if _open_alert(session, conn) is None:
                since = (f"has not synced since {last:%Y-%m-%d %H:%M} UTC" if conn.last_success_at
                         else f"has never synced since it was added on {last:%Y-%m-%d %H:%M} UTC")
                why = f": {conn.last_error}" if conn.last_error else "."
                _raise_alert(session, conn, AlertKind.STALE, now, f"The calendar '{conn.name}' {since}{why}")
    return count


def open_alerts(session: Session, company: Company) -> dict[int, list[Alert]]:
    """The company's unresolved alerts, by connection id, oldest first."""
    found: dict[int, list[Alert]] = {}
    for alert in session.scalars(
        select(Alert).where(Alert.company_id == company.id, Alert.resolved_at.is_(None))
        .order_by(Alert.created_at, Alert.id)
    ):
        found.setdefault(alert.connection_id, []).append(alert)
    return found
