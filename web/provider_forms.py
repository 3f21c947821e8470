"""What the admin's staff page, the staff self-service page and the OAuth callback (web.oauth)
share for Google and Microsoft connections: the "Connect" buttons (or why one is not offered),
the fixed callback address, and disconnecting."""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash
from werkzeug.datastructures import MultiDict

from calsync.feeds.calendars import provider_connect
from calsync.feeds.calendars.provider_access import CALLBACK_PATHS, PROVIDER_KINDS, PROVIDER_LABELS
from calsync.models import Connection
from calsync.web import db, interactive

BUTTONS = {"google": "Connect Google Calendar", "microsoft": "Connect Outlook / Microsoft 365"}


@dataclass(frozen=True)
class ProviderOption:
    kind: str
    label: str
    button: str
    not_set_up: str | None  # the one-line reason the button is not offered


def provider_options() -> list[ProviderOption]:
    setup = db.services().sync.providers
    return [ProviderOption(kind, PROVIDER_LABELS[kind], BUTTONS[kind], setup.not_set_up(kind))
            for kind in ("google", "microsoft")]


def redirect_uri(kind: str) -> str:
    """The one callback address registered with the provider (README): on the public base URL,
    never on whatever host the request came in on."""
    return db.services().settings.base_url.rstrip("/") + CALLBACK_PATHS[kind]


def is_provider(conn: Connection) -> bool:
    return conn.kind in PROVIDER_KINDS


def disconnect_connection(conn: Connection, form: MultiDict[str, str]) -> None:
    """Remove a Google/Microsoft connection from a page: our events in its calendar only when
    the person ticked "remove_events", the tokens revoked at the provider (best effort)."""
    services = db.services()
    db.session().rollback()  # no transaction stays open while the provider is asked
    with interactive.limits() as limits:
        done = provider_connect.disconnect(
            services.sessions, services.vault, services.sync.providers, conn.id,
            remove_events=form.get("remove_events") == "1", limits=limits)
    parts = [f"Calendar '{done.name}' removed."]
    if done.removed_events:
        parts.append(f"{done.removed_events} booking(s) calsync had written were removed from it.")
    flash(" ".join(parts), "success")
