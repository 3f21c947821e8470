"""The `calsync` command, run as users run it: the installed console script in a subprocess
(and click's CliRunner where only the command's own behaviour matters).

Every subprocess gets a `sitecustomize` that refuses — and logs — any socket connecting to or
listening on an address beyond loopback, so the subprocesses obey the same rule as the tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import icalendar
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from calsync.feeds.accounts.admins import authenticate_admin
from calsync.feeds.settings import load_settings
from calsync.migrations import alembic_config, current_revision
from calsync.models import AdminUser, Appointment, Company, Group, Staff, make_engine, make_session_factory
from calsync.web import create_app
from calsync.web.cli import main
from tests.waiting import wait_until

CALSYNC = Path(sys.executable).with_name("calsync")
GUARD_LOG = "LOOPBACK_GUARD_LOG"  # not CALSYNC_*: calsync would refuse an unknown setting

SITECUSTOMIZE = textwrap.dedent(
    '''
    """Test guard: this process may only use loopback (see tests/system/test_cli.py)."""
    import ipaddress
    import os
    import socket

    _log = os.environ.get("LOOPBACK_GUARD_LOG")


    def _local(address):
        if isinstance(address, (str, bytes)):
            return True
        try:
            return ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            return address[0] == "localhost"


    def _wrap(name):
        real = getattr(socket.socket, name)

        def guarded(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
                if _log:
                    with open(_log, "a") as fh:
                        fh.write(f"{os.getpid()} {name} {address!r}\\n")
                raise OSError(f"loopback guard: {name} {address!r} refused")
            return real(self, address, *args)

        setattr(socket.socket, name, guarded)


    for _name in ("connect", "connect_ex", "bind"):
        _wrap(_name)
    '''
)


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guard")
    (path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(data_dir: Path, guard_dir: Path, tmp_path: Path) -> dict[str, str]:
    """A clean environment: no CALSYNC_ variable of the runner, no secret key, the guard on."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    base.update(
        CALSYNC_DATA_DIR=str(data_dir),
        PYTHONPATH=str(guard_dir),
        PYTHONIOENCODING="utf-8",
        **{GUARD_LOG: str(tmp_path / "guard.log")},
    )
    return base


def calsync(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CALSYNC), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        cwd=Path(env[GUARD_LOG]).parent,
    )


