"""gunicorn settings for calsync's web processes (docs/deploy.md).

    gunicorn -c deploy/gunicorn.conf.py            # serves wsgi:app from the source folder
    gunicorn -c deploy/gunicorn.conf.py 'web:create_app()'   # from an installed package

calsync reads its own settings from CALSYNC_* variables; the few knobs here come from
gunicorn's own variables (GUNICORN_CMD_ARGS overrides any of them, e.g. "--bind=unix:/run/calsync.sock"):

    GUNICORN_BIND        where to listen (default 127.0.0.1:8000: behind a reverse proxy)
    WEB_CONCURRENCY      worker processes (default: 2 per CPU core)
    GUNICORN_THREADS     threads per worker (default 4)
    FORWARDED_ALLOW_IPS  addresses of the reverse proxy whose X-Forwarded-* headers are trusted

Feed URLs and staff connect links carry their secret in the path, so the access log writes
paths without query strings and with every long path segment (a token: 22+ characters, i.e.
128 bits or more in base64) replaced by "[secret]" (RedactingLogger below).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from gunicorn import glogging

from calsync.web.heap import freeze_heap

wsgi_app = "wsgi:app"
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]

# Feed requests are short database reads answered mostly from the per-process memory cache:
# threads share that cache (and a process's database pool), processes use the cores. Each
# thread may hold one database connection from the pool and one set aside for feed lookups
# (feeds/publishing/lookup_connections.py), and each process one more that LISTENs for feed
# changes (feeds/publishing/feed_changes.py): PostgreSQL's max_connections must cover
# (2 × threads + 1) × workers of every web machine, plus the queue workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# A cold render of a large company feed takes seconds, not minutes; anything slower is stuck.
timeout = 30
graceful_timeout = 30
# Longer than the proxy's idle timeout (nginx and most load balancers: 60 s), so the proxy
# never reuses a kept-alive connection that gunicorn has just closed (a 502 for the client).
keepalive = 65
# Recycle a worker now and then so slow leaks cannot grow; the jitter keeps workers from
# restarting together. Its feed cache is rebuilt from the shared feed_segment table.
max_requests = 20_000
max_requests_jitter = 2_000
# The heartbeat file on a RAM disk: a slow disk must not make gunicorn think a worker hangs.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - gunicorn's own files

# Load the app once in the master: migrations run once (not racing in every worker), the code
# is shared between workers, and a broken configuration stops the start with its sentence.
preload_app = True

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Recent gunicorn versions open a control socket in $HOME, shared by every instance of the
# user; calsync is steered through systemd (reload = HUP) instead. Older versions ignore this.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

SECRET_SEGMENT = re.compile(r"(?<=/)[^/?#\s\"]{22,}")


def redact(text: str) -> str:
    """Path segments long enough to be a token become "[secret]"; query strings are dropped."""
    return SECRET_SEGMENT.sub("[secret]", text.split("?", 1)[0])


class RedactingLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, minus the secrets in request paths, query strings and referers.

    Every atom a custom access_log_format could use to write the request target is redacted;
    the error log's messages too (gunicorn names the request URI when a request fails, and so
    does Flask's "Exception on <path>" line: see post_worker_init).
    """

    URI_ATOMS = (
        "r",
        "U",
        "f",
        "{raw_uri}e",
        "{path_info}e",
        "{request_uri}e",
        "{http_referer}e",
        "{referer}i",
    )

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in self.URI_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        atoms["r"] = (
            f"{environ['REQUEST_METHOD']} {redact(environ.get('PATH_INFO', ''))} {environ['SERVER_PROTOCOL']}"
        )
        atoms["q"] = "-"
        atoms["{query_string}e"] = "-"
        return atoms

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.addFilter(_redact_record)


def _redact_record(record: Any) -> bool:
    """A logging filter: the message as formatted, with the secrets in its paths redacted."""
    record.msg, record.args = redact_message(record.getMessage()), None
    return True


def redact_message(message: str) -> str:
    return " ".join(redact(word) if "/" in word else word for word in message.split(" "))


logger_class = RedactingLogger


# --- the client's address behind the proxy ---------------------------------------------------


class TrustedProxyFix:
    """REMOTE_ADDR and the scheme from X-Forwarded-For/-Proto, but only when the request comes
    from an address in forwarded_allow_ips (or a unix socket).

    The admin login's lockout counts failures per client address: behind a proxy every client
    would otherwise share the proxy's address, and one attacker could lock everybody out.
    werkzeug's ProxyFix trusts the headers from anyone, hence the check first.
    """

    def __init__(self, app: Any, trusted: list[str]) -> None:
        from werkzeug.middleware.proxy_fix import ProxyFix

        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1)
        self.anyone = "*" in trusted
        self.networks = [
            ipaddress.ip_network(a.strip(), strict=False) for a in trusted if a.strip() and a.strip() != "*"
        ]

    def trusts(self, address: str | None) -> bool:
        if self.anyone:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return True  # a unix socket: only the local proxy can reach it
        return any(ip in net for net in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = self.fixed if self.trusts(environ.get("REMOTE_ADDR")) else self.app
        return target(environ, start_response)


def _trusted(cfg: Any) -> list[str]:
    value = cfg.forwarded_allow_ips
    return [str(v) for v in (value.split(",") if isinstance(value, str) else value)]


# --- hooks: the app is created in the master, then forked ------------------------------------


def _engine(app: Any) -> Any:
    services = getattr(app, "extensions", {}).get("calsync") if app is not None else None
    return services.engine if services is not None else None


def when_ready(server: Any) -> None:
    # The master served no request; close the connections its start (migrations) opened, so
    # no worker inherits them and the master holds none while it supervises.
    engine = _engine(getattr(server.app, "callable", None))
    if engine is not None:
        engine.dispose()
    # The preloaded app out of the garbage collector's full walks, before the workers fork
    # (calsync/web/heap.py: a ~110 ms stall of one request in ~190, and shared pages kept shared).
    freeze_heap()


def post_fork(server: Any, worker: Any) -> None:
    # A pooled connection must never be used by two processes (SQLAlchemy, "Using Connection
    # Pools with Multiprocessing"): drop the inherited pool without closing the parent's sockets.
    engine = _engine(getattr(worker.app, "callable", None))
    if engine is not None:
        engine.dispose(close=False)


def post_worker_init(worker: Any) -> None:
    app = worker.wsgi
    if hasattr(app, "wsgi_app"):  # the Flask app: wrap its WSGI callable, as Flask documents
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, _trusted(worker.cfg))
        app.logger.addFilter(_redact_record)  # "Exception on /feeds/<token>.ics [GET]"
