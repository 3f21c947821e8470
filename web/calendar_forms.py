"""The "Add calendar" forms and "Sync now", shared by the admin's staff page and the staff
self-service page: form fields in, feeds.calendar_setup / feeds.connections calls, results out."""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from calsync.feeds.calendars import adding as calendar_setup
from calsync.feeds.calendars import connections as conns
from calsync.feeds.calendars.sync import SyncOutcome
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.calendar_block import CalendarBlock, calendar_blocks
from calsync.feeds.sources.caldav_source import RemoteCalendar
from calsync.models import WRITE_ROLES, Company, Connection, utcnow
from calsync.web import db, interactive
from calsync.web.formatting import ago, connection_status, flash_at

# What the add-calendar forms show again after an error (never the password).
KEPT_FIELDS = ("kind", "url", "name", "username", "caldav_url")


def unreachable_consequence(company: Company, staff_name: str, saved: bool = False) -> str:
    """What saving a calendar that could not be read means (feeds.scheduling.calendar_block):
    beside "Save anyway" what it would do, after it what it does."""
    settings = get_company_settings(company)
    hours = settings.stale_after_hours
    later = (f"If it still has not synced {hours} hour{'s' if hours != 1 else ''} after it was added, "
             + ("bookings go ahead without it." if settings.stale_policy == "keep"
                else "bookings stay stopped until it syncs or is removed (Stale calendars: stop bookings)."))
    if saved:
        return (f"{staff_name} can't be booked until it syncs, because their busy time in it is unknown. "
                f"It is tried again in the background. {later}")
    return (f"If you save it anyway, {staff_name} can't be booked until it syncs, because their busy "
            f"time in it is unknown; it is tried again in the background. {later}")


def kept_values(form: MultiDict[str, str]) -> dict[str, str]:
    return {k: form.get(k, "") for k in KEPT_FIELDS}


def form_error(form: str, exc: ValidationError, company: Company, staff_name: str) -> dict[str, Any]:
    """An add-calendar form's error, shown next to its address field: the sentence, and for a
    calendar that could not be read, the "Save anyway" choice with what it means."""
    unreachable = isinstance(exc, calendar_setup.CalendarUnreachable)
    return {"form": form, "message": str(exc), "save_anyway": unreachable,
            "consequence": unreachable_consequence(company, staff_name) if unreachable else ""}


def chosen_roles(form: MultiDict[str, str], key: str = "roles") -> list[str]:
    return [r for r in form.getlist(key) if r in conns.ROLES]


def add_ics(
    company: Company, staff_id: int, form: MultiDict[str, str]
) -> tuple[Connection, SyncOutcome | None]:
    """Connect a calendar by its ICS address (read-only, so busy time only), after reading it
    once within the interactive budget: saved only when that worked, or when the person chose
    "Save anyway" (then as not yet reachable). Then its first sync runs at once, so the page
    shows its busy times rather than "not synced yet". CalendarUnreachable when it could not be
    read and was not to be saved anyway (or "Save anyway" was pressed for an address other than
    the one checked, `checked_url`); ValidationError for an address that is not allowed."""
    services = db.services()
    s = db.session()
    data = calendar_setup.connection_input(
        company, kind="ics", url=form.get("url", "").strip(),
        name=form.get("name", "").strip() or None, roles=("conflict",),
    )
    url = conns.checked_address(data, services.settings.allow_private_networks, services.sync.limits.ports)
    s.rollback()  # no transaction may stay open while the calendar is read
    problem: calendar_setup.CalendarUnreachable | None = None
    wants_anyway = form.get("save_anyway") == "1"
    # "Save anyway" saves the address that was checked and refused, never another one typed
    # over it afterwards (the form carries the checked one): a changed address is checked again.
    anyway = wants_anyway and form.get("checked_url", "").strip() == form.get("url", "").strip()
    with interactive.limits() as limits:
        try:
            calendar_setup.check_ics_address(url, allow_private=services.settings.allow_private_networks,
                                             limits=limits)
        except calendar_setup.CalendarUnreachable as exc:
            if not anyway:
                if wants_anyway:
                    raise calendar_setup.CalendarUnreachable(
                        f"The address was changed after it was checked, so it was read again and "
                        f"was not saved. {exc}", exc.kind or "error") from exc
                raise
            problem = exc
    conn = conns.create_connection(s, company, services.vault, staff_id, data,
                                   allow_private=services.settings.allow_private_networks,
                                   limits=services.sync.limits)  # its port rule; no fetch here
    if problem is not None:
        calendar_setup.save_unreachable(s, conn, problem)
        s.commit()
        return conn, None
    conn.next_sync_at = None  # read below, on this thread, not by a worker at the same time
    s.commit()
    return _first_sync(company, conn.id)


