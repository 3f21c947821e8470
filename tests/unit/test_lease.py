"""The sync lease's arithmetic: a sync's work ends inside its lease, and its owner token fits
the row (feeds/calendars/lease.py; the behaviour is in tests/integration/test_sync_lease.py)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from calsync.feeds.calendars.lease import Lease, process_owner_prefix
from calsync.feeds.settings import Settings
from calsync.models import Connection


@pytest.mark.parametrize("seconds", [2, 31, 300, 86_400])
def test_every_share_of_the_work_ends_before_the_lease(seconds: int) -> None:
    # started is a monotonic reading taken now: a fixed number would assume the machine's uptime
    lease = Lease("w", datetime(2026, 1, 1, tzinfo=UTC), time.monotonic(), seconds)
    assert lease.started < lease.network_deadline < lease.work_deadline < lease.started + seconds
    # The sync's clock is the lease's: the fence compares it with lease_until.
    assert lease.taken_at <= lease.now() < lease.taken_at + timedelta(days=365)


def test_the_default_lease_leaves_the_fetch_timeout_whole() -> None:
    """With the defaults a fetch is cut by its own timeout, not by the lease's network share."""
    settings = Settings()
    assert settings.fetch_timeout_seconds < 0.8 * settings.sync_lease_seconds


def test_the_owner_token_fits_its_column_even_with_a_long_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 253)
    monkeypatch.setattr("os.getpid", lambda: 4_194_304)  # Linux's pid_max
    token = process_owner_prefix() + "0" * 12  # what sync_connection appends
    assert len(token) <= Connection.__table__.c.lease_owner.type.length
