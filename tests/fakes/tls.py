"""TLS on loopback for a contract fake: one trustme certificate authority per test process, a
certificate for 127.0.0.1 from it, and a threaded WSGI server that speaks https with it.

msal insists on an https authority (README "Google Calendar and Microsoft 365"), so the
Microsoft fake is served this way. calsync trusts the CA through CALSYNC_MICROSOFT_CA_FILE
(`ca_file()`, a PEM file), the browser tests through their context's `ignore_https_errors`:
certificate verification is never turned off in calsync itself.

The server is werkzeug's threaded one (a thread per connection, so it never caps concurrency
itself); the TLS handshake happens on the connection's own thread, so one client that never
sends its hello cannot stall the others.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trustme
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

_lock = threading.Lock()
_made: dict[str, Any] = {}


def _authority() -> tuple[str, ssl.SSLContext]:
    """The process's CA file and the server context with a certificate for 127.0.0.1."""
    with _lock:
        if not _made:
            ca = trustme.CA(organization_name="calsync tests", organization_unit_name="loopback fakes")
            handle, path = tempfile.mkstemp(prefix="calsync-test-ca-", suffix=".pem")
            os.close(handle)
            ca.cert_pem.write_to_path(path)
            atexit.register(_remove, path)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            _made.update(path=path, context=context)
        return _made["path"], _made["context"]


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def ca_file() -> str:
    """The PEM file of the CA that signed the fakes' certificate."""
    return _authority()[0]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The fakes keep their own request log."""


class _TlsServer(ThreadedWSGIServer):
    daemon_threads = True
    tls: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # On the connection's thread (ThreadingMixIn.process_request_thread).
        request.settimeout(10)  # the handshake
        wrapped = self.tls.wrap_socket(request, server_side=True)
        wrapped.settimeout(120)  # an idle kept-alive connection, as waitress's channel_timeout
        try:
            super().finish_request(wrapped, client_address)
        finally:
            self.shutdown_request(wrapped)  # the plain socket it came from is detached

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up or refused the certificate is no failure of the fake."""


@contextmanager
def serve_tls(app: Any) -> Iterator[str]:
    """`app` served over https on 127.0.0.1; yields its root address."""
    _path, context = _authority()
    server = _TlsServer("127.0.0.1", 0, app, handler=_QuietHandler)
    server.tls = context
    server.ssl_context = context  # werkzeug: wsgi.url_scheme is https
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()