def assert_fails_with_sentence(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """A failed command: non-zero exit, one readable sentence on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    message = proc.stderr.strip()
    assert "Traceback" not in message, message
    assert message.startswith("Error: "), message
    assert message.endswith("."), message
    for word in words:
        assert word in message, message
    return message


def assert_no_network(env: dict[str, str]) -> None:
    log = Path(env[GUARD_LOG])
    assert not log.exists(), log.read_text()


@pytest.fixture
def database(data_dir: Path) -> Iterator[Engine]:
    """The engine of the database the CLI wrote, opened after the command ran."""
    engine = make_engine(load_settings(environ={"CALSYNC_DATA_DIR": str(data_dir)}).resolved_database_url)
    yield engine
    engine.dispose()


def count(engine: Engine, model: type) -> int:
    with make_session_factory(engine)() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_the_subprocess_guard_is_active(env: dict[str, str]) -> None:
    """The guard the other tests rely on: a non-loopback connect or bind in a subprocess fails
    and is logged (192.0.2.1 is TEST-NET-1, RFC 5737: never routed)."""
    code = textwrap.dedent(
        """
        import socket
        for action in (lambda s: s.connect(("192.0.2.1", 9)), lambda s: s.bind(("0.0.0.0", 0))):
            with socket.socket() as s:
                try:
                    action(s)
                except OSError as exc:
                    assert "loopback guard" in str(exc), exc
                else:
                    raise SystemExit("guard let it through")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    log = Path(env[GUARD_LOG]).read_text()
    assert "192.0.2.1" in log and "0.0.0.0" in log


# --- help -------------------------------------------------------------------------------------


def test_help_lists_every_command(env: dict[str, str]) -> None:
    proc = calsync(env, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("serve", "init", "demo-data", "create-admin", "api-key", "bench"):
        assert re.search(rf"^\s+{command}\s+\S", proc.stdout, re.M), (command, proc.stdout)
    assert "CALSYNC_" in proc.stdout  # says where settings come from


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL_COMMANDS = list(_commands(main))


def test_the_issue_s_commands_exist() -> None:
    for path in [("serve",), ("init",), ("demo-data",), ("create-admin",), ("api-key", "create"),
                 ("bench",)]:
        assert path in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_and_option_has_help(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_FOO", "1")  # --help must work even when the settings are broken
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="calsync")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: calsync {' '.join(path)}")
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help and command.help.strip(), path
    # click wraps the help to the terminal's width: compare the words, not the line breaks
    assert " ".join(command.help.split("\n")[0].split()) in " ".join(result.output.split())
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


def test_subcommand_help_in_the_real_script(env: dict[str, str]) -> None:
    proc = calsync(env, "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--host", "--port", "--demo"):
        assert option in proc.stdout


# --- init -------------------------------------------------------------------------------------


def test_init_twice_is_idempotent(env: dict[str, str], data_dir: Path, database: Engine) -> None:
    first = calsync(env, "init", "--company", "Café Zürich", "--timezone", "Europe/Zurich")
    assert first.returncode == 0, first.stderr
    assert "Database ready" in first.stdout
    key = (data_dir / "secret_key").read_text()
    head = head_revision(database)
    assert head is not None
    assert current_revision(database) == head
    assert count(database, Company) == 1

    second = calsync(env, "init", "--company", "Other name")
    assert second.returncode == 0, second.stderr
    assert current_revision(database) == head
    assert count(database, Company) == 1
    with make_session_factory(database)() as session:
        company = session.scalars(select(Company)).one()
        assert (company.name, company.timezone) == ("Café Zürich", "Europe/Zurich")
    assert (data_dir / "secret_key").read_text() == key  # reused, not regenerated
    assert_no_network(env)


def test_init_refuses_an_unknown_time_zone(env: dict[str, str], data_dir: Path) -> None:
    proc = calsync(env, "init", "--timezone", "Mars/Olympus_Mons")
    assert_fails_with_sentence(proc, "Mars/Olympus_Mons")
    assert not (data_dir / "calsync.sqlite3").exists()


# --- create-admin -----------------------------------------------------------------------------


def test_create_admin_reads_the_password_from_stdin(env: dict[str, str], database: Engine) -> None:
    password = "correct horse battery staple"
    proc = calsync(env, "create-admin", "--email", "a@b.test", "--password-stdin", stdin=password + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "a@b.test" in proc.stdout
    assert password not in proc.stdout + proc.stderr
    with make_session_factory(database).begin() as session:
        assert authenticate_admin(session, "a@b.test", password) is not None
        assert authenticate_admin(session, "a@b.test", password + "x") is None


def test_create_admin_refuses_a_short_password(env: dict[str, str], database: Engine) -> None:
    proc = calsync(env, "create-admin", "--email", "a@b.test", "--password-stdin", stdin="short\n")
    assert_fails_with_sentence(proc, "password")
    assert count(database, AdminUser) == 0


def test_create_admin_refuses_a_duplicate_email(env: dict[str, str], database: Engine) -> None:
    ok = calsync(env, "create-admin", "--email", "a@b.test", "--password-stdin", stdin="x" * 12)
    assert ok.returncode == 0, ok.stderr
    # The same address in other letter case is the same login.
    again = calsync(env, "create-admin", "--email", "A@B.test", "--password-stdin", stdin="y" * 12)
    assert_fails_with_sentence(again, "a@b.test")
    assert count(database, AdminUser) == 1


def test_create_admin_in_process_with_cli_runner(
    data_dir: Path, database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CALSYNC_")]:
        monkeypatch.delenv(key)
    runner = CliRunner(env={"CALSYNC_DATA_DIR": str(data_dir)})
    bad = runner.invoke(main, ["create-admin", "--email", "nobody", "--password-stdin"], input="p" * 12)
    assert bad.exit_code != 0
    assert "email" in bad.stderr
    good = runner.invoke(main, ["create-admin", "--email", "ü@b.test", "--password-stdin"], input="p" * 12)
    assert good.exit_code == 0, good.output
    assert count(database, AdminUser) == 1


# --- api-key ----------------------------------------------------------------------------------


def test_api_key_is_printed_alone_on_the_last_line_and_works(env: dict[str, str], data_dir: Path) -> None:
    proc = calsync(env, "api-key", "create", "--name", "x")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").split("\n")
    key = lines[-1]
    assert re.fullmatch(r"[A-Za-z0-9_\-]{32,}", key), lines
    assert key not in "\n".join(lines[:-1])  # shown once

    app = create_app(load_settings(environ={"CALSYNC_DATA_DIR": str(data_dir)}))
    try:
        client = app.test_client()
        ok = client.get("/api/v1/staff", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.get_json()
        assert ok.get_json() == {"staff": []}
        wrong = client.get("/api/v1/staff", headers={"Authorization": f"Bearer {key[:-1]}x"})
        assert wrong.status_code == 401
        assert client.get("/api/v1/staff").status_code == 401
    finally:
        app.extensions["calsync"].engine.dispose()


def test_api_key_needs_a_name(env: dict[str, str]) -> None:
    proc = calsync(env, "api-key", "create", "--name", "  ")
    assert_fails_with_sentence(proc, "name")


# --- demo-data --------------------------------------------------------------------------------


def test_demo_data_loads_staff_groups_and_appointments(env: dict[str, str], database: Engine) -> None:
    proc = calsync(env, "demo-data", "--staff", "3", "--appointments", "20")
    assert proc.returncode == 0, proc.stderr
    assert "3 staff" in proc.stdout and "20 appointments" in proc.stdout
    assert count(database, Staff) == 3
    assert count(database, Group) == 2
    assert count(database, Appointment) == 20
    with make_session_factory(database)() as session:
        names = session.scalars(select(Staff.name)).all()
    assert any(not name.isascii() for name in names), names
    assert_no_network(env)


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["init"],
        ["demo-data", "--staff", "1", "--appointments", "0"],
        ["api-key", "create", "--name", "x"],
        ["serve", "--port", "1"],  # must fail before binding, so the port does not matter
    ],
    ids=" ".join,
)
def test_unknown_variable_stops_every_command(
    args: list[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CALSYNC_")]:
        monkeypatch.delenv(key)
    result = CliRunner(env={"CALSYNC_DATA_DIR": str(data_dir), "CALSYNC_FOO": "1"}).invoke(main, args)
    assert result.exit_code != 0
    assert "CALSYNC_FOO" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_unknown_variable_in_the_real_script(env: dict[str, str], data_dir: Path) -> None:
    proc = calsync({**env, "CALSYNC_FOO": "1"}, "init")
    assert_fails_with_sentence(proc, "CALSYNC_FOO")
    assert not data_dir.exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALSYNC_BASE_URL", "ftp://x"),
        ("CALSYNC_FEED_CACHE_BYTES", "-1"),
        ("CALSYNC_DATABASE_URL", "not a url"),
        ("CALSYNC_DATABASE_URL", "sqlite:////nonexistent-calsync-dir/x/db.sqlite3"),
    ],
)
def test_invalid_value_stops_init_naming_the_variable(
    variable: str, value: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CALSYNC_")]:
        monkeypatch.delenv(key)
    result = CliRunner(env={"CALSYNC_DATA_DIR": str(data_dir), variable: value}).invoke(main, ["init"])
    assert result.exit_code != 0
    assert variable in result.stderr
    assert result.stderr.startswith("Error: ")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_data_dir_that_is_a_file_fails_with_a_sentence(env: dict[str, str], tmp_path: Path) -> None:
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("")
    proc = calsync({**env, "CALSYNC_DATA_DIR": str(not_a_dir)}, "init")
    assert_fails_with_sentence(proc, "CALSYNC_DATA_DIR")


# --- serve --demo -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DemoServer:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    stdout: str = ""
    admin_password: str = ""
    api_key: str = ""
    feeds: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # scope -> [(name, url)]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path_or_url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        url = path_or_url if path_or_url.startswith("http") else self.base + path_or_url
        assert url.startswith(self.base + "/")
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


FEED_LINE = re.compile(r"^\s+(company|group|staff)\s+(.+?)\s+(http\S+)\s*$")


def _parse_output(server: DemoServer) -> None:
    for line in server.stdout.splitlines():
        if match := re.match(r"Admin password \(shown once\): (\S+)$", line):
            server.admin_password = match[1]
        elif match := re.match(r"API key \(shown once\): (\S+)$", line):
            server.api_key = match[1]
        elif match := FEED_LINE.match(line):
            server.feeds.setdefault(match[1], []).append((match[2], match[3]))


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, guard_dir: Path) -> Iterator[DemoServer]:
    tmp = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    env.update(
        CALSYNC_DATA_DIR=str(tmp / "data"),
        PYTHONPATH=str(guard_dir),
        PYTHONIOENCODING="utf-8",
        PYTHONUNBUFFERED="1",
        **{GUARD_LOG: str(tmp / "guard.log")},
    )
    port = free_port()
    out_path, err_path = tmp / "stdout.txt", tmp / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(CALSYNC), "serve", "--demo", "--port", str(port)],
            env=env, stdout=out, stderr=err, cwd=tmp,
        )
    server = DemoServer(proc, port, env)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"calsync serve exited with {proc.returncode}: {err_path.read_text()}")
            if "Serving on" not in out_path.read_text(encoding="utf-8"):
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_until(listening, lambda: f"calsync serve to listen: {out_path.read_text()}", interval=0.1)
        server.stdout = out_path.read_text(encoding="utf-8")
        _parse_output(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("calsync serve did not stop on SIGTERM within 15 s")


def test_serve_demo_prints_credentials_and_feed_urls(demo_server: DemoServer) -> None:
    assert len(demo_server.admin_password) >= 12, demo_server.stdout
    assert demo_server.api_key, demo_server.stdout
    assert [len(demo_server.feeds.get(scope, [])) for scope in ("company", "group", "staff")] == [1, 2, 6]
    urls = [url for entries in demo_server.feeds.values() for _, url in entries]
    for url in urls:
        assert url.startswith(f"http://127.0.0.1:{demo_server.port}/feeds/"), url
        assert url.endswith(".ics")
    assert len(set(urls)) == len(urls)
    assert f"Serving on http://127.0.0.1:{demo_server.port}" in demo_server.stdout


def _events(body: bytes) -> tuple[icalendar.Calendar, list[icalendar.Event]]:
    calendar = icalendar.Calendar.from_ical(body)
    return calendar, [e for e in calendar.walk("VEVENT") if isinstance(e, icalendar.Event)]


def test_a_printed_feed_url_serves_the_calendar(demo_server: DemoServer) -> None:
    name, url = next((n, u) for n, u in demo_server.feeds["staff"] if not n.isascii())
    status, headers, body = demo_server.get(url)
    assert status == 200
    assert headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar, events = _events(body)
    assert events
    staff_name = name.rsplit(" (", 1)[0]  # the printed name carries the privacy level
    assert str(calendar["X-WR-CALNAME"]).startswith(staff_name)
    assert not staff_name.isascii()
    texts = [str(e.get(p, "")) for e in events for p in ("SUMMARY", "DESCRIPTION", "LOCATION")]
    assert any(not text.isascii() for text in texts)


def test_the_company_feed_names_non_ascii_staff(demo_server: DemoServer) -> None:
    (_, url), = demo_server.feeds["company"]
    status, _, body = demo_server.get(url)
    assert status == 200
    calendar, events = _events(body)
    assert str(calendar["X-WR-CALNAME"]) == "Salon Sommer & Söhne"
    staff_names = {name.rsplit(" (", 1)[0] for name, _ in demo_server.feeds["staff"]}
    named = {n for n in staff_names if any(n in str(e.get("SUMMARY", "")) + str(e.get("DESCRIPTION", ""))
                                           for e in events)}
    assert {n for n in named if not n.isascii()}, named


def test_demo_spans_a_daylight_saving_change_in_both_groups(demo_server: DemoServer) -> None:
    (_, company_url), = demo_server.feeds["company"]
    company_tz = ZoneInfo(str(_events(demo_server.get(company_url)[2])[0]["X-WR-TIMEZONE"]))
    for name, url in demo_server.feeds["group"]:
        status, _, body = demo_server.get(url)
        assert status == 200
        starts = [e.decoded("DTSTART") for e in _events(body)[1]]
        assert all(start.tzinfo is not None for start in starts)
        offsets = {start.astimezone(company_tz).utcoffset() for start in starts}
        assert len(offsets) == 2, (name, offsets)


def test_the_printed_api_key_lists_the_demo_staff(demo_server: DemoServer) -> None:
    status, _, body = demo_server.get("/api/v1/staff", Authorization=f"Bearer {demo_server.api_key}")
    assert status == 200, body
    staff = json.loads(body)["staff"]
    assert len(staff) == 6
    assert {s["name"] for s in staff} == {n.rsplit(" (", 1)[0] for n, _ in demo_server.feeds["staff"]}
    status, _, _ = demo_server.get("/api/v1/staff", Authorization="Bearer csk_not-a-key")
    assert status == 401


def test_the_server_uses_loopback_only(demo_server: DemoServer) -> None:
    """It listens on 127.0.0.1 alone (not every interface), and neither it nor its demo loading
    tried to reach beyond loopback (the guard in its sitecustomize would have logged it)."""
    assert demo_server.proc.poll() is None
    assert_no_network(demo_server.env)
    listening = _listening_addresses(demo_server.proc.pid, demo_server.port)
    if listening is None:
        pytest.skip("no /proc to read listening sockets from")
    assert listening == {"127.0.0.1"}, listening


def _listening_addresses(pid: int, port: int) -> set[str] | None:
    """Local addresses on which `port` is in LISTEN state, from /proc (None off Linux)."""
    tables = [Path(f"/proc/{pid}/net/tcp"), Path(f"/proc/{pid}/net/tcp6")]
    if not tables[0].exists():
        return None
    found = set()
    for table in tables:
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A = TCP_LISTEN
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host byte order.
                if sys.byteorder == "little":
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found
