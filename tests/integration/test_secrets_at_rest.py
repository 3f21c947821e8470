"""Secrets at rest and in logs (issue 14): the data folder and its files are private, no log
record carries a feed token or a connect link, and after a full run neither the database files
nor the logs hold any feed token or connect link that was issued."""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text

from calsync.feeds.accounts.credentials import KEY_FILE, Vault, new_key, parse_keys, rotate_all
from calsync.feeds.mail.outbox import open_message
from calsync.feeds.settings import Settings
from calsync.models import OutboxEmail
from calsync.web import create_app
from calsync.web.log_redaction import redact_secrets
from tests.admin_helpers import Browser, log_in, make_admin
from tests.admin_helpers import text_of as page_text
from tests.conftest import Api
from tests.mail_helpers import deliver, parse_message, with_mail
from tests.servers import SmtpSink

BASE = "https://cal.example.test"
FEED = re.compile(r"/feeds/([A-Za-z0-9_-]{22,})\.ics")
CONNECT = re.compile(r"/connect/([A-Za-z0-9_=-]{40,})")


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    """The default layout: SQLite database and queue inside the data folder."""
    return with_mail(settings, database_url=None, queue_url=None, smtp_url=smtp_server.url,
                     mail_from="team@salon.example")


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)  # migrates the new database in the data folder
    app.config["TESTING"] = True
    yield app
    app.extensions["calsync"].engine.dispose()


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


def test_the_data_folder_and_its_files_are_private(app: Flask, settings: Settings) -> None:
    """They were created 0755 and 0644: any local user could copy the database and the keys."""
    services = app.extensions["calsync"]
    make_admin(app)
    services.jobs.enqueue_delivery()  # creates the queue database
    folder = settings.data_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    found = modes(folder)
    assert {"calsync.sqlite3", "queue.sqlite3", "credentials_key"} <= set(found)
    assert any(name.endswith("-wal") for name in found)  # SQLite's own files are covered too
    assert {name: mode for name, mode in found.items() if mode != 0o600} == {}


def test_an_older_install_is_tightened(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "old-install"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "calsync.sqlite3").touch()
    (folder / "calsync.sqlite3").chmod(0o644)
    older = settings.model_copy(update={"data_dir": folder})
    older.prepare_data_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes(folder) == {"calsync.sqlite3": 0o600}


def test_redaction_of_secret_paths() -> None:
    line = "GET /feeds/abcDEF123_-abcDEF123_-xy.ics HTTP/1.1"
    assert redact_secrets(line) == "GET /feeds/[secret] HTTP/1.1"
    assert redact_secrets("https://h/connect/gAAAA-x=?a=1 next") == "https://h/connect/[secret]?a=1 next"
    assert redact_secrets("/connect/ and /feeds/") == "/connect/ and /feeds/"
    assert redact_secrets("/api/v1/feeds/12") == "/api/v1/feeds/[secret]"  # ids are no secret, but harmless


def _break_the_feeds(app: Flask) -> None:
    """A database that lost a table (a botched restore): rendering a feed fails with a 500."""
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(text("DROP TABLE feed_segment"))


def test_an_error_while_serving_a_feed_logs_no_token(app: Flask, api: Api,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Flask's "Exception on /feeds/<token>.ics [GET]" used to write the whole token."""
    staff = api.make_staff()
    feed = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "name": "Phone"}).get_json()
    token = FEED.search(feed["url"]).group(1)  # type: ignore[union-attr]
    _break_the_feeds(app)
    with caplog.at_level(logging.INFO):
        resp = app.test_client().get(f"/feeds/{token}.ics")
        # Any library's logger, e.g. waitress's "Exception while serving <path>".
        logging.getLogger("waitress").error("Exception while serving /feeds/%s.ics", token)
    assert resp.status_code == 503  # the database error handler's answer (web/errors.py)
    text = caplog.text
    assert "/feeds/[secret]" in text and "Exception while serving /feeds/[secret]" in text
    assert token not in text
    assert all(token not in record.getMessage() for record in caplog.records)


