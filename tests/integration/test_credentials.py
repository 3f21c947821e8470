"""Stored CalDAV passwords and secret calendar addresses: sealed at rest, key outside the
database, rotation with `calsync rotate-credentials-key`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.accounts.credentials import KEY_FILE, CredentialsError, Vault, new_key, parse_keys
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import CompanyAccount, Connection
from calsync.web import create_app
from calsync.web.cli import main
from tests.conftest import Api
from tests.servers import CalendarHTTPServer

ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


def _stored(settings: Settings) -> list[tuple[str, str | None]]:
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT url_sealed, password_sealed FROM connection")).all()
    engine.dispose()
    return [(r[0], r[1]) for r in rows]


def test_a_database_copy_alone_reveals_no_address(
    api: Api, settings: Settings, calendar_http: CalendarHTTPServer
) -> None:
    url = calendar_http.add("/private-abcdef0123456789/basic.ics", ICS)
    api.post("/staff", {"name": "A", "email": "a@example.com"})
    assert api.post("/staff/1/connections", {"kind": "ics", "url": url}).status_code == 201
    # Every text column of the connection table, as a database dump would hold it.
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM connection")).all()
    engine.dispose()
    dumped = " ".join(str(value) for row in rows for value in row)
    assert "private-abcdef0123456789" not in dumped
    assert (settings.data_dir / KEY_FILE).stat().st_mode & 0o077 == 0


def test_rotation_with_the_key_in_the_data_dir(
    api: Api,
    settings: Settings,
    monkeypatch,  # type: ignore[no-untyped-def]
    calendar_http: CalendarHTTPServer,
) -> None:
    url = calendar_http.add("/c.ics", ICS)
    api.post("/staff", {"name": "A", "email": "a@example.com"})
    api.post("/staff/1/connections", {"kind": "ics", "url": url})
    key_file = settings.data_dir / KEY_FILE
    old = parse_keys(key_file.read_text())
    for name, value in {
        "CALSYNC_DATA_DIR": str(settings.data_dir),
        "CALSYNC_DATABASE_URL": settings.resolved_database_url,
        "CALSYNC_SECRET_KEY": settings.secret_key or "",
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["rotate-credentials-key"])
    assert result.exit_code == 0, result.output
    new = parse_keys(key_file.read_text())
    assert len(new) == 1 and new != old
    ((sealed_url, _),) = _stored(settings)
    assert Vault(new).open(sealed_url) == url
    with pytest.raises(CredentialsError):
        Vault(old).open(sealed_url)
    # The app keeps working with the rotated key.
    app = create_app(settings)
    assert app.extensions["calsync"].vault.open(sealed_url) == url


def test_rotation_with_keys_from_the_environment(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    first = new_key()
    app = create_app(settings.model_copy(update={"credentials_key": first}))
    vault = app.extensions["calsync"].vault
    with app.extensions["calsync"].sessions.begin() as s:
        company = get_or_create_company(s, "C", "UTC")
        staff = create_staff(s, company, name="A", email="a@example.com")
        s.add(
            Connection(
                company_id=company.id,
                staff_id=staff.id,
                kind="caldav",
                name="n",
                url_sealed=vault.seal("https://dav.example/cal/"),
                url_display="d",
                password_sealed=vault.seal("app-password"),
                roles=[],
                sync_mode="manual",
                interval_minutes=30,
                all_day="busy",
                treat_all_busy=False,
                status="pending",
                consecutive_failures=0,
                busy_count=0,
                extra={},
            )
        )
        s.add(Connection(  # a Google connection: its OAuth tokens are sealed the same way
            company_id=company.id, staff_id=staff.id, kind="google", name="g",
            url_sealed=vault.seal("google:primary"), url_display="Google Calendar",
            tokens_sealed=vault.seal('{"refresh_token": "1//refresh"}'), roles=["conflict"],
            sync_mode="manual", interval_minutes=30, all_day="busy", treat_all_busy=False,
            status="pending", consecutive_failures=0, busy_count=0, extra={}))
        # A company-wide account: the service account's key is sealed the same way.
        s.add(CompanyAccount(company_id=company.id, provider="google", display="sa@p.iam.gserviceaccount.com",
                             credentials_sealed=vault.seal('{"private_key": "-----BEGIN PRIVATE KEY-----"}')))
    app.extensions["calsync"].engine.dispose()
    second = new_key()
    env = {
        "CALSYNC_DATA_DIR": str(settings.data_dir),
        "CALSYNC_DATABASE_URL": settings.resolved_database_url,
        "CALSYNC_SECRET_KEY": settings.secret_key or "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CALSYNC_CREDENTIALS_KEY", first)
    refused = CliRunner().invoke(main, ["rotate-credentials-key"])
    assert refused.exit_code != 0 and "Put a new key first" in refused.output
    monkeypatch.setenv("CALSYNC_CREDENTIALS_KEY", f"{second},{first}")
    result = CliRunner().invoke(main, ["rotate-credentials-key"])
    assert result.exit_code == 0, result.output
    (url, password), (google_url, _none) = _stored(settings)
    assert Vault([second]).open(url) == "https://dav.example/cal/"
    assert Vault([second]).open(password or "") == "app-password"
    assert Vault([second]).open(google_url) == "google:primary"
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        (tokens,) = conn.execute(text("SELECT tokens_sealed FROM connection WHERE kind = 'google'")).one()
    engine.dispose()
    assert Vault([second]).open(tokens) == '{"refresh_token": "1//refresh"}'
    with pytest.raises(CredentialsError):
        Vault([first]).open(tokens)  # re-sealed with the new key, not merely readable with it
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        (key_file,) = conn.execute(text("SELECT credentials_sealed FROM company_account")).one()
    engine.dispose()
    assert Vault([second]).open(key_file) == '{"private_key": "-----BEGIN PRIVATE KEY-----"}'
    with pytest.raises(CredentialsError):
        Vault([first]).open(key_file)


def test_a_bad_key_is_a_sentence(settings: Settings) -> None:
    from calsync.feeds.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        create_app(settings.model_copy(update={"credentials_key": "not-a-fernet-key"}))
    assert "CALSYNC_CREDENTIALS_KEY" in str(err.value)
