"""The `calsync` command."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import (
    change_password,
    create_admin,
    create_api_key,
    disable_admin,
    find_admin,
    get_or_create_company,
)
from calsync.feeds.demo import load_demo
from calsync.feeds.errors import CalsyncError
from calsync.feeds.publishing.tokens import ensure_default_tokens, feed_links, list_feed_tokens, reveal_token
from calsync.feeds.scheduling.working_hours import parse_timezone
from calsync.feeds.settings import load_settings
from calsync.models import AdminUser, Staff
from calsync.web.heap import freeze_heap


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _app(**overrides: object) -> Flask:
    from calsync.web.app import create_app

    try:
        return create_app(load_settings(None, **overrides))
    except CalsyncError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


@contextmanager
def _session(app: Flask) -> Iterator[Session]:
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        yield session


@click.group(help="calsync: calendar-sync server. Settings come from CALSYNC_* variables.")
def main() -> None:
    pass


@main.command(help="Create or upgrade the database schema (safe to repeat).")
@click.option("--company", "company_name", default="My company", show_default=True,
              help="Name of the company, when none exists yet.")
@click.option("--timezone", default="UTC", show_default=True, help="The company's IANA time zone.")
def init(company_name: str, timezone: str) -> None:
    try:
        parse_timezone(timezone)
    except CalsyncError as exc:
        _fail(str(exc))
    app = _app()
    with _session(app) as session:
        company = get_or_create_company(session, company_name, timezone)
        ensure_default_tokens(session, company, app.extensions["calsync"].sealer)
    click.echo(f"Database ready: {app.extensions['calsync'].settings.resolved_database_url}")


@main.command("demo-data", help="Load demo staff, groups and appointments.")
@click.option("--staff", "staff_count", default=6, show_default=True, type=click.IntRange(1, 10000),
              help="How many staff members to add (split into two groups).")
@click.option("--appointments", default=200, show_default=True, type=click.IntRange(0, 10**6),
              help="How many appointments to book, across a daylight-saving change.")
def demo_data(staff_count: int, appointments: int) -> None:
    app = _app()
    with _session(app) as session:
        company = get_or_create_company(session, "Salon Sommer & Söhne", "Europe/Berlin")
        result = load_demo(session, company, staff_count=staff_count, appointment_count=appointments)
        ensure_default_tokens(session, company, app.extensions["calsync"].sealer)
    click.echo(
        f"Loaded {len(result.staff_ids)} staff, {len(result.group_ids)} groups, "
        f"{result.appointments} appointments."
    )


@main.command("create-admin", help="Create an admin user of the web UI.")
@click.option("--email", required=True, help="The admin's email address; it is the login name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_admin_cmd(email: str, password_stdin: bool) -> None:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    app = _app()
    try:
        with _session(app) as session:
            company = get_or_create_company(session)
            create_admin(session, company, email, password,
                         profile=app.extensions["calsync"].settings.password_hash_profile)
    except CalsyncError as exc:
        _fail(str(exc))
    click.echo(f"Admin {email.strip().lower()} created.")


@main.command("set-admin-password",
              help="Set an admin's password; every session of that admin ends.")
@click.option("--email", required=True, help="The admin's email address.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_admin_password_cmd(email: str, password_stdin: bool) -> None:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    app = _app()
    try:
        with _session(app) as session:
            change_password(session, find_admin(session, email), password,
                            profile=app.extensions["calsync"].settings.password_hash_profile)
    except CalsyncError as exc:
        _fail(str(exc))
    click.echo(f"Password of {email.strip().lower()} changed; their sessions have ended.")


@main.command("disable-admin", help="Stop an admin from logging in and end their sessions now.")
@click.option("--email", required=True, help="The admin's email address.")
def disable_admin_cmd(email: str) -> None:
    app = _app()
    try:
        with _session(app) as session:
            disable_admin(session, find_admin(session, email))
    except CalsyncError as exc:
        _fail(str(exc))
    click.echo(f"Admin {email.strip().lower()} disabled; their sessions have ended.")


@main.group("api-key", help="Manage API keys of the JSON API.")
def api_key() -> None:
    pass


@api_key.command("create", help="Create an API key; the key is printed once, on the last line.")
@click.option("--name", required=True, help="What the key is for, e.g. 'booking site'.")
def api_key_create(name: str) -> None:
    app = _app()
    try:
        with _session(app) as session:
            company = get_or_create_company(session)
            row, key = create_api_key(session, company, name)
    except CalsyncError as exc:
        _fail(str(exc))
    click.echo(f"API key '{row.name}' created. Keep it safe; it will not be shown again.")
    click.echo(key)


def print_feed_urls(app: Flask) -> None:
    services = app.extensions["calsync"]
    with _session(app) as session:
        company = get_or_create_company(session)
        for row in list_feed_tokens(session, company):
            plain = reveal_token(services.sealer, row)
            url = (feed_links(services.settings.base_url, plain, name=row.name).url if plain
                   else "(key changed)")
            click.echo(f"  {row.scope:<8} {row.name:<40} {url}")


def _demo(app: Flask) -> None:
    services = app.extensions["calsync"]
    with _session(app) as session:
        company = get_or_create_company(session, "Salon Sommer & Söhne", "Europe/Berlin")
        if not session.scalar(select(func.count()).select_from(Staff)):
            result = load_demo(session, company)
            click.echo(f"Demo company loaded: {result.appointments} appointments.")
        ensure_default_tokens(session, company, services.sealer)
        if not session.scalar(select(func.count()).select_from(AdminUser)):
            password = secrets.token_urlsafe(12)
            create_admin(session, company, "admin@demo.calsync.test", password,
                         profile=services.settings.password_hash_profile)
            _, key = create_api_key(session, company, "demo")
            click.echo("Admin login: admin@demo.calsync.test")
            click.echo(f"Admin password (shown once): {password}")
            click.echo(f"API key (shown once): {key}")
    click.echo("Feed URLs:")
    print_feed_urls(app)


@main.command(help="Serve calsync with waitress (a production WSGI server).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 listens on every network interface.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="TCP port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Worker threads of the WSGI server.")
@click.option("--demo", is_flag=True, help="Load a demo company, admin and API key first.")
def serve(host: str, port: int, threads: int, demo: bool) -> None:
    import waitress

    overrides = {}
    if "CALSYNC_BASE_URL" not in os.environ:
        # Links printed and shown must point where we actually listen.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only a comparison
        overrides["base_url"] = f"http://{shown}:{port}"
    app = _app(**overrides)
    if demo:
        _demo(app)
    freeze_heap()  # what the app built to start is not walked by full collections (web/heap.py)
    click.echo(f"Serving on http://{host}:{port}  (Ctrl+C to stop)")
    services = app.extensions["calsync"]
    consumer = None
    if services.settings.workers and not services.settings.queue_url:
        # The embedded default: the queue's consumer runs in this process, in threads.
        consumer = services.jobs.start_in_background(workers=services.settings.workers)
        # The web server owns the process: SIGTERM ends it cleanly (and stops the consumer).
        signal.signal(signal.SIGTERM, _exit_on_signal)
        click.echo(f"Background worker: {services.settings.workers} thread(s), SQLite queue.")
    elif services.settings.queue_url:
        click.echo("Background work is done by `calsync worker` processes (CALSYNC_QUEUE_URL).")
    try:
        waitress.serve(app, host=host, port=port, threads=threads, ident="calsync")
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@main.command(help="Run a background worker: syncs calendars and delivers queued work.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker threads in this process.")
@click.option("--no-schedule", is_flag=True,
              help="Do not run the periodic scheduler here (run it in exactly one place).")
def worker(workers: int, no_schedule: bool) -> None:
    app = _app(workers=workers)  # also sizes the database pool for this many threads
    services = app.extensions["calsync"]
    click.echo(f"Worker started: {workers} thread(s); queue "
               f"{'Redis' if services.settings.queue_url else 'SQLite in the data dir'}.")
    services.jobs.consumer(workers=workers, periodic=not no_schedule).run()


@main.command(help="Sync calendar connections now, from the shell.")
@click.option("--connection", "connection_id", type=int, help="Sync this connection only.")
@click.option("--all", "sync_all", is_flag=True, help="Sync every connection.")
def sync(connection_id: int | None, sync_all: bool) -> None:
    from calsync.feeds.calendars.sync import sync_connection
    from calsync.models import Connection

    if (connection_id is None) == (not sync_all):
        _fail("Give either --connection ID or --all.")
    app = _app()
    services = app.extensions["calsync"]
    with _session(app) as session:
        if sync_all:
            ids = list(session.scalars(select(Connection.id).order_by(Connection.id)))
        else:
            if session.get(Connection, connection_id) is None:
                _fail(f"There is no connection with id {connection_id}.")
            ids = [connection_id]  # type: ignore[list-item]
    failed = 0
    with click.progressbar(ids, label="Syncing", show_pos=True,
                           item_show_func=lambda i: f"connection {i}" if i else "") as bar:
        outcomes = []
        for cid in bar:
            outcome = sync_connection(services.sync, cid)
            outcomes.append(outcome)
            failed += outcome.status == "error"
    for outcome in outcomes:
        line = f"  connection {outcome.connection_id}: {outcome.status}, {outcome.busy_count} busy block(s)"
        click.echo(line + (f" — {outcome.error}" if outcome.error else ""))
    if failed:
        sys.exit(1)


@main.command("connector-check",
              help="With real credentials: list the calendars and do one read-only incremental sync "
                   "(Google or Microsoft), to confirm against the real service.")
@click.argument("provider", type=click.Choice(["google", "microsoft"]))
@click.option("--connection", "connection_id", type=int,
              help="A staff member's google/microsoft connection (its id on the Sync health page).")
@click.option("--company-as", "address", metavar="EMAIL",
              help="The company-wide account, acting as this staff member's address.")
@click.option("--company-id", type=int, help="Whose company-wide account, when several companies have one.")
def connector_check(provider: str, connection_id: int | None, address: str | None,
                    company_id: int | None) -> None:
    from calsync.feeds.calendars.company_accounts import CompanyAccess
    from calsync.feeds.calendars.connector_check import check_company_account, check_connection

    if (connection_id is None) == (address is None):
        _fail("Give either --connection ID or --company-as EMAIL.")
    app = _app()
    services = app.extensions["calsync"]
    try:
        if connection_id is not None:
            report = check_connection(services.sessions, services.vault, services.sync.providers, provider,
                                      connection_id)
        else:
            with services.sessions() as session:
                access = CompanyAccess.of_setup(services.sync.providers)
                report = check_company_account(session, services.vault, access, provider, address or "",
                                               company_id)
    except CalsyncError as exc:  # refusals, unreachable providers, unknown ids: a sentence each
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    for line in report.lines():
        click.echo(line)


@main.command("rotate-credentials-key",
              help="Seal every stored calendar password, address, token and company account key "
                   "with a new key.")
@click.option("--print-new-key", is_flag=True,
              help="Only print a new key (to put first in CALSYNC_CREDENTIALS_KEY).")
def rotate_credentials_key(print_new_key: bool) -> None:
    from calsync.feeds.accounts.credentials import KEY_FILE, Vault, new_key, parse_keys, rotate_all

    if print_new_key:
        click.echo(new_key())
        return
    app = _app()
    services = app.extensions["calsync"]
    settings = services.settings
    if settings.credentials_key:
        keys = parse_keys(settings.credentials_key)
        if len(keys) < 2:
            _fail("CALSYNC_CREDENTIALS_KEY holds one key. Put a new key first (see "
                  "--print-new-key), keep the old one after a comma, run this again, then remove "
                  "the old key.")
        vault = Vault(keys)
        with _session(app) as session:
            count = rotate_all(session, vault)
        click.echo(f"Re-sealed {count} connection(s), company account(s) and waiting email(s) with the "
                   "first key; you can now remove the other keys from CALSYNC_CREDENTIALS_KEY.")
        return
    # The key lives in the data dir: put a new one first, re-seal, then drop the old ones.
    key_file = settings.data_dir / KEY_FILE
    old = parse_keys(key_file.read_text())
    fresh = new_key()
    vault = Vault([fresh, *old])
    with _session(app) as session:
        count = rotate_all(session, vault)
        # Written before the commit: if writing fails, nothing was re-sealed.
        key_file.write_text(",".join([fresh, *old]) + "\n")
    key_file.write_text(fresh + "\n")
    click.echo(f"Re-sealed {count} connection(s), company account(s) and waiting email(s) with a new key "
               f"in {key_file}.")


@main.group(help="Benchmarks; each prints ratios against a baseline measured in the same run.")
def bench() -> None:
    pass


@bench.command("feeds", help="Feed serving: warm GET, 304, first GET after a change, memory.")
@click.option("--appointments", default=10000, show_default=True, type=click.IntRange(100, 10**6),
              help="Size of the company feed to measure.")
@click.option("--rounds", default=30, show_default=True, type=click.IntRange(3, 10000),
              help="Requests per measurement; the median is reported.")
@click.option("--issue17-only", is_flag=True,
              help="Only issue 17's table (gunicorn and waitress, PATCH, availability, demo-data).")
def bench_feeds(appointments: int, rounds: int, issue17_only: bool) -> None:
    from calsync.bench.feeds import run

    run(appointments=appointments, rounds=rounds, issue17_only=issue17_only)


@bench.command("sync", help="Calendar sync: full sync, unchanged sync, queue throughput, memory.")
@click.option("--events", default=5000, show_default=True, type=click.IntRange(100, 10**6),
              help="Events in the large ICS calendar (a fifth of them recurring series).")
@click.option("--connections", default=200, show_default=True, type=click.IntRange(1, 100_000),
              help="Small ICS connections (20 events each) synced through the queue for the "
                   "throughput figure.")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(3, 10000),
              help="Timed syncs per measurement after warm-ups; the median is reported.")
def bench_sync(events: int, connections: int, rounds: int) -> None:
    from calsync.bench.sync import run

    run(events=events, connections=connections, rounds=rounds)


@bench.command("twoway", help="Two-way sync: one moved event found by sync token vs a full listing.")
@click.option("--appointments", default=2000, show_default=True, type=click.IntRange(100, 10_000),
              help="Bookings in the linked calendar.")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(3, 10000),
              help="Moved events (timed sync passes) after warm-ups; the median is reported.")
@click.option("--server", "server_name", default="radicale", show_default=True,
              type=click.Choice(["radicale", "xandikos"]), help="The CalDAV server holding the calendar.")
def bench_twoway(appointments: int, rounds: int, server_name: str) -> None:
    from calsync.bench.twoway import run

    run(appointments=appointments, rounds=rounds, server_name=server_name)


def _provider_bench_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options `bench google` and `bench microsoft` share (bench/providers.py)."""
    options = [
        click.option("--events", default=2000, show_default=True, type=click.IntRange(20, 20_000),
                     help="Bookings in the linked calendar at the provider's contract fake."),
        click.option("--moves", default=50, show_default=True, type=click.IntRange(1, 10_000),
                     help="Moves timed from the push notification to the appointment rescheduled and "
                          "the customer's email queued; the median and p95 are reported."),
        click.option("--rounds", default=10, show_default=True, type=click.IntRange(3, 10_000),
                     help="Incremental sync passes and full listings counted and timed after warm-ups."),
        click.option("--idle", default=0.0, show_default=True, type=click.FloatRange(0, 3600),
                     help="Seconds of quiet before each timed move (the embedded queue polls less "
                          "often the longer it idles)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _bench_provider(provider: str, events: int, moves: int, rounds: int, idle: float) -> None:
    from calsync.bench.providers import run

    try:
        run(provider, events=events, moves=moves, rounds=rounds, idle=idle)
    except RuntimeError as exc:  # the fakes not importable, a sanity check that failed
        _fail(str(exc))


@bench.command("google", help="Google Calendar against its contract fake: an incremental pass's requests "
                              "and bytes vs a full listing; push notification to reschedule, median and p95.")
@_provider_bench_options
def bench_google(events: int, moves: int, rounds: int, idle: float) -> None:
    _bench_provider("google", events, moves, rounds, idle)


@bench.command("microsoft", help="Microsoft Graph against its contract fake: an incremental (delta) pass's "
                                 "requests and bytes vs a full listing; change notification to reschedule, "
                                 "median and p95.")
@_provider_bench_options
def bench_microsoft(events: int, moves: int, rounds: int, idle: float) -> None:
    _bench_provider("microsoft", events, moves, rounds, idle)


@bench.command("scale", help="PostgreSQL at scale: 10k vs 1M appointments, load, sync, a projection.")
@click.option("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
              show_default=True, help="PostgreSQL database; the benchmark creates two schemas in it "
                                      "and drops them at the end.")
@click.option("--redis-url", default="redis://127.0.0.1:6379/0", show_default=True,
              help="Redis for the sync throughput figure (a queue of its own, removed at the end).")
@click.option("--small", default=10_000, show_default=True, type=click.IntRange(2_000, 10**7),
              help="Appointments in the small database.")
@click.option("--large", default=1_000_000, show_default=True, type=click.IntRange(2_000, 10**8),
              help="Appointments in the large database.")
@click.option("--rounds", default=100, show_default=True, type=click.IntRange(3, 100_000),
              help="Paired requests per latency figure; the median is reported.")
@click.option("--requests", default=4000, show_default=True, type=click.IntRange(100, 10**7),
              help="Requests per load run (split between the client processes).")
@click.option("--clients", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Load-generating client processes, one keep-alive connection each.")
@click.option("--connections", default=300, show_default=True, type=click.IntRange(10, 100_000),
              help="ICS connections synced by one worker process for the throughput figure.")
@click.option("--issue17-only", is_flag=True,
              help="Only issue 17's table on PostgreSQL: feed rows under gunicorn and waitress, "
                   "availability, demo-data, and the reschedule PATCH at --small vs --large.")
def bench_scale(database_url: str, redis_url: str, small: int, large: int, rounds: int, requests: int,
                clients: int, connections: int, issue17_only: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from calsync.bench.scale import run

    if not database_url.startswith("postgresql"):
        _fail("The scale benchmark runs on PostgreSQL: give --database-url postgresql+psycopg://...")
    try:
        run(database_url=database_url, small=small, large=large, rounds=rounds, requests=requests,
            clients=clients, connections=connections, redis_url=redis_url, issue17_only=issue17_only)
    except SQLAlchemyError as exc:
        _fail(f"PostgreSQL at --database-url could not be used: {getattr(exc, 'orig', exc)}")
    except RuntimeError as exc:  # a missing Redis, a sanity check that failed
        _fail(str(exc))
