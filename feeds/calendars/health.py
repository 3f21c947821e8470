"""Connection health: status, next sync time, backoff, and alert episodes.

An alert is opened once per episode (N consecutive failures, or no success for too long) and
closed by the next success, so an admin hears about a broken calendar once, not every minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import MIN_STALE_HOURS, get_company_settings
from calsync.feeds.mail.notifications import queue_alert_emails
from calsync.models import Alert, AlertKind, Company, Connection, ConnectionStatus, SyncMode

REALTIME_SECONDS = 60
MAX_BACKOFF = timedelta(hours=6)


def next_sync(conn: Connection, now: datetime) -> datetime | None:
    if conn.sync_mode == SyncMode.MANUAL:
        return None
    if conn.sync_mode == SyncMode.REALTIME:
        return now + timedelta(seconds=REALTIME_SECONDS)
    return now + timedelta(minutes=max(1, conn.interval_minutes))


def _backoff(conn: Connection, now: datetime) -> datetime | None:
    """Retry sooner than the interval at first, then back off exponentially (1, 2, 4 … min)."""
    regular = next_sync(conn, now)
    if regular is None:
        return None
    delay = min(timedelta(minutes=2 ** min(conn.consecutive_failures - 1, 10)), MAX_BACKOFF)
    return min(regular, now + delay) if conn.consecutive_failures <= 3 else max(regular, now + delay)


def _open_alert(session: Session, conn: Connection, kind: AlertKind) -> Alert | None:
    return session.scalar(
        select(Alert).where(Alert.connection_id == conn.id, Alert.kind == kind,
                            Alert.resolved_at.is_(None))
    )


def _raise_alert(session: Session, conn: Connection, kind: AlertKind, now: datetime, message: str) -> Alert:
    """Open an alert episode and email it (admins and the staff member) in the same transaction."""
    alert = Alert(company_id=conn.company_id, connection_id=conn.id, kind=kind, created_at=now,
                  message=message)
    session.add(alert)
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


def record_failure(session: Session, conn: Connection, kind: str, message: str, now: datetime) -> None:
    conn.status = ConnectionStatus.ERROR
    conn.last_error = message
    conn.last_error_kind = kind
    conn.consecutive_failures += 1
    conn.next_sync_at = _backoff(conn, now)
    conn.updated_at = now
    company = session.get(Company, conn.company_id)
    assert company is not None
    settings = get_company_settings(company)
    failing = conn.consecutive_failures >= settings.alert_after_failures
    if failing and _open_alert(session, conn, AlertKind.FAILING) is None:
        _raise_alert(session, conn, AlertKind.FAILING, now,
                     f"The calendar '{conn.name}' has failed to sync {conn.consecutive_failures} times "
                     f"in a row: {message}")


def mark_stale(session: Session, now: datetime) -> int:
    """Mark connections whose last success is too old as stale and open an alert for each."""
    count = 0
    # Only connections past the smallest threshold a company can choose are candidates, so the
    # scan (every minute) reads the few that may be stale, not every connection of every company.
    oldest_fresh = now - timedelta(hours=MIN_STALE_HOURS)
    for conn in session.scalars(
        select(Connection).where(Connection.status.in_((ConnectionStatus.OK, ConnectionStatus.ERROR)),
                                 Connection.last_success_at < oldest_fresh)
    ):
        company = session.get(Company, conn.company_id)
        assert company is not None
        limit = timedelta(hours=get_company_settings(company).stale_after_hours)
        if conn.last_success_at is not None and now - conn.last_success_at > limit:
            conn.status = ConnectionStatus.STALE
            count += 1
            if _open_alert(session, conn, AlertKind.STALE) is None:
                _raise_alert(session, conn, AlertKind.STALE, now,
                             f"The calendar '{conn.name}' has not synced since "
                             f"{conn.last_success_at:%Y-%m-%d %H:%M} UTC.")
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
