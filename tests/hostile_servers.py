"""Servers that misbehave or die, started by fixtures on loopback (issue 7).

- HostileCalDAV: a small CalDAV server answering PROPFIND, REPORT, GET and PUT well enough for
  discovery and sync, except in the one way its `behaviour` names (billion laughs, external
  entities, a never-ending body, a redirect loop, a drip, a huge listing, invalid UTF-8).
- EtagFlappingProxy: a proxy in front of a real CalDAV server whose ETags (and CTag) change on
  every request.
- RadicaleProcess: Radicale in a subprocess, so a test can kill it (SIGKILL) and start it again
  on the same port and data.
- PrivatePostgres: a throwaway PostgreSQL cluster in a temporary folder on a free port, which a
  test may stop and start (never the machine's shared server).

Every pause in these servers waits on a threading.Event the test controls, so fault tests are
deterministic; the only timed behaviour is the drip, whose pace is what is being tested.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ForwardingProxy, serve_in_thread
from tests.waiting import wait_until

BEHAVIOURS = (
    "none",  # a well-behaved server (a calendar is added while it still behaves)
    "billion_laughs",  # every XML answer is a billion-laughs document
    "external_entity",  # every XML answer pulls in a local file and a remote DTD
    "endless_body",  # every XML answer goes on for ever
    "endless_401",  # asks for Digest; the answer to the login goes on for ever
    "redirect_loop",  # every request is redirected, a -> b -> a ...
    "drip",  # every answer is sent one byte at a time, `drip_seconds` apart
    "huge_listing",  # the calendar lists `items` events
    "invalid_utf8",  # one event's body is not UTF-8
    "invalid_utf8_xml",  # the listing itself is not UTF-8
)

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']>\n<d:multistatus xmlns:d="DAV:"><d:response><d:href>/dav/cal/</d:href><d:propstat>'
    b"<d:prop><d:displayname>&lol9;</d:displayname></d:prop><d:status>HTTP/1.1 200 OK</d:status>"
    b"</d:propstat></d:response></d:multistatus>\n"
)


def external_entity_document(canary_file: Path, dtd_url: str) -> bytes:
    """A multistatus that would carry the canary file's content (and fetch a DTD from
    `dtd_url`) if the parser resolved entities or used the network."""
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE d:multistatus [\n'
        f'  <!ENTITY xxe SYSTEM "file://{canary_file}">\n'
        f'  <!ENTITY % remote SYSTEM "{dtd_url}">\n  %remote;\n]>\n'
        '<d:multistatus xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:response>'
        "<d:href>/dav/cal/</d:href><d:propstat><d:prop><d:displayname>&xxe;</d:displayname>"
        "<cs:getctag>&xxe;</cs:getctag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>"
        "</d:response></d:multistatus>\n"
    ).encode()


def event_body(uid: str, start: datetime, summary: bytes = b"Dentist") -> bytes:
    end = start + timedelta(hours=1)
    return (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\nBEGIN:VEVENT\r\n"
        + f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n".encode()
        + f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{end:%Y%m%dT%H%M%SZ}\r\n".encode()
        + b"SUMMARY:"
        + summary
        + b"\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def _propstat(props: str) -> str:
    return f"<d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>"


def _multistatus(responses: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus xmlns:d="DAV:" '
        'xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/">'
        f"{responses}{extra}</d:multistatus>\n"
    ).encode()


COLLECTION_PROPS = (
    "<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
    "<d:displayname>Hostile</d:displayname><cs:getctag>ctag-1</cs:getctag>"
    "<d:current-user-principal><d:href>/dav/principal/</d:href></d:current-user-principal>"
    "<c:calendar-home-set><d:href>/dav/</d:href></c:calendar-home-set>"
    '<c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set>'
    "<d:current-user-privilege-set><d:privilege><d:read/></d:privilege>"
    "<d:privilege><d:write/></d:privilege></d:current-user-privilege-set>"
)


class HostileCalDAV:
    """A CalDAV server with one calendar at /dav/cal/ that misbehaves as `behaviour` says.

    It records every request (`requests`), the bytes it managed to send of its never-ending
    or dripping answers (`sent`), and sets `hung_up` when a client closed the connection in
    the middle of such an answer.
    """

    def __init__(
        self,
        behaviour: str,
        *,
        canary_file: Path | None = None,
        dtd_url: str = "",
        items: int = 2,
        drip_seconds: float = 1.0,
    ) -> None:
        assert behaviour in BEHAVIOURS, behaviour
        self.behaviour = behaviour
        self.canary_file = canary_file
        self.dtd_url = dtd_url
        self.items = items
        self.drip_seconds = drip_seconds
        self.requests: list[tuple[str, str]] = []
        self.sent = 0
        self.hung_up = threading.Event()
        self.stop = threading.Event()  # ends never-ending answers when the fixture closes
        self.start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                request_body = self._body()
                outer.requests.append((self.command, self.path))
                try:
                    outer.answer(self, request_body)
                except (BrokenPipeError, ConnectionResetError):
                    outer.hung_up.set()

            do_PROPFIND = do_REPORT = do_GET = do_PUT = do_DELETE = do_OPTIONS = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = serve_in_thread(self.server)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.calendar_url = self.base_url + "/dav/cal/"

    # --- answers --------------------------------------------------------------------------------

    def href(self, i: int) -> str:
        return f"/dav/cal/event-{i}.ics"

    def answer(self, h: BaseHTTPRequestHandler, request_body: bytes) -> None:
        b = self.behaviour
        if b == "endless_401":
            challenge = {"WWW-Authenticate": 'Digest realm="hostile", nonce="abc", qop="auth"'}
            if len(self.requests) == 1:
                return self.send(h, 401, b"", headers=challenge)
            # The Digest hook of the HTTP library reads this body itself (to reuse the
            # connection) before it answers the challenge: no caller of ours sees it first.
            return self.endless(h, status=401, headers=challenge)
        if b == "redirect_loop":
            target = "/b" + h.path if not h.path.startswith("/b/") else h.path[2:]
            return self.send(h, 302, b"", headers={"Location": target})
        if h.command == "PUT":
            return self.send(h, 201, b"", headers={"ETag": '"put-1"'})
        if h.command == "GET":
            return self.get(h)
        if b == "billion_laughs":
            return self.send(h, 207, BILLION_LAUGHS)
        if b == "external_entity":
            assert self.canary_file is not None
            return self.send(h, 207, external_entity_document(self.canary_file, self.dtd_url))
        if b == "endless_body":
            return self.endless(h)
        if h.command == "REPORT":
            return self.send(h, 207, self.listing())
        # PROPFIND: the calendar (depth 0), or the home with the calendar in it (depth 1).
        responses = f"<d:response><d:href>{h.path}</d:href>{_propstat(COLLECTION_PROPS)}</d:response>"
        if h.headers.get("Depth") == "1" and h.path.rstrip("/") == "/dav":
            responses += f"<d:response><d:href>/dav/cal/</d:href>{_propstat(COLLECTION_PROPS)}</d:response>"
        self.send(h, 207, _multistatus(responses))

    def listing(self) -> bytes:
        """The answer to sync-collection: every event with its ETag, and a token."""
        count = self.items
        parts = [
            f"<d:response><d:href>{self.href(i)}</d:href>"
            f"{_propstat(f'<d:getetag>&quot;etag-{i}&quot;</d:getetag>')}</d:response>"
            for i in range(count)
        ]
        body = _multistatus("".join(parts), "<d:sync-token>https://hostile/sync/1</d:sync-token>")
        if self.behaviour == "invalid_utf8_xml":
            body = body.replace(b"event-0.ics", b"event-\xff\xfe\xc3\x28.ics")
        return body

    def get(self, h: BaseHTTPRequestHandler) -> None:
        match = re.fullmatch(r"/dav/cal/event-(\d+)\.ics", h.path)
        if match is None:
            return self.send(h, 404, b"")
        i = int(match.group(1))
        summary = (
            b"Caf\xe9 \xff\xfe broken \xc3\x28" if self.behaviour == "invalid_utf8" and i == 0 else b"Dentist"
        )
        body = event_body(f"hostile-{i}", self.start + timedelta(days=i % 300, hours=i % 8), summary)
        self.send(h, 200, body, content_type="text/calendar; charset=utf-8", headers={"ETag": f'"etag-{i}"'})

    def send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/xml; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if self.behaviour != "drip":
            h.wfile.write(body)
            return
        for i in range(len(body)):
            if self.stop.wait(self.drip_seconds):
                return
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()
            self.sent += 1

    def endless(
        self, h: BaseHTTPRequestHandler, status: int = 207, headers: dict[str, str] | None = None
    ) -> None:
        """A multistatus that never ends (chunked, so no length announces the size)."""
        h.send_response(status)
        h.send_header("Content-Type", "application/xml; charset=utf-8")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        head = b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">'
        piece = b"<d:response><d:href>/dav/cal/x.ics</d:href></d:response>" * 1000
        for data in itertools.chain([head], itertools.repeat(piece)):
            if self.stop.is_set():
                return
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile_caldav() -> Iterator[Callable[..., HostileCalDAV]]:
    """Make hostile CalDAV servers: hostile_caldav("drip", drip_seconds=1.0)."""
    made: list[HostileCalDAV] = []

    def make(behaviour: str, **kw: Any) -> HostileCalDAV:
        server = HostileCalDAV(behaviour, **kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


# --- ETags that change on every request ------------------------------------------------------------


class EtagFlappingProxy(ForwardingProxy):
    """Forwards to a real CalDAV server, giving every ETag and CTag it reports a new suffix on
    every request (as a server that puts the request time in its ETags would).

    `honour_if_match`: the suffix is removed from If-Match before forwarding, so the server
    accepts any version of its ETag; off, every conditional write fails with 412.
    `sync_tokens`: off, sync-collection is refused (403 valid-sync-token), so clients list the
    whole calendar each time.
    """

    def __init__(self, upstream: str, *, honour_if_match: bool = True, sync_tokens: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.honour_if_match = honour_if_match
        self.sync_tokens = sync_tokens
        self.counter = 0
        super().__init__()

    def count(self, method: str, status: int | None = None) -> int:
        return sum(1 for m, _p, s in self.requests if m == method and (status is None or s == status))

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self.lock:
            self.counter += 1
            n = self.counter
        if h.command == "REPORT" and b"sync-collection" in body and not self.sync_tokens:
            answer = b'<?xml version="1.0"?><d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>'
            self._reply(h, 403, {"Content-Type": "application/xml"}, answer)
            return
        # Without Accept-Encoding the answers come uncompressed, so their ETags can be rewritten.
        headers = {
            k: v
            for k, v in h.headers.items()
            if k.lower() not in ("host", "content-length", "accept-encoding")
        }
        if "If-Match" in headers and self.honour_if_match:
            headers["If-Match"] = re.sub(r'-v\d+"', '"', headers["If-Match"])
        host = self.upstream.split("://", 1)[1]
        conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {
                k: v
                for k, v in resp.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
        finally:
            conn.close()
        for key in [k for k in out if k.lower() == "etag"]:
            out[key] = re.sub(r'"$', f'-v{n}"', out[key])
        data = re.sub(rb'(getetag>(?:&quot;|"))([^"&<]*)((?:&quot;|"))', rb"\g<1>\g<2>-v%d\g<3>" % n, data)
        data = re.sub(rb"(getctag>)([^<]*)(<)", rb"\g<1>\g<2>-v%d\g<3>" % n, data)
        self._reply(h, resp.status, out, data)



# --- a mail server that refuses ----------------------------------------------------------------------


class RefusingSmtp:
    """aiosmtpd on loopback that keeps what it accepts and refuses as told: `refuse_rcpt` maps a
    recipient to the reply for its RCPT TO (e.g. "550 5.1.1 No such user"), `refuse_data` is
    the reply to every message, and with `drop_data` the server hangs up after receiving a
    message, before answering it (a mail server dying mid-session: the message is not taken)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.accepted: list[tuple[str, bytes]] = []  # (recipient, message)
        self.refuse_rcpt: dict[str, str] = {}
        self.refuse_data: str | None = None
        self.drop_data = False
        outer = self

        class Handler:
            async def handle_RCPT(
                self,
                server: Any,
                session: Any,
                envelope: Any,
                address: str,  # noqa: N802
                rcpt_options: list[str],
            ) -> str:
                if address in outer.refuse_rcpt:
                    return outer.refuse_rcpt[address]
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                if outer.drop_data:
                    server.transport.close()
                    return "421 closing"  # never reaches the client: the connection is gone
                if outer.refuse_data:
                    return outer.refuse_data
                for rcpt in envelope.rcpt_tos:
                    outer.accepted.append((rcpt, bytes(envelope.original_content or envelope.content)))
                return "250 Message accepted for delivery"

        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, server_hostname="localhost"
        )
        self.controller.start()

    def message_ids(self) -> dict[str, int]:
        """How often each Message-ID arrived."""
        import email
        from email import policy

        counts: dict[str, int] = {}
        for _rcpt, data in self.accepted:
            key = str(email.message_from_bytes(data, policy=policy.default)["Message-ID"])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def refusing_smtp() -> Iterator[RefusingSmtp]:
    server = RefusingSmtp()
    yield server
    server.close()


