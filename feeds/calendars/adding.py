"""Adding calendars the way the web pages do it: the company's switches and defaults, CalDAV
discovery with the entered credentials kept sealed between "look up" and "connect", and
connecting several of the discovered calendars at once.

Between the two steps the server address, user name, password and the discovered list travel in
the page as one token sealed with the credentials key (feeds.credentials.Vault), bound to the staff
member and valid for `DISCOVERY_MINUTES`: no password in the page, nothing stored for abandoned
look-ups, and the calendars that can be chosen are exactly the ones the server listed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.credentials import CredentialsError, Vault
from calsync.feeds.calendars.connections import (
    WRITE_ROLES,
    ConnectionInput,
    create_connection,
    list_connections,
    same_calendar,
)
from calsync.feeds.calendars.health import record_failure
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
from calsync.feeds.sources.busy_time import CalendarDataError, parse_calendars
from calsync.feeds.sources.caldav_source import RemoteCalendar, discover_calendars
from calsync.feeds.sources.fetch import FetchError, FetchLimits, fetch_url
from calsync.models import STATUS_CONFIRMED, Appointment, Company, Connection, utcnow

DISCOVERY_MINUTES = 20
READ_ONLY_REASON = (
    "Shared with you read-only: bookings cannot be written to it, so it can only be used to "
    "read busy time. Ask its owner for write access (Editor or Delegate) to link it."
)


class CalendarUnreachable(ValidationError):
    """The calendar could not be read when it was added. Unlike a refused address, it may still
    be saved — explicitly — as "not yet reachable" (`save_unreachable`)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message, "url", kind)


def check_ics_address(url: str, *, allow_private: bool, limits: FetchLimits) -> None:
    """Fetch and parse an ICS address once, as its first sync will, within `limits` (the
    interactive budget of a person waiting on the form). CalendarUnreachable says why not; an
    address that is not allowed at all (a redirect to a private one) is a plain ValidationError."""
    try:
        fetched = fetch_url(url, limits=limits, allow_private=allow_private)
        parse_calendars(fetched.body, max(1.0, limits.total_seconds))
    except FetchError as exc:
        if exc.kind == "blocked":
            raise ValidationError(str(exc), "url", "address") from exc
        raise CalendarUnreachable(str(exc), exc.kind) from exc
    except CalendarDataError as exc:
        raise CalendarUnreachable(str(exc), exc.kind) from exc


def save_unreachable(session: Session, conn: Connection, problem: CalendarUnreachable) -> None:
    """Keep a just-added calendar that could not be read, saying why: it is retried like any
    failing one, and (being new) its failures are shown, not emailed (feeds.calendars.health)."""
    record_failure(session, conn, problem.kind or "error", str(problem), utcnow())
    conn.extra = {**(conn.extra or {}), "saved_unreachable": True}


@dataclass(frozen=True)
class Discovery:
    """What a CalDAV look-up found, with the credentials that found it."""

    staff_id: int
    url: str
    username: str
    password: str
    calendars: list[RemoteCalendar]


def check_kind_allowed(company: Company, kind: str) -> None:
    settings = get_company_settings(company)
    if kind == "ics" and not settings.ics_subscriptions:
        raise ValidationError("Connecting calendars by their ICS address is switched off for this "
                              "company.", "kind")
    if kind == "caldav" and not settings.caldav_connections:
        raise ValidationError("CalDAV connections are switched off for this company.", "kind")


def allowed_kinds(company: Company) -> list[str]:
    settings = get_company_settings(company)
    return [kind for kind, on in (("ics", settings.ics_subscriptions),
                                  ("caldav", settings.caldav_connections)) if on]


def connection_input(
    company: Company, *, kind: str, url: str, name: str | None = None,
    username: str | None = None, password: str | None = None,
    roles: Sequence[str] = ("conflict",), sync_mode: str | None = None,
    interval_minutes: int | None = None,
) -> ConnectionInput:
    """A new connection's input, with the company's default sync mode and interval."""
    check_kind_allowed(company, kind)
    settings = get_company_settings(company)
    return ConnectionInput(
        kind=kind, url=url, name=name, username=username, password=password, roles=tuple(roles),
        sync_mode=sync_mode or settings.default_sync_mode,
        interval_minutes=interval_minutes or settings.default_interval_minutes,
    )


