"""The benchmarks of issue 17 at tiny sizes, so they cannot rot: every row is printed with a
baseline measured in the same run, under gunicorn and waitress. Nothing here is timed or
compared with a target; that is what `calsync bench feeds` / `bench scale` are for.
"""

from __future__ import annotations

import os

import pytest

from calsync.bench import ceiling, reschedule_curve
from calsync.bench.feeds import _print_table

SERVERS = ("gunicorn", "waitress")


def test_issue17_table_prints_every_row_against_its_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    figures = ceiling.run(appointments=60, staff=3, rounds=3, demo_appointments=30, busy_blocks=40)
    rows = figures["rows"]
    out = capsys.readouterr().out
    expected = ["availability, 60 days", "demo-data --staff 3 --appointments 30"]
    for server in SERVERS:
        expected += [f"[{server}] warm company-feed GET", f"[{server}] 304 revalidation",
                     f"[{server}] reschedule PATCH",
                     f"[{server}] first GET after one move ÷ warm GET (same rounds)",
                     f"[{server}] first GET after one move ÷ warm GET of the first row",
                     f"[{server}] first GET after a change vs icalendar build",
                     f"[{server}] first gzip GET after one move"]
    for start in expected:
        (metric,) = [m for m in rows if start in m]
        assert rows[metric]["ours_s"] > 0 and rows[metric]["base_s"] > 0, metric
        assert metric in out
    # The output says what the baselines include.
    assert "its database load excluded" in out and "constant routes" in out


def test_reschedule_curve_runs_on_postgresql() -> None:
    url = os.environ.get("TEST_CALSYNC_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("the reschedule curve runs on PostgreSQL (TEST_CALSYNC_DATABASE_URL)")
    rows = reschedule_curve.run(url, small=2_000, large=4_000, rounds=3)
    assert [r.base for r in rows][1] > 0 and all(r.ours > 0 for r in rows)
    _print_table(rows, [])


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_provider_bench_counts_an_incremental_pass_against_a_full_listing(
        provider: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`calsync bench google` / `bench microsoft` (issues 11/12) at tiny sizes against the contract
    fakes: one moved booking is read back with at most two requests, while the full listing of
    the same calendar reads every page; three moves arrive through push notifications."""
    from calsync.bench import providers

    figures = providers.run(provider, events=50, moves=3, rounds=3)
    out = capsys.readouterr().out
    for metric in ("incremental read of the pass", "whole pass, with the copy written back",
                   "sync pass applying 1 move vs full listing",
                   "notification → rescheduled + email queued, median of 3",
                   "notification → rescheduled + email queued, p95 of 3"):
        assert metric in out, metric
    assert figures["incremental_read_requests"] <= 2
    assert figures["incremental_read_bytes"] < figures["full_listing_bytes"]
    # The pass also writes the refreshed copy back: one more request, a write.
    assert figures["pass_requests"] == figures["incremental_read_requests"] + 1
    assert len(figures["latencies_s"]) == 3 and all(s > 0 for s in figures["latencies_s"])
    # The output says what each baseline includes.
    assert "full listing through the same store" in out and "direct sync_connection pass" in out


@pytest.mark.parametrize("server_name", ["radicale", "xandikos"])
def test_twoway_bench_applies_every_move_made_in_the_calendar(server_name: str) -> None:
    """`calsync bench twoway` at a tiny size: each round moves an event as a calendar app does
    and checks, before timing counts, that the sync applied the calendar's times to the
    appointment (it raises otherwise). It once wrote the new times into properties that kept
    their TZID, which read as Berlin time an hour off, and nothing ran it to notice."""
    from calsync.bench import twoway

    figures = twoway.run(appointments=100, rounds=3, server_name=server_name)
    assert figures["moves"] >= 3 and figures["sync_pass_s"] > 0 and figures["full_listing_s"] > 0
