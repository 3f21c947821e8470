"""Real servers on loopback, started by fixtures: Radicale and Xandikos (CalDAV), a scriptable
HTTP calendar server, a canary that records every request it receives, and an SMTP sink
(aiosmtpd) that keeps the emails it is sent."""

from __future__ import annotations

import gzip
import hashlib
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import caldav
import pytest

from calsync.bench.served_wsgi import ServedWSGI

# socketserver's serve_forever looks at shutdown() only between polls of its socket, half a
# second apart by default, so every test server took 0.5 s to stop; a 10 ms poll stops it at
# once for a negligible cost in wake-ups.
STOP_POLL_SECONDS = 0.01


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Serve `server` (an http.server/socketserver server) in a daemon thread; stopping it with
    shutdown() then takes milliseconds."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": STOP_POLL_SECONDS}, daemon=True
    )
    thread.start()
    return thread


def serve_forwarding(
    forward: Callable[[BaseHTTPRequestHandler], None],
) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """A loopback server that hands every WebDAV/CalDAV request to `forward` (the proxies in
    front of Radicale and Xandikos that misbehave on purpose); returns it, its thread and URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            forward(self)

        do_PROPFIND = do_REPORT = do_GET = do_PUT = do_DELETE = do_OPTIONS = _forward  # noqa: N815
        do_PROPPATCH = do_MKCALENDAR = do_MKCOL = do_HEAD = do_POST = _forward  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server, serve_in_thread(server), f"http://127.0.0.1:{server.server_address[1]}"


class ForwardingProxy:
    """Base of the misbehaving proxies: serves on loopback (serve_forwarding), records each
    answer as (method, path, status) and writes it back; subclasses implement forward()."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.server, self.thread, self.base_url = serve_forwarding(self.forward)

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def _reply(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        with self.lock:
            self.requests.append((h.command, h.path, status))
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _serve_wsgi(app: Any) -> tuple[ServedWSGI, str]:
    served = ServedWSGI(app)
    return served, served.url


@dataclass
class CalDAVServer:
    """A CalDAV server with one user; `calendar(name)` makes (or opens) a calendar."""

    kind: str
    base_url: str
    username: str
    password: str
    home: str  # calendar home path

    def client(self) -> caldav.DAVClient:
        return caldav.DAVClient(self.base_url + "/", username=self.username,
                                password=self.password, enable_rfc6764=False)

    def calendar(self, slug: str = "work", name: str = "Work") -> caldav.Calendar:
        url = f"{self.base_url}{self.home}{slug}/"
        client = self.client()
        cal = client.calendar(url=url)
        try:
            cal.get_properties()
            return cal
        except Exception:
            return client.principal().make_calendar(name=name, cal_id=slug)

    def url_of(self, slug: str = "work") -> str:
        return f"{self.base_url}{self.home}{slug}/"


def radicale_app(users: Path, storage: Path, rights: dict[str, str]) -> Any:
    """Radicale as a WSGI app: htpasswd `users` (plain), calendars under `storage`."""
    import radicale
    import radicale.config

    cfg = radicale.config.load([])
    cfg.update({
        # delay: Radicale sleeps about a second after each refused login (brute-force damping),
        # and every CalDAV client's first request is refused (401 before the credentials).
        "auth": {"type": "htpasswd", "htpasswd_filename": str(users), "htpasswd_encryption": "plain",
                 "delay": "0"},
        # No fsync of every stored item: a test's calendar need not survive a power cut.
        "storage": {"filesystem_folder": str(storage), "_filesystem_fsync": "False"},
        "rights": rights,
    }, "test", privileged=True)
    return radicale.Application(cfg)


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[CalDAVServer]:
    users = tmp_path / "radicale-users"
    users.write_text("zoe:app-password-1\nreader:reader-pass\n")
    # Owners write their own calendars; "reader" may only read zoe/work (a calendar shared
    # read-only, as a colleague's calendar often is).
    rights = tmp_path / "radicale-rights"
    rights.write_text(
        "[reader-on-zoe]\nuser: reader\ncollection: zoe/work(/.*)?\npermissions: r\n\n"
        "[reader-principal-of-zoe]\nuser: reader\ncollection: zoe\npermissions: R\n\n"
        "[owner]\nuser: .+\ncollection: {user}(/.*)?\npermissions: RrWw\n\n"
        "[root]\nuser: .+\ncollection:\npermissions: R\n"
    )
    app = radicale_app(users, tmp_path / "radicale-data", {"type": "from_file", "file": str(rights)})
    server, url = _serve_wsgi(app)
    yield CalDAVServer("radicale", url, "zoe", "app-password-1", "/zoe/")
    server.close()


@pytest.fixture
def xandikos(tmp_path: Path) -> Iterator[CalDAVServer]:
    from xandikos.web import SingleUserFilesystemBackend, XandikosApp

    backend = SingleUserFilesystemBackend(str(tmp_path / "xandikos-data"), autocreate=True)
    backend.create_principal("/zoe/", create_defaults=True)
    app = XandikosApp(backend, "/zoe/")
    server, url = _serve_wsgi(app)
    yield CalDAVServer("xandikos", url, "zoe", "any-password", "/zoe/calendars/")
    server.close()


@pytest.fixture(params=["radicale", "xandikos"])
def caldav_server(request: pytest.FixtureRequest) -> CalDAVServer:
    """Each test using this runs against both real CalDAV servers."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# --- a scriptable HTTP calendar server -----------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: bool = True  # answer If-None-Match with 304
    gzip: bool = False
    drip_seconds: float = 0.0  # delay between bytes: a slow server
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


class CalendarHTTPServer:
    """Serves registered routes on loopback and counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                outer.hits[path] = outer.hits.get(path, 0) + 1
                outer.requests.append((self.path, dict(self.headers)))
                route = outer.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.handler is not None:
                    route.handler(self)
                    return
                body = route.body
                tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if route.etag and route.status == 200 and self.headers.get("If-None-Match") == tag:
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body = gzip.compress(body)
                self.send_response(route.status)
                if route.etag:
                    self.send_header("ETag", tag)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                if route.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if route.drip_seconds:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(route.drip_seconds)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = serve_in_thread(self.server)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, body: bytes = b"", **kw: Any) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.base_url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def calendar_http() -> Iterator[CalendarHTTPServer]:
    server = CalendarHTTPServer()
    yield server
    server.close()


