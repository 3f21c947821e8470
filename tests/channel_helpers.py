"""Fixtures for change-notification tests (issues 11/12): calsync served on loopback with the
Google and Graph fakes delivering to it.

calsync's CALSYNC_BASE_URL is https (the providers deliver only there, and calsync subscribes
only then); the fakes map that address to calsync's real loopback http address — a knob of the
fakes (tests/fakes/push.py), never a setting of calsync.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask
from pydantic import SecretStr
from sqlalchemy import select, update

from calsync.feeds.calendars.provider_access import seal_tokens
from calsync.feeds.calendars.providers.base import Tokens
from calsync.feeds.settings import Settings
from calsync.models import Connection, OutboxEmail, ProviderChannel
from tests.fakes.google_calendar import GoogleCalendarFake, ServedFake
from tests.fakes.microsoft_graph import MicrosoftGraphFake, ServedGraph
from tests.fakes.push import serve_pushing_google, serve_pushing_graph
from tests.servers import _serve_wsgi
from tests.waiting import wait_until

BASE = "https://cal.example.test"


@dataclass
class Loopback:
    url: str = ""

    def route(self, address: str) -> str:
        return self.url + address[len(BASE):] if address.startswith(BASE) and self.url else address


def pushing_google(loopback: Loopback) -> Iterator[ServedFake]:
    """For a `google` fixture: the Google fake, delivering to calsync's loopback address."""
    with serve_pushing_google(loopback.route) as served:
        yield served


def pushing_graph(loopback: Loopback) -> Iterator[ServedGraph]:
    """For a `graph` fixture: the Graph fake, delivering to calsync's loopback address."""
    with serve_pushing_graph(loopback.route) as served:
        yield served


def provider_settings(settings: Settings, google: ServedFake, graph: ServedGraph, **more: Any) -> Settings:
    return settings.model_copy(update={
        "allow_private_networks": True, "base_url": BASE,
        "google_api_base_url": google.api_base, "google_token_url": google.url + "/token",
        "google_revoke_url": google.url + "/revoke", "google_auth_url": google.url + "/o/oauth2/v2/auth",
        "google_client_id": GoogleCalendarFake.CLIENT_ID,
        "google_client_secret": SecretStr(GoogleCalendarFake.CLIENT_SECRET),
        "microsoft_graph_base_url": graph.url + "/v1.0", "microsoft_login_base_url": graph.url,
        "microsoft_ca_file": graph.ca_file, "microsoft_client_id": MicrosoftGraphFake.CLIENT_ID,
        "microsoft_client_secret": SecretStr(MicrosoftGraphFake.CLIENT_SECRET), **more})


def serve(app: Flask, loopback: Loopback) -> Any:
    server, url = _serve_wsgi(app)
    loopback.url = url
    return server


def add_provider_connection(app: Flask, company_id: int, staff_id: int, kind: str, grant: tuple[str, str], *,
                            sync_mode: str = "realtime", roles: tuple[str, ...] = ("conflict",),
                            calendar_id: str = "primary") -> int:
    """A google/microsoft connection as the connect flow leaves it (tokens sealed in the vault)."""
    services = app.extensions["calsync"]
    access, refresh = grant
    with services.sessions.begin() as session:
        conn = Connection(
            company_id=company_id, staff_id=staff_id, kind=kind, name=f"Zoe ({kind})",
            url_sealed=services.vault.seal(f"{kind}:{calendar_id}"), url_display=f"{kind}: Zoe",
            roles=list(roles), sync_mode=sync_mode, interval_minutes=30, all_day="busy", treat_all_busy=False,
            writable=True, status="pending", next_sync_at=None, extra={},
            tokens_sealed=seal_tokens(services.vault, Tokens(access, refresh, time.time() + 3600)),
            account_email="zoe@example.com", remote_calendar_id=calendar_id)
        session.add(conn)
        session.flush()
        return conn.id


def channels_of(app: Flask, connection_id: int) -> list[ProviderChannel]:
    with app.extensions["calsync"].sessions() as session:
        rows = list(session.scalars(select(ProviderChannel).where(
            ProviderChannel.connection_id == connection_id).order_by(ProviderChannel.id)))
        session.expunge_all()
        return rows


def live(app: Flask, connection_id: int) -> list[ProviderChannel]:
    return [row for row in channels_of(app, connection_id) if row.stopped_at is None]



def sync_requested(app: Flask, row_id: int) -> bool:
    with app.extensions["calsync"].sessions() as session:
        row = session.get(ProviderChannel, row_id)
        return row is not None and row.sync_requested_at is not None


def clear_sync_request(app: Flask, row_id: int) -> None:
    """What the queued sync does as it starts (feeds/jobs.py channel_sync)."""
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(update(ProviderChannel).where(ProviderChannel.id == row_id)
                        .values(sync_requested_at=None))


def wait_for_reschedule(app: Flask, api: Any, appointment_id: int, moved: datetime) -> None:
    """The move made in the provider's calendar reaches the appointment through the notified
    sync, and the customer is emailed about it exactly once."""
    path = f"/appointments/{appointment_id}"

    def starts() -> datetime:
        return datetime.fromisoformat(api.get(path).get_json()["start"].replace("Z", "+00:00"))

    wait_until(lambda: starts() == moved, lambda: f"the appointment rescheduled: {api.get(path).get_json()}")
    with app.extensions["calsync"].sessions() as session:
        kinds = list(session.scalars(select(OutboxEmail.kind).where(
            OutboxEmail.appointment_id == appointment_id)))
    assert kinds.count("rescheduled") == 1, kinds
