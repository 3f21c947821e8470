"""The wall-clock cutoff (feeds/sources/cutoff.py) on a socket pair: a read blocked for good
ends at the deadline, whatever the socket timeout, and nothing fires once disarmed."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from calsync.feeds.sources.cutoff import Cutoff

# Timed within a second or two: a collection of the heap earlier tests left must not pause the
# threads mid-test (tests/conftest.py, no_gc_pauses).
pytestmark = pytest.mark.usefixtures("no_gc_pauses")


def _blocked_read(sock: socket.socket, result: list[object]) -> threading.Thread:
    def read() -> None:
        try:
            result.append(sock.recv(1024))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_read_that_would_block_for_ever_ends_at_the_deadline() -> None:
    ours, peer = socket.socketpair()
    ours.settimeout(None)  # no socket timeout at all: only the cutoff can end the read
    cutoff = Cutoff()
    try:
        cutoff.adopt(ours)
        started = time.monotonic()
        cutoff.arm(started + 0.3)
        result: list[object] = []
        _blocked_read(ours, result).join(timeout=3)
        assert result == [b""]  # the connection was shut down under the reader
        assert 0.25 < time.monotonic() - started < 2
        assert cutoff.fired
    finally:
        cutoff.close()
        ours.close()
        peer.close()


def test_a_disarmed_cutoff_never_fires_and_a_fired_one_cuts_new_sockets_at_once() -> None:
    first, first_peer = socket.socketpair()
    cutoff = Cutoff()
    try:
        cutoff.adopt(first)
        cutoff.arm(time.monotonic() + 0.1)
        cutoff.disarm()
        time.sleep(0.3)
        assert not cutoff.fired
        first_peer.sendall(b"still open")
        assert first.recv(1024) == b"still open"
        cutoff.arm(time.monotonic())  # now
        deadline = time.monotonic() + 2
        while not cutoff.fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cutoff.fired
        late, late_peer = socket.socketpair()
        cutoff.adopt(late)  # a connection opened after the deadline (a library retrying)
        late.settimeout(2)
        assert late.recv(1024) == b""
        late.close()
        late_peer.close()
    finally:
        cutoff.close()
        first.close()
        first_peer.close()
