"""A WSGI app under waitress on a loopback port, in a thread of this process: the benchmarks'
CalDAV servers and feed server, and the test suite's in-process servers (tests/servers.py).

`close()` ends all of it. waitress has no stop call, and closing its server ends only the
listening socket: the loop runs on while a kept-alive connection is open, and the task
dispatcher's threads wait for work for ever. In the test suite, 300-700 of those threads (each
holding the app it served) were alive at the end of an xdist worker's run, and the heap they
kept made a full garbage collection stop the worker for up to 3 s, inside timed tests."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import waitress
from waitress import wasyncore


class ServedWSGI:
    def __init__(self, app: Any, *, threads: int = 4, ident: str = "waitress",
                 name: str = "served-wsgi") -> None:
        self.server: Any = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads,
                                                  ident=ident)
        self.port: int = self.server.effective_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # The loop ends when its last socket is closed (close() below), or with EBADF when a
        # socket is closed under its poll: the normal end here, not an error.
        with contextlib.suppress(OSError, ValueError):
            self.server.run()

    def close(self) -> None:
        wasyncore.close_all(self.server._map, ignore_all=True)  # the listener and every connection
        self.server.task_dispatcher.shutdown(timeout=5)
        self.thread.join(timeout=5)
