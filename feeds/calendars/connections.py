"""Connections of a staff member to their external calendars: validate, create, change, delete.

A URL is checked when it is saved (and again on every fetch): only http(s)/webcal, only public
addresses unless private networks are allowed. Roles: `conflict` reads busy time; `linked` and
`additional` write bookings, so they need a calendar we may write to — an ICS URL never is one,
and a CalDAV calendar must grant write in current-user-privilege-set.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.errors import ValidationError
from calsync.feeds.lookup import get_owned
from calsync.feeds.scheduling.busy_timeline import forget as forget_busy_time
from calsync.feeds.scheduling.calendar_copies import queue_existing
from calsync.feeds.scheduling.directory import get_staff
from calsync.feeds.sources.addresses import address_problem, normalise_calendar_url, redact_url
from calsync.feeds.sources.caldav_source import calendar_writable
from calsync.feeds.sources.fetch import FetchError, FetchLimits
from calsync.models import (
    STATUS_CONFIRMED,
    WRITE_ROLES,
    AllDayPolicy,
    Appointment,
    Company,
    Connection,
    ConnectionKind,
    ConnectionStatus,
    LinkedItem,
    Role,
    SyncMode,
    utcnow,
)

# What the API and the add-calendar forms connect (Google and Microsoft: their OAuth flow).
KINDS = (ConnectionKind.ICS, ConnectionKind.CALDAV)
PROVIDER_KINDS = (ConnectionKind.GOOGLE, ConnectionKind.MICROSOFT)  # connected through OAuth only
ROLES = tuple(Role)
SYNC_MODES = tuple(SyncMode)
ALL_DAY = tuple(AllDayPolicy)


@dataclass(frozen=True)
class ConnectionInput:
    kind: str
    url: str
    name: str | None = None
    username: str | None = None
    password: str | None = None
    roles: tuple[str, ...] = ("conflict",)
    sync_mode: str = "interval"
    interval_minutes: int = 30
    all_day: str = "busy"
    treat_all_busy: bool = False
    push_existing: bool = False  # copy upcoming appointments into a linked/additional calendar


def check_host(url: str, allow_private: bool, ports: frozenset[int] = FetchLimits.ports) -> None:
    """Resolve the URL's host now and refuse it if any address, or its port, is not allowed
    (the fetch checks both again, in its own resolver)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationError(
            f"The host name '{host}' was not found; check the calendar address.", "url", "address"
        ) from exc
    for answer in answers:
        problem = address_problem(str(answer[4][0]).split("%")[0], allow_private)
        if problem:
            raise ValidationError(f"That calendar address is not allowed: {problem}.", "url", "address")
    if not allow_private and port not in ports:
        raise ValidationError(
            f"That calendar address uses port {port}, which is not open to calendar "
            f"subscriptions (allowed: {', '.join(str(p) for p in sorted(ports))}); use the "
            "calendar's address without a port number.", "url", "address")


def _validate(data: ConnectionInput, *, existing: bool = False) -> None:
    """`existing`: a change of a connection already made, which may be a Google or Microsoft
    one (those are only made through their OAuth flow, feeds.calendars.provider_connect)."""
    if data.kind not in KINDS and not (existing and data.kind in PROVIDER_KINDS):
        raise ValidationError("kind must be 'ics' (a calendar address) or 'caldav'.", "kind")
    roles = set(data.roles)
    if not roles or not roles <= set(ROLES):
        raise ValidationError(f"roles must be one or more of {', '.join(ROLES)}.", "roles")
    if data.sync_mode not in SYNC_MODES:
        raise ValidationError(f"sync_mode must be one of {', '.join(SYNC_MODES)}.", "sync_mode")
    if not 5 <= data.interval_minutes <= 7 * 24 * 60:
        raise ValidationError("interval_minutes must be between 5 and 10080 (a week).", "interval_minutes")
    if data.all_day not in ALL_DAY:
        raise ValidationError("all_day must be 'busy' or 'ignore'.", "all_day")
    if data.kind == "ics" and roles & WRITE_ROLES:
        raise ValidationError(
            "A calendar address (ICS) is read-only, so it can only be used to read busy time "
            "(role 'conflict'). To write bookings, connect the calendar over CalDAV with write "
            "access (Editor or Delegate).", "roles")
    if data.kind == "caldav" and not (data.username and data.password):
        raise ValidationError("A CalDAV connection needs a user name and a password "
                              "(for iCloud and Fastmail an app-specific password).", "password")


def checked_address(
    data: ConnectionInput, allow_private: bool, ports: frozenset[int] = FetchLimits.ports
) -> str:
    """The new connection's input checked without reading the calendar; its normalised URL."""
    _validate(data)
    url = normalise_calendar_url(data.url)
    check_host(url, allow_private, ports)
    return url