@pytest.fixture
def canary() -> Iterator[CalendarHTTPServer]:
    """A loopback server that must receive nothing in SSRF tests."""
    server = CalendarHTTPServer()
    server.add("/calendar.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    yield server
    server.close()


# --- an SMTP sink ---------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Any:
        import email
        from email import policy

        return email.message_from_bytes(self.data, policy=policy.default)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """aiosmtpd on loopback keeping every message it accepts. `stop()` and `start()` take it
    down and bring it back on the same port (the mail server is down); `refuse` makes it answer
    every message with that SMTP reply instead; with `auth` it requires that login."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.auth = auth
        self.messages: list[ReceivedMail] = []
        self.logins: list[tuple[str, str]] = []
        self.refuse: str | None = None
        self._lock = threading.Lock()
        self._controller: Any = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                if sink.refuse:
                    return sink.refuse
                with sink._lock:
                    sink.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos),
                                                      bytes(envelope.original_content or envelope.content)))
                return "250 Message accepted for delivery"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            login = data.login.decode() if isinstance(data.login, bytes) else str(data.login)
            password = data.password.decode() if isinstance(data.password, bytes) else str(data.password)
            sink.logins.append((login, password))
            ok = (login, password) == sink.auth
            # handled=False: aiosmtpd answers the failure with 535 itself.
            return AuthResult(success=ok, handled=ok)

        extra: dict[str, Any] = {}
        if self.auth:
            extra = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(Handler(), hostname=self.host, port=self.port,
                                      server_hostname="localhost", **extra)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def by_message_id(self) -> dict[str, int]:
        """How many times each Message-ID arrived: every email exactly once means all 1."""
        counts: dict[str, int] = {}
        for mail in self.messages:
            key = str(mail.message["Message-ID"])
            counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    server = SmtpSink()
    server.start()
    yield server
    server.stop()
