"""Waiting in tests for something that happens in another thread or process (a queue worker, a
server starting): one polling helper instead of a loop in every file.

The limit is a hang guard, not a speed requirement: a condition that never comes true fails the
test with `what` (and the state it describes) instead of hanging the suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

HANG_GUARD_SECONDS = 60.0


def wait_until(
    condition: Callable[[], T],
    what: str | Callable[[], object] = "the awaited condition",
    *,
    limit: float = HANG_GUARD_SECONDS,
    interval: float = 0.05,
) -> T:
    """Call `condition` every `interval` seconds until it returns a true value, and return that
    value. After `limit` seconds the test fails naming `what`; a callable `what` is called
    then, to show the state that was waited on (e.g. the outbox, a process's output).
    An exception from `condition` ends the wait at once (e.g. an assertion that a worker is
    still alive)."""
    deadline = time.monotonic() + limit
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"gave up after {limit:g} s waiting for {described}")
        time.sleep(interval)