def _first_sync(company: Company, connection_id: int) -> tuple[Connection, SyncOutcome | None]:
    outcome = interactive.sync_or_queue(connection_id)
    s = db.session()
    s.expire_all()
    return conns.get_connection(s, company, connection_id), outcome


def added_message(company: Company, staff_name: str, conn: Connection, outcome: SyncOutcome | None) -> str:
    """The line shown after a calendar was added (and, unless saved as not reachable, synced)."""
    if (conn.extra or {}).get("saved_unreachable") and conn.last_success_at is None:
        return (f"Calendar '{conn.name}' saved as not yet reachable. "
                f"{unreachable_consequence(company, staff_name, saved=True)}")
    if outcome is None:
        return f"Calendar '{conn.name}' added; it is being read in the background."
    return f"Calendar '{conn.name}' added. {sync_message(conn, outcome)}"


def discover(company: Company, staff_id: int, form: MultiDict[str, str]) -> tuple[list[RemoteCalendar], str]:
    services = db.services()
    with interactive.limits() as limits:
        return calendar_setup.discover(
            company, services.vault, staff_id, form.get("caldav_url", ""),
            form.get("username", "").strip(), form.get("password", ""),
            allow_private=services.settings.allow_private_networks, limits=limits,
            clock=services.clock,
        )


def connect_chosen(
    company: Company, staff_id: int, form: MultiDict[str, str]
) -> tuple[list[Connection], list[Connection], list[SyncOutcome | None]]:
    """Connect the calendars chosen on the discovery page: roles-<n> lists calendar n's
    read and copy roles, `linked` is the one calendar (its index) bookings are written into,
    `copy_existing` copies the upcoming bookings into it. The new connections, those that
    were connected already, and the outcome of each new one's first sync."""
    services = db.services()
    s = db.session()
    discovery = calendar_setup.open_discovery(services.vault, form.get("discovery", ""), staff_id,
                                              clock=services.clock)
    choices: dict[int, list[str]] = {}
    linked = form.get("linked", "")
    for index in range(len(discovery.calendars)):
        roles = chosen_roles(form, f"roles-{index}")  # "linked" here too: a hand-made form
        if linked == str(index) and "linked" not in roles:
            roles.append("linked")
        if roles:
            choices[index] = roles
    with interactive.limits("calendars") as limits:
        made, already = calendar_setup.connect_discovered(
            s, company, services.vault, discovery, choices,
            allow_private=services.settings.allow_private_networks, limits=limits,
            copy_existing=form.get("copy_existing") == "1",
        )
    for conn in made:
        conn.next_sync_at = None  # each is read below, on this thread
    ids = [c.id for c in made]
    s.commit()
    outcomes = [_first_sync(company, cid)[1] for cid in ids]
    return [conns.get_connection(s, company, cid) for cid in ids], already, outcomes


def connected_message(made: list[Connection], already: list[Connection],
                      outcomes: list[SyncOutcome | None]) -> str:
    parts = [f"'{c.name}' connected. {sync_message(c, o)}" if o else
             f"'{c.name}' connected; it is being read in the background."
             for c, o in zip(made, outcomes, strict=True)]
    if already:
        parts.append(f"Already connected, left as they were: {', '.join(c.name for c in already)}.")
    return " ".join(parts)


def copy_bookings(company: Company, connection_id: int) -> tuple[Connection, int, SyncOutcome | None]:
    """Copy the upcoming bookings into a linked calendar now (the API's push_existing)."""
    s = db.session()
    count = conns.copy_existing_bookings(s, company, connection_id, utcnow())
    s.commit()
    if not count:
        return conns.get_connection(s, company, connection_id), 0, None
    conn, outcome = _first_sync(company, connection_id)
    return conn, count, outcome


