"""Servers that are slow on purpose (issue 14), started by fixtures on loopback.

- DripHeadersServer: answers every request with its status line at once and then one header
  byte every `drip_seconds`, never ending the headers. A socket read timeout never fires
  (bytes keep coming), so only a wall-clock deadline ends a request to it. It gives up after
  `give_up_seconds` (closing the connection), so a client without a deadline makes a test fail
  by being slow instead of hanging the suite.

It records how many connections it accepted and, for each, how long the client stayed before
hanging up (`held`): the proof that the client, not the server, ended the request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest


class DripHeadersServer:
    def __init__(self, drip_seconds: float = 0.3, give_up_seconds: float = 20.0) -> None:
        self.drip_seconds = drip_seconds
        self.give_up_seconds = give_up_seconds
        self.connections = 0
        self.held: list[float] = []  # seconds each connection lasted
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn:
            conn.settimeout(5)
            request = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break  # hung up before asking: recorded below all the same
                    request += chunk
            try:
                if b"\r\n\r\n" in request:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\nX-Slow: ")
                    while not self.stop.wait(self.drip_seconds):
                        if time.monotonic() - started > self.give_up_seconds:
                            break
                        conn.sendall(b"a")
            except OSError:
                pass  # the client hung up: what a deadline does
            with self._lock:
                self.held.append(time.monotonic() - started)

    def close(self) -> None:
        self.stop.set()
        # Closing a listening socket does not wake a thread blocked in accept() on Linux;
        # shutting it down does.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def drip_headers_server() -> Iterator[DripHeadersServer]:
    server = DripHeadersServer()
    yield server
    server.close()
