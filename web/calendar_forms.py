"""The "Add calendar" forms and "Sync now", shared by the admin's staff page and the staff
self-service page: form fields in, feeds.calendar_setup / feeds.connections calls, results out."""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from calsync.feeds.calendars import adding as calendar_setup
from calsync.feeds.calendars import connections as conns
from calsync.feeds.sources.caldav_source import RemoteCalendar
from calsync.models import Company, Connection
from calsync.web import db, interactive
from calsync.web.formatting import STATUS_LABELS, ago

# What the add-calendar forms show again after an error (never the password).
KEPT_FIELDS = ("kind", "url", "name", "username", "caldav_url")


def kept_values(form: MultiDict[str, str]) -> dict[str, str]:
    return {k: form.get(k, "") for k in KEPT_FIELDS}


def chosen_roles(form: MultiDict[str, str], key: str = "roles") -> list[str]:
    return [r for r in form.getlist(key) if r in conns.ROLES]


def add_ics(company: Company, staff_id: int, form: MultiDict[str, str]) -> Connection:
    """Connect a calendar by its ICS address (read-only, so busy time only)."""
    services = db.services()
    data = calendar_setup.connection_input(
        company, kind="ics", url=form.get("url", "").strip(),
        name=form.get("name", "").strip() or None, roles=("conflict",),
    )
    return conns.create_connection(db.session(), company, services.vault, staff_id, data,
                                   allow_private=services.settings.allow_private_networks,
                                   limits=services.sync.limits)  # its port rule; no fetch here


def discover(company: Company, staff_id: int, form: MultiDict[str, str]) -> tuple[list[RemoteCalendar], str]:
    services = db.services()
    with interactive.limits() as limits:
        return calendar_setup.discover(
            company, services.vault, staff_id, form.get("caldav_url", ""),
            form.get("username", "").strip(), form.get("password", ""),
            allow_private=services.settings.allow_private_networks, limits=limits,
            clock=services.clock,
        )


def connect_chosen(company: Company, staff_id: int, form: MultiDict[str, str]) -> list[Connection]:
    """Connect the calendars ticked on the discovery page: roles-<n> lists calendar n's roles."""
    services = db.services()
    discovery = calendar_setup.open_discovery(services.vault, form.get("discovery", ""), staff_id,
                                              clock=services.clock)
    choices: dict[int, list[str]] = {}
    for index in range(len(discovery.calendars)):
        roles = chosen_roles(form, f"roles-{index}")
        if roles:
            choices[index] = roles
    with interactive.limits("calendars") as limits:
        return calendar_setup.connect_discovered(
            db.session(), company, services.vault, discovery, choices,
            allow_private=services.settings.allow_private_networks, limits=limits,
        )


def sync_now(company: Company, connection_id: int) -> tuple[Connection, bool]:
    """Sync one connection while the request waits (within web.interactive's budget), or queue
    it when other syncs hold the web threads' slots. The connection with its health, and
    whether the sync was queued."""
    s = db.session()
    conns.get_connection(s, company, connection_id)
    s.rollback()  # no transaction may stay open while the sync uses the network
    queued = interactive.sync_or_queue(connection_id)
    s.expire_all()
    return conns.get_connection(s, company, connection_id), queued


def _queued_message(conn: Connection) -> str:
    return f"'{conn.name}' is being synced in the background; reload the page in a minute to see the result."


def flash_sync_result(conn: Connection, queued: bool = False) -> None:
    """The one-line result of "Sync now", for the page that reloads after it."""
    if queued:
        flash(_queued_message(conn), "success")
    elif conn.status == "ok":
        flash(f"'{conn.name}' synced: {conn.busy_count} busy time(s).", "success")
    else:
        flash(f"'{conn.name}' did not sync: {conn.last_error}", "error")


def connection_json(conn: Connection, queued: bool = False) -> Response:
    """What calsync.js needs to update a connection card in place."""
    body: dict[str, Any] = {
        "id": conn.id,
        "status": conn.status,
        "status_label": STATUS_LABELS.get(conn.status, conn.status),
        "last_sync": ago(conn.last_success_at),
        "last_success_at": conn.last_success_at.isoformat() if conn.last_success_at else None,
        "busy_count": conn.busy_count,
        "last_error": conn.last_error,
        "message": (_queued_message(conn) if queued
                    else f"'{conn.name}' synced: {conn.busy_count} busy time(s)." if conn.status == "ok"
                    else f"'{conn.name}' did not sync: {conn.last_error or conn.status}"),
    }
    if queued:  # the card keeps its health until the background sync has run
        body["queued"] = True
    return jsonify(body)
