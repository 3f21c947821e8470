"""Feeds and the API under bounded concurrent load, on a real server: `calsync serve` (waitress,
its background worker threads included) in a subprocess on loopback, and 8 client threads
fetching feeds (plain, gzip, revalidated), reading the API and rescheduling appointments (so
feeds change and re-render while they are read) for `TEST_CALSYNC_LOAD_SECONDS` (default 60).

Pinned: no request fails (no 5xx, no connection error, no unexpected status), and the server's
memory does not grow (resident set size sampled every second: after the warm-up, the last
samples stay within a small margin of the first). The request rate and latencies are printed,
not asserted: speed belongs in bench/.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from calsync.feeds.settings import Settings
from tests.clock import day_at
from tests.conftest import Api
from tests.serve_process import ServeProcess, calsync_serve

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("TEST_CALSYNC_LOAD_SECONDS", "60"))
CLIENTS = 8
WARM_UP = min(15.0, SECONDS / 4)
# Allowed growth of the resident set from the first samples after the warm-up to the last.
GROWTH_FRACTION, GROWTH_BYTES = 0.10, 8 * 2**20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def server(settings: Settings, app: object, tmp_path: Path) -> Iterator[ServeProcess]:
    """`calsync serve` on the test's database; the data was arranged through `app` first."""
    with calsync_serve(settings, tmp_path / "serve.log") as served:
        yield served


@dataclass
class World:
    key: str
    feeds: list[str]
    appointments: list[int]
    staff: list[int]
    slots: dict[int, tuple[str, str]] = field(default_factory=dict)


def _at(days: int, hour: int) -> str:
    return (day_at(days, 0) + timedelta(hours=hour)).isoformat()


@pytest.fixture
def world(api: Api) -> World:
    every_day = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    staff = [
        api.make_staff(name=f"Staff {n}", email=f"s{n}@example.com", working_hours=every_day, timezone="UTC")[
            "id"
        ]
        for n in range(3)
    ]
    group = api.post("/groups", {"name": "All", "staff_ids": staff}).get_json()["id"]
    appointments = []
    for n in range(30):
        resp = api.book(staff[n % 3], _at(2 + n // 3, 9), _at(2 + n // 3, 10), notes=f"Visit {n}")
        assert resp.status_code == 201, resp.get_json()
        appointments.append(resp.get_json()["id"])
    feeds = [
        api.feed_url(scope, scope_id, privacy)
        for scope, scope_id in [*[("staff", s) for s in staff], ("group", group), ("company", 1)]
        for privacy in ("full", "limited", "busy")
    ]
    return World(api.key, feeds, appointments, staff)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    kinds: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def record(self, kind: str, ok: bool, seconds: float, detail: str) -> None:
        with self.lock:
            self.kinds[kind] += 1
            self.latencies.append(seconds)
            if not ok:
                self.errors.append(f"{kind}: {detail}")


def _client(server: ServeProcess, world: World, tally: Tally, until: float, seed: int) -> None:
    rng = random.Random(seed)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {world.key}"
    etags: dict[str, str] = {}
    while time.monotonic() < until:
        roll = rng.random()
        headers: dict[str, str] = {}
        if roll < 0.5:
            kind, method, path, expected = "feed", "GET", rng.choice(world.feeds), {200}
            if rng.random() < 0.5:
                headers["Accept-Encoding"] = "gzip"
        elif roll < 0.65:
            path = rng.choice(world.feeds)
            kind, method, expected = "feed revalidation", "GET", {200, 304}
            headers["If-None-Match"] = etags.get(path, '"none"')
        elif roll < 0.9:
            kind, method, expected = "API read", "GET", {200}
            staff = rng.choice(world.staff)
            path = rng.choice(
                [
                    "/api/v1/staff",
                    "/api/v1/appointments?limit=50",
                    "/api/v1/feeds",
                    f"/api/v1/staff/{staff}/availability?start={_at(2, 0)}&end={_at(4, 0)}".replace(
                        "+", "%2B"
                    ),
                ]
            )
        else:
            # A reschedule within the same day: the feed of its staff member changes.
            appt = rng.choice(world.appointments)
            n = world.appointments.index(appt)
            hour = rng.choice([9, 11, 13, 15])
            kind, method, expected = "API reschedule", "PATCH", {200, 409}  # 409: the slot is taken
            path = f"/api/v1/appointments/{appt}"
            body = {"start": _at(2 + n // 3, hour), "end": _at(2 + n // 3, hour + 1)}
        started = time.monotonic()
        try:
            if method == "PATCH":
                resp = http.patch(server.base + path, json=body, timeout=30)
            else:
                resp = http.get(server.base + path, headers=headers, timeout=30)
            ok = resp.status_code in expected
            detail = f"{method} {path.split('?')[0][:40]} → {resp.status_code} {resp.text[:200]!r}"
            if kind.startswith("feed") and "ETag" in resp.headers and "Accept-Encoding" not in headers:
                etags[path] = resp.headers["ETag"]
        except requests.RequestException as exc:
            ok, detail = False, f"{method} {path[:40]}: {type(exc).__name__}"
        tally.record(kind, ok, time.monotonic() - started, detail)


def test_feeds_and_api_under_concurrent_load_without_errors_or_memory_growth(
    server: ServeProcess, world: World
) -> None:
    tally = Tally()
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    until = start + SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_client, server, world, tally, until, seed) for seed in range(CLIENTS)]
        while time.monotonic() < until:
            samples.append((time.monotonic() - start, _rss(server.process.pid)))
            time.sleep(1.0)
        for future in futures:
            future.result()
    total = sum(tally.kinds.values())
    ms = [s * 1000 for s in sorted(tally.latencies)]
    print(
        f"\nload: {total} requests in {SECONDS:.0f} s by {CLIENTS} clients ({total / SECONDS:.0f}/s), "
        f"{dict(tally.kinds)}; latency p50 {statistics.median(ms):.1f} ms, "
        f"p95 {ms[int(len(ms) * 0.95)]:.1f} ms, max {ms[-1]:.0f} ms"
    )
    assert server.process.poll() is None, "the server died"
    failed = "\n".join(tally.errors[:10])
    assert not tally.errors, (
        f"{len(tally.errors)} of {total} requests failed:\n{failed}\n"
        f"server log:\n{server.log.read_text()[-6000:]}"
    )
    assert tally.kinds["API reschedule"] > 0 and tally.kinds["feed"] > 100
    after = [rss for t, rss in samples if t >= WARM_UP]
    assert len(after) >= 10, f"too few samples after the warm-up: {len(after)}"
    first, last = statistics.median(after[:5]), statistics.median(after[-5:])
    print(
        f"server RSS after warm-up: {first / 2**20:.1f} MB → {last / 2**20:.1f} MB "
        f"(peak {max(after) / 2**20:.1f} MB)"
    )
    assert last <= first * (1 + GROWTH_FRACTION) + GROWTH_BYTES, (
        f"memory grew from {first / 2**20:.1f} MB to {last / 2**20:.1f} MB"
    )
    # The server logged no feed token and no API key while serving them all.
    served = server.log.read_text()
    tokens = [re.sub(r"^/feeds/|\.ics$", "", path) for path in world.feeds]
    assert not [t for t in [*tokens, world.key] if t in served]