def test_a_full_run_leaves_no_token_or_link_in_the_database_or_logs(
    app: Flask, api: Api, settings: Settings, smtp_server: SmtpSink, caplog: pytest.LogCaptureFixture,
) -> None:
    """Feeds issued and fetched, an invitation sent and delivered, connect links made and opened,
    a feed failing: then every file in the data folder and every log line is searched for each
    feed token and connect link handed out."""
    caplog.set_level(logging.DEBUG)
    make_admin(app)
    admin = Browser(app.test_client())
    log_in(admin.client)
    zoe = api.make_staff()
    ana = api.make_staff(name="Ana Ortega", email="ana@example.com")
    issued: set[str] = set()
    for staff in (zoe, ana):
        resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "privacy": "busy"})
        issued.add(FEED.search(resp.get_json()["url"]).group(1))  # type: ignore[union-attr]
    issued |= {FEED.search(f["url"]).group(1) for f in api.get("/feeds").get_json()["feeds"]}  # type: ignore[union-attr]
    for token in list(issued):
        assert app.test_client().get(f"/feeds/{token}.ics").status_code == 200
    # An invitation with its connect link, delivered to a real SMTP server, and opened.
    form = {"to": "zoe@example.com", "subject": "Your calendar", "body": "{feed_url}\n{connect_url}"}
    invite = f"/staff/{zoe['id']}/invite"
    assert admin.post(invite, form, page=invite).status_code == 302
    assert deliver(app).sent == 1
    mailed = parse_message(smtp_server.messages[-1].data).get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    issued |= set(CONNECT.findall(mailed)) | set(FEED.findall(mailed))
    # A connect link shown to the admin, opened by the staff member.
    page = page_text(admin.post(f"/staff/{ana['id']}/connect-link", {}, page=f"/staff/{ana['id']}"))
    issued |= set(CONNECT.findall(page))
    for link in set(CONNECT.findall(mailed)) | set(CONNECT.findall(page)):
        visitor = app.test_client()
        assert visitor.get(f"/connect/{link}").status_code == 302
        assert visitor.get("/connect/").status_code == 200
    assert len(set(CONNECT.findall(mailed))) == 1 and len(set(CONNECT.findall(page))) == 1
    # A feed that fails (not yet in the render cache): its request line is logged.
    group = api.post("/groups", {"name": "Front desk", "staff_ids": [zoe["id"]]}).get_json()
    resp = api.post("/feeds", {"scope": "group", "scope_id": group["id"], "privacy": "limited"})
    failing = FEED.search(resp.get_json()["url"]).group(1)  # type: ignore[union-attr]
    issued.add(failing)
    _break_the_feeds(app)
    assert app.test_client().get(f"/feeds/{failing}.ics").status_code == 503
    app.extensions["calsync"].engine.dispose()

    stored = b"".join(p.read_bytes() for p in settings.data_dir.iterdir() if p.is_file())
    # Every record of the process except the test SMTP server's (mail.log: the recipient's
    # server logs the message it received, as any mail server may).
    logged = "\n".join(logging.Formatter().format(r) for r in caplog.records if r.name != "mail.log")
    assert len(issued) >= 6
    for secret in issued:
        assert secret.encode() not in stored, secret
        assert secret not in logged, secret


def test_key_rotation_reseals_waiting_emails(app: Flask, api: Api) -> None:
    """A sealed invitation waiting in the outbox must still open after the old credentials key
    is dropped (`calsync rotate-credentials-key`)."""
    make_admin(app)
    admin = Browser(app.test_client())
    log_in(admin.client)
    zoe = api.make_staff()
    invite = f"/staff/{zoe['id']}/invite"
    form = {"to": "zoe@example.com", "subject": "Your calendar", "body": "{connect_url}"}
    assert admin.post(invite, form, page=invite).status_code == 302
    services = app.extensions["calsync"]
    old_keys = parse_keys((services.settings.data_dir / KEY_FILE).read_text())
    fresh = new_key()
    with services.sessions.begin() as session:
        assert rotate_all(session, Vault([fresh, *old_keys])) == 1
    with services.sessions() as session:
        [email] = session.scalars(select(OutboxEmail)).all()
        opened = open_message(Vault([fresh]), email.message, email.message_sealed)
    assert "/connect/" in parse_message(opened).get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
