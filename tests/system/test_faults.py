"""Faults (issue 7): a CalDAV server killed mid-sync, the database restarted during a sync and
during a feed request, a mail server refusing or hanging up, a worker process killed mid-job.
After recovery nothing is lost, nothing is duplicated, and no connection stays locked.

Every pause is an event the test controls (a request held by the test's server, a hook armed
in Radicale, a database stopped from inside a query), never a sleep. The worker fleet on Redis
is tests/system/test_worker_fleet.py; here the embedded SQLite queue of `calsync serve`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from calsync.feeds.accounts.admins import create_api_key, get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.jobs import due_connection_ids
from calsync.feeds.mail.delivery import MailContext, deliver_due
from calsync.feeds.mail.smtp import parse_smtp_url
from calsync.feeds.publishing.lookup_connections import lookup_connections
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Appointment, BusyBlock, Conflict, Connection, OutboxEmail, utcnow
from tests.clock import day_at
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, iso
from tests.hostile_servers import PrivatePostgres, RadicaleProcess, RefusingSmtp, unique_name
from tests.linked_helpers import Linked
from tests.servers import CalendarHTTPServer
from tests.waiting import wait_until

HANG_GUARD = 60.0  # seconds any wait may last before the test fails (not a speed check)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


def at(days: int, hour: int) -> datetime:
    return day_at(days, hour)


def ics_event(start: datetime) -> bytes:
    return (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:fault-1\r\n"
        b"DTSTAMP:20260101T000000Z\r\n"
        + f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\n".encode()
        + f"DTEND:{start + timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n".encode()
        + b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


class HeldCalendar:
    """An ICS calendar whose first request is held until the test releases it: the moment
    between a sync's fetch and its database write, where the faults are injected."""

    def __init__(self, server: CalendarHTTPServer) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.body = ics_event(at(2, 9))
        self.url = server.add("/held.ics", handler=self._answer)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        self.entered.set()
        self.release.wait(HANG_GUARD)
        h.send_response(200)
        h.send_header("Content-Type", "text/calendar")
        h.send_header("Content-Length", str(len(self.body)))
        h.end_headers()
        with contextlib.suppress(OSError):  # the worker that asked may have been killed
            h.wfile.write(self.body)


def add_ics_connection(app: Flask, url: str) -> int:
    services = app.extensions["calsync"]
    with services.sessions.begin() as s:
        company = get_or_create_company(s, "Fault Co", "Europe/Berlin")
        staff = create_staff(
            s, company, name="Zoë", email="z@example.com", timezone="Europe/Berlin", working_hours=ALL_DAY
        )
        return create_connection(
            s, company, services.vault, staff.id, ConnectionInput(kind="ics", url=url), allow_private=True
        ).id


def connection(app: Flask, cid: int) -> Connection:
    with app.extensions["calsync"].sessions() as s:
        conn = s.get(Connection, cid)
        assert conn is not None
        return conn


def busy_blocks(app: Flask, cid: int) -> int:
    with app.extensions["calsync"].sessions() as s:
        return len(s.scalars(select(BusyBlock).where(BusyBlock.connection_id == cid)).all())


# --- the CalDAV server killed mid-sync --------------------------------------------------------------


def test_caldav_server_killed_mid_push_loses_and_duplicates_nothing(
    app: Flask, api: Api, radicale_process: RadicaleProcess
) -> None:
    """Radicale stores our booking and dies before answering (the answer is lost, the write is
    not); a second booking is made while it is down. After it is back, each booking is in the
    calendar exactly once and nothing on the platform changed."""
    linked = Linked(app, api, radicale_process, working_hours=ALL_DAY)
    first = linked.book(at(2, 10))
    radicale_process.kill_after_next_write()
    outcome = linked.sync()
    assert radicale_process.was_killed()
    assert outcome.status == "error" and "retried" in (outcome.error or "")
    second = linked.book(at(3, 10))  # while the server is down
    down = linked.sync()
    assert (down.status, down.error) == ("error", "The calendar server refused the connection.")
    conn = connection(app, linked.connection_id)
    assert conn.lease_owner is None and conn.consecutive_failures == 2
    radicale_process.start()
    for _ in range(4):  # the copies come back after their backoff; each pass is one sync
        linked.past_backoff()
        linked.sync()
        if all(i.state == "synced" for i in linked.items()):
            break
    assert [i.state for i in linked.items()] == ["synced", "synced"]
    assert linked.calendar_uids() == sorted([first["uid"], second["uid"]])
    assert linked.sync().status in ("ok", "unchanged")
    assert connection(app, linked.connection_id).status == "ok"
    for appt, start in ((first, at(2, 10)), (second, at(3, 10))):
        now = api.get(f"/appointments/{appt['id']}").get_json()
        assert (now["status"], now["start"][:16]) == ("confirmed", iso(start)[:16])
    with linked.services.sessions() as s:
        assert s.scalars(select(Conflict)).all() == []
        assert sorted(s.scalars(select(Appointment.revision)).all()) == [1, 1]
        # One customer email per booking: the fault added none.
        assert len(s.scalars(select(OutboxEmail)).all()) == 2


