"""Google / Microsoft connections end to end against the contract fakes (tests/fakes/): the
app's settings pointed at a fake, the consent screen walked over HTTP as a browser would (the
fake answers with a redirect to calsync's callback), and a staff member's self-service or
admin browser doing "Connect Google Calendar" / "Connect Outlook"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import niquests
from flask import Flask
from pydantic import SecretStr
from sqlalchemy import select
from werkzeug.test import TestResponse

from calsync.feeds.onboarding.connect_links import connect_sealer, connect_url, make_connect_token
from calsync.feeds.settings import Settings
from calsync.models import Connection, Staff
from tests.admin_helpers import Browser
from tests.fakes import tls
from tests.fakes.google_calendar import GoogleCalendarFake, ServedFake
from tests.fakes.microsoft_graph import MicrosoftGraphFake, ServedGraph


def with_google(settings: Settings, served: ServedFake) -> Settings:
    return settings.model_copy(update={
        "allow_private_networks": True,
        "google_api_base_url": served.api_base, "google_token_url": served.url + "/token",
        "google_revoke_url": served.url + "/revoke", "google_auth_url": served.url + "/o/oauth2/v2/auth",
        "google_client_id": GoogleCalendarFake.CLIENT_ID,
        "google_client_secret": SecretStr(GoogleCalendarFake.CLIENT_SECRET),
    })


def with_microsoft(settings: Settings, served: ServedGraph) -> Settings:
    return settings.model_copy(update={
        "allow_private_networks": True,
        "microsoft_graph_base_url": served.url + "/v1.0", "microsoft_login_base_url": served.url,
        "microsoft_ca_file": served.ca_file, "microsoft_client_id": MicrosoftGraphFake.CLIENT_ID,
        "microsoft_client_secret": SecretStr(MicrosoftGraphFake.CLIENT_SECRET),
    })


def self_service_browser(app: Flask, staff_id: int) -> Browser:
    """The staff member's browser after opening their connect link."""
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        staff = session.get(Staff, staff_id)
        assert staff is not None
        token = make_connect_token(session, staff, connect_sealer(services.settings.secret_key))
    client = app.test_client()
    assert client.get(connect_url("", token)).status_code == 302
    return Browser(client)


def start(browser: Browser, kind: str, *, purpose: str = "self_service", staff_id: int | None = None
          ) -> TestResponse:
    """Click "Connect Google Calendar" / "Connect Outlook / Microsoft 365" (a link)."""
    query: dict[str, Any] = {"for": purpose}
    if staff_id is not None:
        query["staff_id"] = staff_id
    return browser.get(f"/oauth/{kind}/start", query_string=query)


def consent(start_response: TestResponse, **extra: str) -> str:
    """Walk the provider's consent screen (approved, or with `decision=cancel` refused): the
    callback's path and query on calsync, where the provider sends the browser back."""
    assert start_response.status_code == 303, start_response.get_data(as_text=True)
    address = start_response.headers["Location"]
    if extra:
        address += "&" + "&".join(f"{k}={v}" for k, v in extra.items())
    # Microsoft's sign-in is https with the fakes' own CA (tests/fakes/tls.py).
    answer = niquests.get(address, allow_redirects=False, timeout=10, verify=tls.ca_file())
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert back.netloc == "cal.example.test"  # the configured base URL: the registered redirect URI
    return f"{back.path}?{back.query}"


def pick_token(page: TestResponse) -> str:
    """The sealed list of calendars the pick page carries."""
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    marker = 'name="pick" value="'
    start_at = html.index(marker) + len(marker)
    return html[start_at:html.index('"', start_at)]


def connect(browser: Browser, kind: str, pick_page: TestResponse, *, staff_id: int,
            purpose: str = "self_service",
            conflict: tuple[int, ...] = (0,), linked: int | None = None, additional: tuple[int, ...] = (),
            push_existing: bool = False, page: str = "/connect/") -> TestResponse:
    data: dict[str, Any] = {"pick": pick_token(pick_page), "for": purpose, "staff_id": staff_id,
                            "conflict": [str(i) for i in conflict],
                            "additional": [str(i) for i in additional],
                            "linked": "" if linked is None else str(linked)}
    if push_existing:
        data["push_existing"] = "1"
    return browser.post(f"/oauth/{kind}/connect", data, page=page)


def connected(app: Flask, staff_id: int) -> list[Connection]:
    with app.extensions["calsync"].sessions() as s:
        query = select(Connection).where(Connection.staff_id == staff_id).order_by(Connection.id)
        return list(s.scalars(query))


def connect_google(app: Flask, client_browser: Browser, staff_id: int, *, linked: int | None = 0,
                   conflict: tuple[int, ...] = (0,)) -> Connection:
    """Zoë connects her Google calendar "primary" from her page (busy time and linked)."""
    pick = client_browser.get(consent(start(client_browser, "google")))
    resp = connect(client_browser, "google", pick, staff_id=staff_id, linked=linked, conflict=conflict)
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return connected(app, staff_id)[-1]