def discover(
    company: Company, vault: Vault, staff_id: int, url: str, username: str, password: str, *,
    allow_private: bool, limits: FetchLimits | None = None, clock: Callable[[], float] = time.time,
) -> tuple[list[RemoteCalendar], str]:
    """The calendars on a CalDAV server, and the sealed state for `connect_discovered`.
    `clock` (seconds since the epoch) dates the state; tests pass a fake one."""
    check_kind_allowed(company, "caldav")
    if not (url.strip() and username and password):
        raise ValidationError("Enter the server address, the user name and the password.", "url")
    try:
        found = discover_calendars(url.strip(), username, password, allow_private=allow_private,
                                   limits=limits)
    except FetchError as exc:
        raise ValidationError(str(exc), "url") from exc
    if not found:
        raise ValidationError("The server answered but lists no calendars for this account.", "url")
    state = {
        "s": staff_id, "u": url.strip(), "n": username, "p": password, "t": int(clock()),
        "c": [[c.url, c.name, c.color, c.writable] for c in found],
    }
    return found, vault.seal(json.dumps(state))


def open_discovery(
    vault: Vault, sealed: str, staff_id: int, *, clock: Callable[[], float] = time.time
) -> Discovery:
    expired = ValidationError(
        "The list of calendars is too old or was not found; look the calendars up again.", "url")
    try:
        state = json.loads(vault.open(sealed))
    except (CredentialsError, ValueError) as exc:
        raise expired from exc
    if state.get("s") != staff_id or clock() - state.get("t", 0) > DISCOVERY_MINUTES * 60:
        raise expired
    return Discovery(
        staff_id=staff_id, url=state["u"], username=state["n"], password=state["p"],
        calendars=[RemoteCalendar(url=u, name=n, color=c, writable=bool(w))
                   for u, n, c, w in state["c"]],
    )


def connect_discovered(
    session: Session, company: Company, vault: Vault, discovery: Discovery,
    choices: Mapping[int, Sequence[str]], *, allow_private: bool, limits: FetchLimits | None = None,
    copy_existing: bool = False,
) -> tuple[list[Connection], list[Connection]]:
    """Connect the chosen calendars (index in the discovered list → roles), in one transaction:
    the new connections, and those that were connected already (a form sent twice, say) — left
    as they are rather than refused as a second linked calendar. `copy_existing`: copy the
    upcoming bookings into the calendar chosen as linked (the API's push_existing)."""
    if not choices:
        raise ValidationError("Choose at least one calendar to connect.", "calendars")
    if sum("linked" in roles for roles in choices.values()) > 1:
        raise ValidationError("Choose one linked calendar: bookings are written into one.", "roles")
    made, already = [], []
    for index, roles in sorted(choices.items()):
        if not 0 <= index < len(discovery.calendars):
            raise ValidationError("That calendar is not in the list the server gave.", "calendars")
        calendar = discovery.calendars[index]
        if not roles:
            raise ValidationError(f"Choose what '{calendar.name}' is used for.", "roles")
        if set(roles) & WRITE_ROLES and not calendar.writable:
            raise ValidationError(f"'{calendar.name}': {READ_ONLY_REASON}", "roles")
        existing = same_calendar(session, vault, company, discovery.staff_id, calendar.url)
        if existing is not None:
            already.append(existing)
            continue
        data = connection_input(company, kind="caldav", url=calendar.url, name=calendar.name,
                                username=discovery.username, password=discovery.password,
                                roles=roles)
        if copy_existing and "linked" in roles:
            data = replace(data, push_existing=True)
        made.append(create_connection(session, company, vault, discovery.staff_id, data,
                                      allow_private=allow_private, limits=limits))
    return made, already


def reopen_discovery(
    vault: Vault, sealed: str, staff_id: int, *, clock: Callable[[], float] = time.time
) -> list[RemoteCalendar] | None:
    """The discovered calendars again, for showing the choice once more after an error; None
    when the sealed list is too old or not this staff member's."""
    try:
        return open_discovery(vault, sealed, staff_id, clock=clock).calendars
    except ValidationError:
        return None


def linked_calendar(session: Session, company: Company, staff_id: int) -> Connection | None:
    """The staff member's linked calendar (there is at most one)."""
    linked = [c for c in list_connections(session, company, staff_id) if "linked" in (c.roles or [])]
    return linked[0] if linked else None


def upcoming_bookings(session: Session, staff_id: int) -> int:
    """How many upcoming bookings a newly linked calendar could receive ("copy existing")."""
    return session.scalar(select(func.count()).select_from(Appointment).where(
        Appointment.staff_id == staff_id, Appointment.status == STATUS_CONFIRMED,
        Appointment.end_at > utcnow())) or 0