# --- the database restarted ---------------------------------------------------------------------------


@pytest.fixture
def pg_app(private_postgres: PrivatePostgres, settings: Settings) -> Iterator[Flask]:
    """The app on a database of its own in the throwaway cluster, which the test may restart."""
    from calsync.web import create_app

    name = unique_name("faults_")
    # No pool: the test restarts the server, and each statement here gets a fresh connection.
    admin = create_engine(private_postgres.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    app = create_app(
        settings.model_copy(update={"database_url": private_postgres.url.rsplit("/", 1)[0] + "/" + name})
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["calsync"].engine.dispose()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_api(app: Flask) -> Api:
    with app.extensions["calsync"].sessions.begin() as s:
        company = get_or_create_company(s, "Fault Co", "Europe/Berlin")
        _, key = create_api_key(s, company, "faults")
    return Api(app.test_client(), key)


def assert_unavailable(resp: Any, *, json: bool) -> None:
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.get_data(as_text=True)
    assert "Traceback" not in body and "psycopg" not in body and "OperationalError" not in body
    message = resp.get_json()["error"] if json else body
    assert message.startswith("The service is briefly unavailable") and "try again" in message


def test_a_feed_request_during_a_database_restart_gets_a_503_then_the_same_feed(
    pg_app: Flask, private_postgres: PrivatePostgres
) -> None:
    api = make_api(pg_app)
    staff = api.make_staff(working_hours=ALL_DAY)
    assert api.book(staff["id"], iso(at(2, 10)), iso(at(2, 11))).status_code == 201
    path = api.feed_url("staff", staff["id"])
    client = pg_app.test_client()
    before = client.get(path)
    assert before.status_code == 200
    engine = pg_app.extensions["calsync"].engine
    stopped: list[str] = []

    def stop_the_database(*_args: Any) -> None:
        if not stopped:
            stopped.append("yes")
            private_postgres.stop()

    # The request has its connection (alive: from the pool, checked on the way out, or one the
    # feed lookup keeps aside), and then the server goes away before the request's first query.
    event.listen(engine, "checkout", stop_the_database)
    stash = lookup_connections(engine)
    assert stash is not None
    real_take = stash.take
    stash.take = lambda: (real_take(), stop_the_database())[0]  # type: ignore[method-assign]
    try:
        assert_unavailable(client.get(path), json=False)
    finally:
        event.remove(engine, "checkout", stop_the_database)
        del stash.take
    try:
        assert stopped
        assert_unavailable(client.get(path), json=False)  # still down
        assert_unavailable(api.get("/staff"), json=True)
    finally:
        private_postgres.start()
    after = client.get(path)  # the pool replaces the dead connections (ping_idle_connections)
    assert after.status_code == 200
    assert (after.headers["ETag"], after.data) == (before.headers["ETag"], before.data)
    assert client.get(path, headers={"If-None-Match": before.headers["ETag"]}).status_code == 304
    assert api.get("/staff").status_code == 200


def run_in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except Exception as exc:  # handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_a_database_restart_while_a_sync_fetches_changes_nothing(
    pg_app: Flask, private_postgres: PrivatePostgres, calendar_http: CalendarHTTPServer
) -> None:
    held = HeldCalendar(calendar_http)
    cid = add_ics_connection(pg_app, held.url)
    thread, result = run_in_thread(lambda: sync_connection(pg_app.extensions["calsync"].sync, cid))
    assert held.entered.wait(HANG_GUARD)
    private_postgres.stop()
    private_postgres.start()
    held.release.set()
    thread.join(HANG_GUARD)
    assert "error" not in result, result
    assert result["value"].status == "ok"
    assert busy_blocks(pg_app, cid) == 1
    conn = connection(pg_app, cid)
    assert (conn.status, conn.lease_owner, conn.lease_until) == ("ok", None, None)


def test_a_sync_cut_off_by_the_database_holds_its_lease_only_until_it_expires(
    pg_app: Flask, private_postgres: PrivatePostgres, calendar_http: CalendarHTTPServer
) -> None:
    """The database is down when the sync wants to write its result: the sync fails without
    writing, its lease runs out by itself, and the next sync completes."""
    ctx = pg_app.extensions["calsync"].sync
    held = HeldCalendar(calendar_http)
    cid = add_ics_connection(pg_app, held.url)
    thread, result = run_in_thread(lambda: sync_connection(ctx, cid))
    assert held.entered.wait(HANG_GUARD)
    private_postgres.stop()
    try:
        held.release.set()
        thread.join(HANG_GUARD)
    finally:
        private_postgres.start()
    assert isinstance(result.get("error"), OperationalError), result
    conn = connection(pg_app, cid)
    assert conn.lease_owner is not None and conn.last_attempt_at is not None
    assert conn.lease_until is not None
    assert conn.lease_until <= conn.last_attempt_at + timedelta(seconds=ctx.lease_seconds)
    assert busy_blocks(pg_app, cid) == 0 and conn.status == "pending"
    # Until the lease expires nobody else syncs it; then the scheduler finds it due again.
    assert sync_connection(ctx, cid).status == "skipped"
    assert cid not in due_connection_ids(ctx, utcnow())
    expired = conn.lease_until + timedelta(seconds=1)
    assert cid in due_connection_ids(ctx, expired)
    assert sync_connection(ctx, cid, now=expired).status == "ok"
    conn = connection(pg_app, cid)
    assert (conn.status, conn.lease_owner, busy_blocks(pg_app, cid)) == ("ok", None, 1)


# --- the mail server refusing ------------------------------------------------------------------------------


def mail_context(app: Flask, smtp: RefusingSmtp) -> MailContext:
    return MailContext(
        sessions=app.extensions["calsync"].sessions, smtp=parse_smtp_url(smtp.url, 10.0), max_attempts=5
    )


def book_three(api: Api) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    for i in range(3):
        resp = api.book(
            staff["id"],
            iso(at(2, 9 + i)),
            iso(at(2, 9 + i) + timedelta(minutes=30)),
            customer={"name": f"Customer {i}", "email": f"c{i}@example.com"},
        )
        assert resp.status_code == 201, resp.get_json()


def emails(app: Flask) -> dict[str, OutboxEmail]:
    with app.extensions["calsync"].sessions() as s:
        return {e.to_address: e for e in s.scalars(select(OutboxEmail))}


def test_recipients_refused_one_permanently_one_for_now(
    app: Flask, api: Api, refusing_smtp: RefusingSmtp
) -> None:
    """550 for one recipient fails that email at once; 451 for another keeps it for a retry
    with backoff; the third goes out in the same session. When the server accepts, the held
    email is delivered exactly once."""
    book_three(api)
    ctx = mail_context(app, refusing_smtp)
    refusing_smtp.refuse_rcpt = {
        "c0@example.com": "550 5.1.1 No such user here",
        "c1@example.com": "451 4.2.1 Mailbox busy, try later",
    }
    now = utcnow()
    report = deliver_due(ctx, now=now)
    assert (report.sent, report.failed_attempts, report.gave_up) == (1, 2, 1)
    rows = emails(app)
    assert (rows["c0@example.com"].status, rows["c1@example.com"].status) == ("failed", "pending")
    for row, code in ((rows["c0@example.com"], "550"), (rows["c1@example.com"], "451")):
        assert code in (row.last_error or "") and "refused the recipient" in (row.last_error or "")
        assert "Traceback" not in (row.last_error or "")
    assert rows["c1@example.com"].next_attempt_at > now  # type: ignore[operator]
    assert deliver_due(ctx, now=now).failed_attempts == 0  # not due yet
    refusing_smtp.refuse_rcpt = {}
    later = now + timedelta(minutes=2)
    assert deliver_due(ctx, now=later).sent == 1
    assert deliver_due(ctx, now=later + timedelta(hours=7)).sent == 0
    assert sorted(r for r, _m in refusing_smtp.accepted) == ["c1@example.com", "c2@example.com"]
    assert set(refusing_smtp.message_ids().values()) == {1}
    assert emails(app)["c0@example.com"].status == "failed"  # a 5xx is not retried by itself


def test_a_mail_server_hanging_up_mid_message_loses_and_duplicates_nothing(
    app: Flask, api: Api, refusing_smtp: RefusingSmtp
) -> None:
    """The server receives a message and hangs up before accepting it: nothing was delivered,
    so every email stays pending with a sentence, and each arrives exactly once later."""
    book_three(api)
    ctx = mail_context(app, refusing_smtp)
    refusing_smtp.drop_data = True
    now = utcnow()
    report = deliver_due(ctx, now=now)
    assert (report.sent, report.failed_attempts, report.gave_up) == (0, 3, 0)
    for row in emails(app).values():
        assert (row.status, row.attempts, row.lease_until) == ("pending", 1, None)
        assert "broke off" in (row.last_error or "") or "could not be reached" in (row.last_error or "")
    refusing_smtp.drop_data = False
    assert deliver_due(ctx, now=now + timedelta(seconds=30)).sent == 0  # backoff: one minute
    assert deliver_due(ctx, now=now + timedelta(minutes=1, seconds=1)).sent == 3
    assert deliver_due(ctx, now=now + timedelta(hours=7)).sent == 0
    assert len(refusing_smtp.accepted) == 3 and set(refusing_smtp.message_ids().values()) == {1}
    assert {r.status for r in emails(app).values()} == {"sent"}


# --- a worker process killed mid-job -------------------------------------------------------------------


def test_a_worker_killed_mid_sync_on_the_embedded_queue_loses_nothing(
    app: Flask, settings: Settings, calendar_http: CalendarHTTPServer
) -> None:
    """`calsync worker` on the SQLite queue takes the job and is killed (SIGKILL) while the
    calendar server holds its request. The job is gone with it (Huey has no acknowledgement);
    the connection's lease names the dead process and runs out by itself; then the scheduler
    queues the connection again, another worker syncs it, and its busy time is there once."""
    held = HeldCalendar(calendar_http)
    cid = add_ics_connection(app, held.url)
    services = app.extensions["calsync"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(
        {
            "CALSYNC_DATA_DIR": str(settings.data_dir),
            "CALSYNC_DATABASE_URL": settings.database_url or "",
            "CALSYNC_SECRET_KEY": settings.secret_key or "",
            "CALSYNC_ALLOW_PRIVATE_NETWORKS": "1",
        }
    )
    command = [
        sys.executable,
        "-c",
        "from calsync.web.cli import main; main()",
        "worker",
        "--workers",
        "1",
        "--no-schedule",
    ]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        services.jobs.enqueue_sync(cid)
        assert held.entered.wait(HANG_GUARD), "the worker did not take the job"
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(HANG_GUARD) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    held.release.set()
    assert services.jobs.huey.pending_count() == 0  # the job died with the worker
    conn = connection(app, cid)
    assert conn.lease_owner is not None and f":{worker.pid}:" in conn.lease_owner
    assert conn.lease_until is not None and conn.last_attempt_at is not None
    assert conn.lease_until <= conn.last_attempt_at + timedelta(seconds=services.sync.lease_seconds)
    assert services.jobs._schedule_due() == 0  # leased: not handed out again yet
    with services.sessions.begin() as s:  # the lease's time passes
        s.get(Connection, cid).lease_until = utcnow() - timedelta(seconds=1)
    consumer = services.jobs.start_in_background(workers=1, periodic=False)
    try:
        assert services.jobs._schedule_due() == 1
        wait_until(lambda: connection(app, cid).status == "ok", "the retried sync", limit=HANG_GUARD)
    finally:
        consumer.stop(graceful=True)
    conn = connection(app, cid)
    assert (conn.lease_owner, conn.consecutive_failures, busy_blocks(app, cid)) == (None, 0, 1)
    assert calendar_http.hits["/held.ics"] == 2