# --- Radicale in a process of its own ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, alive: Callable[[], bool], what: str) -> None:
    """Wait until something listens on `port` (a process starting up is not an event we can
    hook into; this polls the port, which is the only readiness signal the process gives)."""
    def listening() -> bool:
        if not alive():
            raise RuntimeError(f"{what} exited while starting")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, f"{what} to listen on port {port}", limit=30)


class RadicaleProcess:
    """Radicale as a subprocess with one user (zoe), killable with SIGKILL and restartable on
    the same port and storage.

    `kill_after_next_write()` arms a one-shot storage hook: the next stored change kills the
    server after the change is on disk and before its answer is sent — the answer is lost,
    the write is not.
    """

    username = "zoe"
    password = "app-password-1"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.trigger = folder / "kill-after-next-write"
        users = folder / "users"
        users.write_text(f"{self.username}:{self.password}\n")
        # The hook runs in a shell whose parent is Radicale; it kills it only when armed.
        hook = f'if [ -e "{self.trigger}" ]; then rm -f "{self.trigger}"; kill -9 $PPID; fi'
        self.config = folder / "config"
        self.config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n"
            f"[auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\n"
            "delay = 0\n"
            f"[storage]\nfilesystem_folder = {folder / 'collections'}\nhook = {hook}\n"
            "[rights]\ntype = owner_only\n[logging]\nlevel = warning\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url_of(self, slug: str = "work") -> str:
        return f"{self.base_url}/{self.username}/{slug}/"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        _wait_for_port(self.port, lambda: process.poll() is None, "Radicale")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def was_killed(self) -> bool:
        """Whether the server died of SIGKILL (the armed hook); waits for the dead process."""
        if self.process is None:
            return False
        killed = self.process.wait(timeout=30) == -signal.SIGKILL
        self.process = None
        return killed

    def kill_after_next_write(self) -> None:
        self.trigger.write_text("armed")

    def client(self) -> Any:
        import caldav

        return caldav.DAVClient(
            self.base_url + "/", username=self.username, password=self.password, enable_rfc6764=False
        )

    def calendar(self, slug: str = "work") -> Any:
        client = self.client()
        cal = client.calendar(url=self.url_of(slug))
        try:
            cal.get_properties()
            return cal
        except Exception:
            return client.principal().make_calendar(name=slug.title(), cal_id=slug)


@pytest.fixture
def radicale_process(tmp_path: Path) -> Iterator[RadicaleProcess]:
    folder = tmp_path / "radicale-process"
    folder.mkdir()
    server = RadicaleProcess(folder)
    server.start()
    yield server
    server.kill()


# --- a PostgreSQL cluster of the test's own -----------------------------------------------------------


class PrivatePostgres:
    """initdb + pg_ctl in a temporary folder on a free loopback port. PostgreSQL refuses to run
    as root, so as root the cluster belongs to the `postgres` (or `nobody`) user."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="calsync-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                import pwd

                pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
            shutil.chown(self.folder, user)
            self.prefix = ["runuser", "-u", user, "--"]
        self._run(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                "full_page_writes = off\nsynchronous_commit = off\n"
            )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        subprocess.run(
            self.prefix + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.folder
        )

    def start(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-w", "-l", str(self.folder / "log"), "start"])

    def stop(self) -> None:
        # "fast": roll back open transactions and close connections, as a restart does.
        self._run(["pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        if os.environ.get("CI"):
            pytest.fail("initdb/pg_ctl are required on CI for the database outage tests")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PrivatePostgres()
    cluster.start()
    yield cluster
    cluster.destroy()


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"
