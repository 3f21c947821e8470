"""The admin's company-wide connection page (/company-accounts) against the contract fakes:
upload a service-account key / enter an app registration, check every staff member, see a
sentence for the ones refused, connect the reachable ones; bad input is a sentence, not a 500."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import CompanyAccount, Connection
from tests.admin_helpers import Browser, text_of
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph


@pytest.fixture
def settings(settings: Settings, google: ServedFake, graph: ServedGraph) -> Settings:
    return settings.model_copy(update={
        "allow_private_networks": True, "google_api_base_url": google.api_base,
        "google_token_url": google.url + "/token", "microsoft_graph_base_url": graph.url + "/v1.0",
        "microsoft_login_base_url": graph.url, "microsoft_ca_file": graph.ca_file})


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    zoe = api.make_staff(name="Zoë Müller", email="zoe@salon.example")
    api.make_staff(name="Max Weber", email="max@salon.example")
    return zoe


def _connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as session:
        return list(session.scalars(select(Connection).order_by(Connection.id)))


PAGE = "/company-accounts"


def test_google_workspace_from_upload_to_connected_calendars(
        app: Flask, admin: Browser, staff: dict[str, Any], google: ServedFake) -> None:
    google.fake.add_workspace_user("zoe@salon.example", "Zoë")
    google.fake.add_workspace_user("max@salon.example", "Max", delegated=False)
    info = google.fake.add_service_account(google.url + "/token")
    assert "Company-wide calendar access" in text_of(admin.get("/"))  # reached from Calendar sync

    sent = admin.post(PAGE + "/google", {"key_file": (io.BytesIO(json.dumps(info).encode()), "key.json")},
                      page=PAGE, content_type="multipart/form-data", follow_redirects=True)
    assert sent.status_code == 200 and info["client_email"] in text_of(sent)
    page = text_of(admin.post(PAGE + "/google/check", page=PAGE, follow_redirects=True))
    assert "1 reachable, 1 not" in page
    assert "✓ Reachable" in page
    assert "Max Weber (max@salon.example) is not in the domain-wide delegation" in page

    connected = text_of(admin.post(PAGE + "/google/connect", page=PAGE, follow_redirects=True))
    assert "Connected 1 calendar(s)" in connected
    (conn,) = _connections(app)
    assert (conn.kind, conn.account_email) == ("google", "zoe@salon.example")
    assert conn.roles == ["conflict", "linked"]
    with app.extensions["calsync"].sessions() as session:
        (account,) = session.scalars(select(CompanyAccount)).all()
        assert info["private_key"] not in account.credentials_sealed  # sealed, never in the clear


def test_microsoft_365_names_the_mailbox_outside_the_policy(
        app: Flask, admin: Browser, staff: dict[str, Any], graph: ServedGraph) -> None:
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    graph.fake.refused_users.add("zoe@salon.example")
    admin.post(PAGE + "/microsoft", {"tenant": "salon.onmicrosoft.com", "client_id": client_id,
                                     "client_secret": secret}, page=PAGE)
    page = text_of(admin.post(PAGE + "/microsoft/check", page=PAGE, follow_redirects=True))
    assert "Zoë Müller (zoe@salon.example)&#39;s mailbox is outside the app&#39;s allowed mailboxes" in page
    assert "application access policy" in page
    refused = text_of(admin.post(PAGE + "/microsoft/connect", {"staff_id": str(staff["id"])}, page=PAGE,
                                 follow_redirects=True))
    assert "outside the app&#39;s allowed mailboxes" in refused and _connections(app) == []
    admin.post(PAGE + "/microsoft/connect", page=PAGE)
    (conn,) = _connections(app)
    assert (conn.kind, conn.account_email) == ("microsoft", "max@salon.example")

    gone = text_of(admin.post(PAGE + "/microsoft/disconnect", page=PAGE, follow_redirects=True))
    assert "1 calendar connection(s) made through it" in gone and _connections(app) == []


def test_bad_input_is_a_sentence_and_nothing_is_saved(app: Flask, admin: Browser,
                                                      staff: dict[str, Any]) -> None:
    oauth_client_file = json.dumps({"web": {"client_id": "x.apps.googleusercontent.com"}}).encode()
    upload = {"key_file": (io.BytesIO(oauth_client_file), "client.json")}
    page = text_of(admin.post(PAGE + "/google", upload, page=PAGE, content_type="multipart/form-data",
                              follow_redirects=True))
    assert "an OAuth client file does not work here" in page
    typed = {"tenant": "common", "client_id": "x", "client_secret": "s"}
    page = text_of(admin.post(PAGE + "/microsoft", typed, page=PAGE, follow_redirects=True))
    assert "tenant" in page
    page = text_of(admin.post(PAGE + "/google/check", page=PAGE, follow_redirects=True))
    assert "Connect a company-wide Google Workspace account first" in page
    with app.extensions["calsync"].sessions() as session:
        assert session.scalars(select(CompanyAccount)).all() == []