def create_connection(
    session: Session, company: Company, vault: Vault, staff_id: int, data: ConnectionInput, *,
    allow_private: bool, limits: FetchLimits | None = None,
) -> Connection:
    """`limits`: the operator's fetch limits (CALSYNC_FETCH_*), for the writability check."""
    limits = limits or FetchLimits()
    staff = get_staff(session, company, staff_id)
    url = checked_address(data, allow_private, limits.ports)
    roles = sorted(set(data.roles), key=ROLES.index)
    writable: bool | None = None
    if data.kind == "caldav":
        try:
            writable = calendar_writable(url, data.username or "", data.password or "",
                                         allow_private=allow_private, limits=limits)
        except FetchError as exc:
            raise ValidationError(f"The calendar could not be checked: {exc}", "url") from exc
        if set(roles) & WRITE_ROLES and not writable:
            raise ValidationError(
                "This calendar is shared with you read-only, so bookings cannot be written to "
                "it: ask its owner for write access (Editor/Delegate), or use it as 'conflict' only.",
                "roles")
    if "linked" in roles and any(
        "linked" in (c.roles or []) for c in list_connections(session, company, staff.id)
    ):
        raise ValidationError(f"{staff.name} already has a linked calendar; a staff member has one.",
                              "roles")
    now = utcnow()
    conn = Connection(
        company_id=company.id, staff_id=staff.id, kind=data.kind,
        name=(data.name or "").strip() or redact_url(url),
        url_sealed=vault.seal(url), url_display=redact_url(url),
        username=data.username if data.kind == "caldav" else None,
        password_sealed=vault.seal(data.password) if data.kind == "caldav" and data.password else None,
        roles=roles, sync_mode=data.sync_mode, interval_minutes=data.interval_minutes,
        all_day=data.all_day, treat_all_busy=data.treat_all_busy, writable=writable,
        status=ConnectionStatus.PENDING, next_sync_at=now, created_at=now, updated_at=now, extra={},
    )
    session.add(conn)
    session.flush()
    if data.push_existing and set(roles) & WRITE_ROLES:
        # Only when asked: a staff member may not want months of bookings appearing at once.
        queue_existing(session, conn, now)
    return conn


def same_calendar(
    session: Session, vault: Vault, company: Company, staff_id: int, url: str
) -> Connection | None:
    """The staff member's connection to this very calendar, if there is one (a form sent twice)."""
    wanted = normalise_calendar_url(url)
    for conn in list_connections(session, company, staff_id):
        if vault.open(conn.url_sealed) == wanted:
            return conn
    return None


def uncopied_bookings(session: Session, conn: Connection, now: datetime) -> int:
    """Upcoming bookings of the staff member not (yet) in this writable calendar: what "copy
    existing bookings" would write. 0 for a calendar bookings are not written to."""
    if not (set(conn.roles or []) & WRITE_ROLES and conn.writable):
        return 0
    return session.scalar(
        select(func.count()).select_from(Appointment).where(
            Appointment.staff_id == conn.staff_id, Appointment.status == STATUS_CONFIRMED,
            Appointment.end_at > now,
            ~exists().where(LinkedItem.connection_id == conn.id,
                            LinkedItem.appointment_id == Appointment.id))
    ) or 0


def copy_existing_bookings(session: Session, company: Company, connection_id: int, now: datetime) -> int:
    """Queue copies of the upcoming bookings into a linked (or copy) calendar — the API's
    push_existing — and make its sync due now; how many were queued."""
    conn = get_connection(session, company, connection_id)
    if not (set(conn.roles or []) & WRITE_ROLES and conn.writable):
        raise ValidationError("Bookings are not written to this calendar, so none can be copied "
                              "into it.", "roles")
    count = queue_existing(session, conn, now)
    if count:
        conn.next_sync_at = now
    session.flush()
    return count


def get_connection(session: Session, company: Company, connection_id: int) -> Connection:
    return get_owned(session, Connection, connection_id, company, "calendar connection")


def list_connections(session: Session, company: Company, staff_id: int | None = None) -> list[Connection]:
    query = select(Connection).where(Connection.company_id == company.id)
    if staff_id is not None:
        query = query.where(Connection.staff_id == staff_id)
    return list(session.scalars(query.order_by(Connection.id)))


def update_connection(
    session: Session, company: Company, connection_id: int, changes: dict[str, Any]
) -> Connection:
    """Change name, roles, sync mode, interval, all-day policy; the URL and credentials are
    replaced by deleting and adding the connection (so its health starts afresh)."""
    conn = get_connection(session, company, connection_id)
    merged = ConnectionInput(
        kind=conn.kind, url="https://placeholder.invalid/", name=changes.get("name", conn.name),
        username=conn.username, password="kept" if conn.kind == "caldav" else None,
        roles=tuple(changes.get("roles", conn.roles)),
        sync_mode=changes.get("sync_mode", conn.sync_mode),
        interval_minutes=changes.get("interval_minutes", conn.interval_minutes),
        all_day=changes.get("all_day", conn.all_day),
        treat_all_busy=changes.get("treat_all_busy", conn.treat_all_busy),
    )
    _validate(merged, existing=True)
    if set(merged.roles) & WRITE_ROLES and conn.kind != "ics" and not conn.writable:
        raise ValidationError("This calendar is read-only for us; it can only have the role 'conflict'.",
                              "roles")
    conn.name = (merged.name or conn.name).strip()
    conn.roles = sorted(set(merged.roles), key=ROLES.index)
    schedule_changed = merged.sync_mode != conn.sync_mode or merged.interval_minutes != conn.interval_minutes
    conn.sync_mode, conn.interval_minutes = SyncMode(merged.sync_mode), merged.interval_minutes
    if merged.all_day != conn.all_day or merged.treat_all_busy != conn.treat_all_busy:
        conn.all_day, conn.treat_all_busy = AllDayPolicy(merged.all_day), merged.treat_all_busy
        conn.window_key = None  # re-expand with the new rules at the next sync
        conn.next_sync_at = utcnow()
    elif schedule_changed:
        conn.next_sync_at = None if conn.sync_mode == "manual" else utcnow()
    conn.updated_at = utcnow()
    session.flush()
    return conn


def delete_connection(session: Session, company: Company, connection_id: int) -> None:
    conn = get_connection(session, company, connection_id)
    forget_busy_time(session, conn.id)
    session.delete(conn)
    session.flush()
