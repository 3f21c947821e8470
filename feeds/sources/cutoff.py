"""A wall-clock deadline for outgoing connections, enforced whatever the server does.

A socket timeout bounds one wait for bytes, not a request: a server that sends its status line
and then one header byte every few seconds never lets a read time out (issue 14: a `fetch_url`
with a 30 s limit ran 480 s). Neither niquests nor urllib3-future has a total limit across
reads (urllib3's `Timeout(total=...)` only splits one budget between connect and the per-read
timeout), so the limit is enforced from outside the reading thread:

- `Cutoff` keeps a duplicate of every socket one session opens (the resolver hands it over
  right after connecting), so the same connection can be reached after TLS has taken the
  original socket object over, and without reaching into the HTTP library's internals;
- one process-wide watchdog thread, at the deadline, calls `shutdown(SHUT_RDWR)` on them.
  Shutting a socket down (unlike closing a descriptor) wakes a thread blocked in `recv` on
  another descriptor of the same socket on Linux and the BSDs, so TLS handshakes, headers and
  bodies all end at once; the reader sees a broken connection and the caller, seeing
  `fired`, reports a timeout.

Holding a duplicate keeps each connection open until the session closes (`close()`): sessions
are short (one fetch, one CalDAV conversation), so that is a few descriptors for seconds.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable


class _Watchdog:
    """One thread for the whole process, started on first use (nothing runs at import time)."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, at: float, callback: Callable[[], None]) -> int:
        with self._wake:
            handle = next(self._ids)
            heapq.heappush(self._heap, (at, handle, callback))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="calsync-cutoff", daemon=True)
                self._thread.start()
            self._wake.notify()
            return handle

    def cancel(self, handle: int) -> None:
        with self._wake:
            if any(entry[1] == handle for entry in self._heap):
                self._cancelled.add(handle)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._wake.wait()
                    continue
                at, handle, callback = self._heap[0]
                delay = at - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
            with contextlib.suppress(Exception):  # one broken callback must not stop the others
                callback()


_WATCHDOG = _Watchdog()


class Cutoff:
    """The connections of one session and the moment they must be done by.

    `arm(at)` sets (or moves) the deadline; `disarm()` lifts it once the request is answered.
    At the deadline every connection of the session is shut down and `fired` stays true, so a
    connection opened afterwards is shut down at once too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._handle: int | None = None
        self.fired = False

    def adopt(self, sock: socket.socket) -> None:
        copy = sock.dup()
        with self._lock:
            self._sockets.append(copy)
            if self.fired:
                _hang_up(copy)

    def arm(self, at: float) -> None:
        self.disarm()
        self._handle = _WATCHDOG.schedule(at, self._fire)

    def disarm(self) -> None:
        if self._handle is not None:
            _WATCHDOG.cancel(self._handle)
            self._handle = None

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _hang_up(sock)

    def close(self) -> None:
        self.disarm()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)
