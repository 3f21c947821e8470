"""Staff members' external calendars: CalDAV discovery, connections, sync now, busy time."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema
from sqlalchemy import select

from calsync.feeds.calendars import connections as conns
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.availability import check_range
from calsync.feeds.scheduling.directory import get_staff
from calsync.feeds.sources.caldav_source import discover_calendars
from calsync.feeds.sources.fetch import FetchError
from calsync.models import AllDayPolicy, BusyBlock, Connection, Role
from calsync.web import db, interactive
from calsync.web.api import bp, current_company
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import RANGE_END, AllDay, ConnectionRole, ConnectionState, Moment, Sync

Secret = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
# What feeds.sources.addresses.normalise_calendar_url takes, for the document: an http(s) or
# webcal address with a host (an ASCII name, or an IPv6 literal in brackets, which the pattern
# does not check further), no user name or password in it, a port up to 65535 and no white
# space. Whether the host resolves to an address the operator allows, and answers, only a
# request can tell.
_AROUND = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"  # stripped
URL_PATTERN = (rf"^{_AROUND}([hH][tT][tT][pP][sS]?|[wW][eE][bB][cC][aA][lL][sS]?)://"
               r"([A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])"
               r"(:(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4}))?"
               rf"([/?#][^\t\n\r ]*)?{_AROUND}$")
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048),
                WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 2048,
                                "pattern": URL_PATTERN})]


class DiscoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url = Field(description="Any URL of the CalDAV server, e.g. https://caldav.fastmail.com/")
    username: Secret
    password: Secret = Field(description="For iCloud and Fastmail an app-specific password.")


class RemoteCalendarOut(BaseModel):
    url: str
    name: str
    color: str | None
    writable: bool


class DiscoverOut(BaseModel):
    calendars: list[RemoteCalendarOut]


class ConnectionIn(BaseModel):
    # The rules between fields that JSON Schema can state (feeds.calendars.connections enforces
    # them): an ICS address is read-only, so its only role is conflict; CalDAV needs a login.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        {"if": {"properties": {"kind": {"const": "ics"}}},
         "then": {"properties": {"roles": {"items": {"const": "conflict"}}}}},
        {"if": {"properties": {"kind": {"const": "caldav"}}},
         "then": {"required": ["username", "password"],
                  "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}},
    ]})
    kind: Literal["ics", "caldav"]
    url: Url
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    username: Secret | None = None
    password: Secret | None = None
    roles: list[ConnectionRole] = Field(default_factory=lambda: [Role.CONFLICT], min_length=1)
    sync_mode: Sync | None = None
    interval_minutes: int | None = Field(default=None, ge=5, le=10080)
    all_day: AllDay = AllDayPolicy.BUSY
    treat_all_busy: bool = False
    push_existing: bool = Field(
        default=False,
        description="For a linked/additional calendar: also write the staff member's upcoming "
        "appointments into it (otherwise only new changes are written).",
    )


class ConnectionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    roles: list[ConnectionRole] | None = Field(default=None, min_length=1)
    sync_mode: Sync | None = None
    interval_minutes: int | None = Field(default=None, ge=5, le=10080)
    all_day: AllDay | None = None
    treat_all_busy: bool | None = None


class ConnectionOut(BaseModel):
    id: int
    staff_id: int
    kind: str
    name: str
    url: str = Field(description="The address with its secret parts removed.")
    username: str | None
    roles: list[str]
    writable: bool | None
    sync_mode: str
    interval_minutes: int
    all_day: str
    treat_all_busy: bool
    status: ConnectionState
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    busy_count: int


class ConnectionList(BaseModel):
    connections: list[ConnectionOut]


class BusyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: Moment = Field(description="ISO 8601 with a UTC offset.")
    end: Moment = Field(description=RANGE_END)


class BusyOut(BaseModel):
    start: datetime
    end: datetime
    connection_id: int


class BusyList(BaseModel):
    busy: list[BusyOut]


def connection_out(conn: Connection) -> ConnectionOut:
    return ConnectionOut(
        id=conn.id, staff_id=conn.staff_id, kind=conn.kind, name=conn.name, url=conn.url_display,
        username=conn.username, roles=list(conn.roles or []), writable=conn.writable,
        sync_mode=conn.sync_mode, interval_minutes=conn.interval_minutes, all_day=conn.all_day,
        treat_all_busy=conn.treat_all_busy, status=conn.status,
        last_attempt_at=conn.last_attempt_at, last_success_at=conn.last_success_at,
        last_error=conn.last_error, consecutive_failures=conn.consecutive_failures,
        busy_count=conn.busy_count,
    )


@api_route(bp, "/caldav/discover", "POST", summary="List the calendars on a CalDAV server",
           tag="connections", body=DiscoverIn, response=DiscoverOut, errors=(422,))
def discover(body: DiscoverIn) -> DiscoverOut:
    if not get_company_settings(current_company()).caldav_connections:
        raise ValidationError("CalDAV connections are switched off for this company.", "url")
    try:
        with interactive.limits() as limits:
            found = discover_calendars(body.url, body.username, body.password, limits=limits,
                                       allow_private=db.services().settings.allow_private_networks)
    except FetchError as exc:
        raise ValidationError(str(exc), "url") from exc
    return DiscoverOut(calendars=[RemoteCalendarOut(url=c.url, name=c.name, color=c.color,
                                                    writable=c.writable) for c in found])


@api_route(bp, "/staff/<int:staff_id>/connections", "POST", summary="Connect a calendar",
           tag="connections", body=ConnectionIn, response=ConnectionOut, status=201, errors=(404, 422),
           creates="connection_id")
def create(staff_id: int, body: ConnectionIn) -> ConnectionOut:
    session = db.session()
    company = current_company()
    company_settings = get_company_settings(company)
    if body.kind == "ics" and not company_settings.ics_subscriptions:
        raise ValidationError("ICS subscriptions are switched off for this company.", "kind")
    if body.kind == "caldav" and not company_settings.caldav_connections:
        raise ValidationError("CalDAV connections are switched off for this company.", "kind")
    data = conns.ConnectionInput(
        kind=body.kind, url=body.url, name=body.name, username=body.username, password=body.password,
        roles=tuple(body.roles), sync_mode=body.sync_mode or company_settings.default_sync_mode,
        interval_minutes=body.interval_minutes or company_settings.default_interval_minutes,
        all_day=body.all_day, treat_all_busy=body.treat_all_busy, push_existing=body.push_existing,
    )
    services = db.services()
    # A CalDAV calendar's writability is checked on this thread; an ICS address only resolved.
    # A blocked or malformed address is an invalid field like any other: 422 naming "url".
    checking = interactive.limits() if body.kind == "caldav" else nullcontext(services.sync.limits)
    with checking as limits:
        conn = conns.create_connection(session, company, services.vault, staff_id, data,
                                       allow_private=services.settings.allow_private_networks,
                                       limits=limits)
    session.commit()
    return connection_out(conn)


@api_route(bp, "/staff/<int:staff_id>/connections", "GET", summary="A staff member's calendars",
           tag="connections", response=ConnectionList, errors=(404,))
def list_for_staff(staff_id: int) -> ConnectionList:
    session = db.session()
    get_staff(session, current_company(), staff_id)
    rows = conns.list_connections(session, current_company(), staff_id)
    return ConnectionList(connections=[connection_out(c) for c in rows])


@api_route(bp, "/connections/<int:connection_id>", "GET", summary="Get a connection",
           tag="connections", response=ConnectionOut, errors=(404,))
def get_one(connection_id: int) -> ConnectionOut:
    return connection_out(conns.get_connection(db.session(), current_company(), connection_id))


@api_route(bp, "/connections/<int:connection_id>", "PATCH", summary="Change a connection",
           tag="connections", body=ConnectionPatch, response=ConnectionOut, errors=(404, 422))
def patch(connection_id: int, body: ConnectionPatch) -> ConnectionOut:
    session = db.session()
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    conn = conns.update_connection(session, current_company(), connection_id, changes)
    session.commit()
    return connection_out(conn)


@api_route(bp, "/connections/<int:connection_id>", "DELETE", summary="Remove a connection",
           tag="connections", status=204, errors=(404,))
def delete(connection_id: int) -> None:
    session = db.session()
    conns.delete_connection(session, current_company(), connection_id)
    session.commit()


@api_route(bp, "/connections/<int:connection_id>/sync", "POST", summary="Sync a connection now",
           tag="connections", response=ConnectionOut, errors=(404,))
def sync_now(connection_id: int) -> ConnectionOut:
    session = db.session()
    conns.get_connection(session, current_company(), connection_id)
    session.rollback()  # no transaction may stay open while the sync uses the network
    # Within the interactive budget, or queued when other syncs hold the slots (web.interactive):
    # the answer is then the connection's health so far.
    interactive.sync_or_queue(connection_id)
    session.expire_all()
    return connection_out(conns.get_connection(session, current_company(), connection_id))


@api_route(bp, "/staff/<int:staff_id>/busy", "GET", summary="Busy time read from a staff member's calendars",
           tag="connections", query=BusyQuery, response=BusyList, errors=(404, 422))
def busy(staff_id: int, query: BusyQuery) -> BusyList:
    session = db.session()
    get_staff(session, current_company(), staff_id)
    check_range(query.start, query.end)
    rows = session.execute(
        select(BusyBlock.start_at, BusyBlock.end_at, BusyBlock.connection_id)
        .where(BusyBlock.staff_id == staff_id, BusyBlock.start_at < query.end,
               BusyBlock.end_at > query.start)
        .order_by(BusyBlock.start_at)
    ).all()
    return BusyList(busy=[BusyOut(start=a, end=b, connection_id=c) for a, b, c in rows])
