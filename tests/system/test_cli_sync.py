"""`calsync sync` and `calsync worker` from the shell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from calsync.feeds.settings import Settings
from calsync.web.cli import main
from tests.conftest import Api
from tests.servers import CalendarHTTPServer

SOON = datetime.now(UTC) + timedelta(days=3)
ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20260101T000000Z\r\n"
       + f"DTSTART:{SOON:%Y%m%dT090000Z}\r\nDTEND:{SOON:%Y%m%dT100000Z}\r\n".encode()
       + b"END:VEVENT\r\nEND:VCALENDAR\r\n")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CALSYNC_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("CALSYNC_SECRET_KEY", settings.secret_key or "")
    monkeypatch.setenv("CALSYNC_ALLOW_PRIVATE_NETWORKS", "1")


def test_sync_all_and_one(api: Api, env: None, calendar_http: CalendarHTTPServer) -> None:
    staff = api.make_staff()
    good = api.post(f"/staff/{staff['id']}/connections",
                    {"kind": "ics", "url": calendar_http.add("/ok.ics", ICS)}).get_json()
    bad = api.post(f"/staff/{staff['id']}/connections",
                   {"kind": "ics", "url": calendar_http.add("/gone.ics", ICS)}).get_json()
    del calendar_http.routes["/gone.ics"]
    result = CliRunner().invoke(main, ["sync", "--connection", str(good["id"])])
    assert result.exit_code == 0, result.output
    assert f"connection {good['id']}: ok, 1 busy block(s)" in result.output
    result = CliRunner().invoke(main, ["sync", "--all"])
    assert result.exit_code == 1  # one connection failed: the shell should know
    assert f"connection {bad['id']}: error" in result.output and "not found" in result.output
    assert api.get(f"/connections/{good['id']}").get_json()["status"] == "ok"


@pytest.mark.parametrize("args", [[], ["--all", "--connection", "1"], ["--connection", "999"]])
def test_sync_needs_a_clear_target(env: None, app: object, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["sync", *args])
    assert result.exit_code != 0 and "Error:" in result.output


def test_worker_help_names_its_options() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0 and "--workers" in result.output and "--no-schedule" in result.output