def uncopied_counts(connections: list[Connection]) -> dict[int, int]:
    """Per writable connection, the upcoming bookings not in it yet: the "copy" offer."""
    now = utcnow()
    return {c.id: conns.uncopied_bookings(db.session(), c, now) for c in connections}


def staff_blocks(company: Company, staff_ids: list[int] | None = None) -> dict[int, CalendarBlock]:
    """Staff members who cannot be booked because of a calendar, with the reason."""
    return calendar_blocks(db.session(), company, staff_ids)


def sync_now(company: Company, connection_id: int) -> tuple[Connection, SyncOutcome | None]:
    """Sync one connection while the request waits (within web.interactive's budget), or queue
    it when other syncs hold the web threads' slots. The connection with its health, and what
    the sync did (None: queued)."""
    s = db.session()
    conns.get_connection(s, company, connection_id)
    s.rollback()  # no transaction may stay open while the sync uses the network
    return _first_sync(company, connection_id)


def _queued_message(conn: Connection) -> str:
    return f"'{conn.name}' is being synced in the background; reload the page in a minute to see the result."


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _failed(conn: Connection, outcome: SyncOutcome | None) -> bool:
    return outcome is not None and (outcome.status in ("error", "lost") or conn.status == "error")


def sync_message(conn: Connection, outcome: SyncOutcome | None) -> str:
    """What "Sync now" did, in words: for a calendar bookings are written to, the bookings
    written, the moves and deletions applied and the conflicts opened; for every calendar the
    busy times read."""
    if outcome is None:
        return _queued_message(conn)
    if _failed(conn, outcome):
        why = outcome.error or conn.last_error or "it will be retried."
        if conn.consecutive_failures > 1:  # it was failing before this try too
            return f"Tried again just now — still failing: {why}"
        return f"'{conn.name}' did not sync: {why}"
    if outcome.status == "skipped":
        return f"'{conn.name}' is being synced right now by the background worker; reload in a minute."
    busy = _count(conn.busy_count, "busy time read", "busy times read")
    if set(conn.roles or []) & WRITE_ROLES and conn.writable:
        done = [_count(outcome.written, "booking written", "bookings written"),
                _count(outcome.applied, "move applied", "moves applied"),
                _count(outcome.conflicts, "conflict opened", "conflicts opened"), busy]
        return f"'{conn.name}' synced: {', '.join(done)}."
    if outcome.status == "unchanged":
        held = _count(conn.busy_count, 'busy time', 'busy times')
        return f"'{conn.name}' synced: nothing changed since the last sync ({held})."
    return f"'{conn.name}' synced: {busy}."


def flash_sync_result(conn: Connection, outcome: SyncOutcome | None, place: str | None = None) -> None:
    """The one-line result of "Sync now", for the page that reloads after it: on the calendar's
    card when the page goes back to it (`place`, flash_at), else at the top."""
    kind = "error" if _failed(conn, outcome) else "success"
    if place:
        flash_at(sync_message(conn, outcome), kind, place)
    else:
        flash(sync_message(conn, outcome), kind)


def connection_json(conn: Connection, outcome: SyncOutcome | None) -> Response:
    """What calsync.js needs to update a connection card in place."""
    badge, label = connection_status(conn)
    body: dict[str, Any] = {
        "id": conn.id,
        "status": badge,  # the badge's kind (calsync.js sets badge-<status>)
        "status_label": label,
        "last_sync": ago(conn.last_success_at),
        "last_success_at": conn.last_success_at.isoformat() if conn.last_success_at else None,
        "busy_count": conn.busy_count,
        "last_error": conn.last_error,
        "message": sync_message(conn, outcome),
        # A failure is said once, as an error, in "message" (the card hides its last-error box
        # meanwhile); "failures" updates "Failed in a row".
        "failed": _failed(conn, outcome),
        "failures": conn.consecutive_failures,
    }
    if outcome is None:  # the card keeps its health until the background sync has run
        body["queued"] = True
    return jsonify(body)
