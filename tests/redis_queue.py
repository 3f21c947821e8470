"""A queue of the calling test's own on the test Redis, so that parallel test processes (pytest
-n, other checkouts on the same machine) never share or flush each other's jobs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from calsync.feeds.jobs import split_queue_name


def private_queue_url(prefix: str, default_url: str) -> Iterator[str]:
    import redis

    base = os.environ.get("TEST_CALSYNC_REDIS_URL", default_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        client = redis.Redis.from_url(base)
        client.ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required on CI ({base}): {exc}")
        pytest.skip(f"no Redis at {base}")
    url = f"{base}{'&' if '?' in base else '?'}queue={name}"
    assert split_queue_name(url)[0] == name
    try:
        yield url
    finally:
        # Only this queue's keys: a FLUSHDB would empty another process's queue mid-test.
        for key in client.scan_iter(match=f"huey.*.{name}*"):
            client.delete(key)
        client.close()
