"""`calsync connector-check google|microsoft` against the contract fakes: it lists the
calendars, does one read-only incremental sync (a listing that ends with a token, one pass with
the token), prints what it saw, writes nothing, and turns every refusal into a sentence."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from flask import Flask

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.company_accounts import connect_google_account, connect_microsoft_account
from calsync.feeds.calendars.provider_access import open_tokens, seal_tokens
from calsync.feeds.calendars.providers.base import Tokens
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Connection, utcnow
from calsync.web.cli import main
from tests.fakes.google_calendar import GoogleCalendarFake, ServedFake
from tests.fakes.microsoft_graph import MicrosoftGraphFake, ServedGraph


@pytest.fixture
def env(settings: Settings, google: ServedFake, graph: ServedGraph,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CALSYNC_DATA_DIR": str(settings.data_dir), "CALSYNC_DATABASE_URL": settings.resolved_database_url,
        "CALSYNC_SECRET_KEY": settings.secret_key or "", "CALSYNC_ALLOW_PRIVATE_NETWORKS": "1",
        "CALSYNC_GOOGLE_API_BASE_URL": google.api_base, "CALSYNC_GOOGLE_TOKEN_URL": google.url + "/token",
        "CALSYNC_GOOGLE_CLIENT_ID": GoogleCalendarFake.CLIENT_ID,
        "CALSYNC_GOOGLE_CLIENT_SECRET": GoogleCalendarFake.CLIENT_SECRET,
        "CALSYNC_MICROSOFT_GRAPH_BASE_URL": graph.url + "/v1.0",
        "CALSYNC_MICROSOFT_LOGIN_BASE_URL": graph.url, "CALSYNC_MICROSOFT_CA_FILE": graph.ca_file,
        "CALSYNC_MICROSOFT_CLIENT_ID": MicrosoftGraphFake.CLIENT_ID,
        "CALSYNC_MICROSOFT_CLIENT_SECRET": MicrosoftGraphFake.CLIENT_SECRET,
    }.items():
        monkeypatch.setenv(name, value)


def _event(n: int) -> dict[str, object]:
    return {"summary": f"Busy {n}", "start": {"dateTime": f"2027-01-{11 + n:02d}T10:00:00Z"},
            "end": {"dateTime": f"2027-01-{11 + n:02d}T11:00:00Z"}}


def test_a_staff_members_own_google_connection(app: Flask, env: None, google: ServedFake) -> None:
    for n in range(3):
        google.fake.put_event("primary", _event(n))
    access, refresh = google.fake.grant()
    expired = Tokens(access, refresh, time.time() - 1)  # refreshed on the way, and kept
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        company = get_or_create_company(session, "Salon", "Europe/Berlin")
        staff = create_staff(session, company, name="Zoë", email="zoe@example.com")
        conn = Connection(company_id=company.id, staff_id=staff.id, kind="google", name="Zoë's Google",
                          url_sealed=services.vault.seal("google:primary"), url_display="Google Calendar",
                          tokens_sealed=seal_tokens(services.vault, expired),
                          account_email="zoe@example.com", remote_calendar_id="primary", roles=["conflict"],
                          sync_mode="manual", interval_minutes=30, all_day="busy", treat_all_busy=False,
                          status="pending", consecutive_failures=0, busy_count=0, extra={},
                          created_at=utcnow(), updated_at=utcnow())
        session.add(conn)
        session.flush()
        conn_id = conn.id
    before = google.fake.revision
    result = CliRunner().invoke(main, ["connector-check", "google", "--connection", str(conn_id)])
    assert result.exit_code == 0, result.output
    assert "- Zoe [owner, primary] id=primary" in result.output
    assert "full listing: 3 items" in result.output and "sync token received: yes" in result.output
    assert "incremental pass with that token: 0 changed, 0 deleted, 1 request(s)" in result.output
    assert google.fake.revision == before  # read-only: nothing written
    assert not google.fake.requests_to("POST", "/events") and not google.fake.requests_to("PATCH")
    with services.sessions() as session:
        stored = session.get(Connection, conn_id)
        assert stored is not None and stored.sync_token is None and stored.status == "pending"
        kept = open_tokens(services.vault, stored.tokens_sealed or "", "Google Calendar")
        assert kept.access_token != access and kept.expires_at > time.time()  # the refreshed one


def test_the_company_wide_google_account_acting_as_a_staff_member(
        app: Flask, env: None, google: ServedFake) -> None:
    info = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("zoe@salon.example", "Zoë")
    google.fake.add_workspace_user("max@salon.example", "Max", delegated=False)
    google.fake.put_event("zoe@salon.example", _event(1))
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        connect_google_account(session, get_or_create_company(session, "Salon", "UTC"), services.vault,
                               json.dumps(info))
    ok = CliRunner().invoke(main, ["connector-check", "google", "--company-as", "zoe@salon.example"])
    assert ok.exit_code == 0, ok.output
    assert "calendars of zoe@salon.example" in ok.output and "full listing: 1 items" in ok.output
    refused = CliRunner().invoke(main, ["connector-check", "google", "--company-as", "max@salon.example"])
    assert refused.exit_code == 1
    assert "is not in the domain-wide delegation" in refused.output and "Traceback" not in refused.output


def test_the_company_wide_microsoft_account_and_a_refused_mailbox(
        app: Flask, env: None, graph: ServedGraph) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    for n in range(2):
        graph.fake.put_event(start + timedelta(days=n), start + timedelta(days=n, hours=1))
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    graph.fake.refused_users.add("zoe@salon.example")
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        connect_microsoft_account(session, get_or_create_company(session, "Salon", "UTC"), services.vault,
                                  tenant="salon.onmicrosoft.com", client_id=client_id, client_secret=secret)
    ok = CliRunner().invoke(main, ["connector-check", "microsoft", "--company-as", "max@salon.example"])
    assert ok.exit_code == 0, ok.output
    assert "- Calendar [writer, primary]" in ok.output and "full listing: 2 items" in ok.output
    assert "incremental pass with that token: 0 changed, 0 deleted, 1 request(s)" in ok.output
    refused = CliRunner().invoke(main, ["connector-check", "microsoft", "--company-as", "zoe@salon.example"])
    assert refused.exit_code == 1 and "ErrorAccessDenied" in refused.output


def test_wrong_use_is_a_sentence(app: Flask, env: None) -> None:
    both = CliRunner().invoke(main, ["connector-check", "google"])
    assert both.exit_code == 2 and "--connection ID or --company-as EMAIL" in both.output
    missing = CliRunner().invoke(main, ["connector-check", "microsoft", "--connection", "999"])
    assert missing.exit_code == 1 and "no microsoft calendar connection with id 999" in missing.output
    none = CliRunner().invoke(main, ["connector-check", "google", "--company-as", "a@b.example"])
    assert none.exit_code == 1 and "No company-wide google account is connected" in none.output
