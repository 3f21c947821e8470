"""Calendar-sync benchmark (`calsync bench sync`): issue 3's "Benchmark" section.

One run builds a company, a staff member and ICS connections in a temporary data dir, serves
generated calendars from a small ThreadingHTTPServer on loopback (honouring If-None-Match with
an ETag, like Google's and Outlook's calendar hosts), and times `feeds.sync.sync_connection`,
the very function the queue's jobs call. Every ratio compares against a baseline measured in the
same run, on the same bytes:

- full sync of one large calendar (its bytes and ETag change before every round, so each round
  fetches, hashes, parses, expands and replaces the busy blocks) vs. parsing the same bytes
  in-process with `icalendar.Calendar.from_ical` and expanding them with
  `recurring_ical_events.of(cal).between(...)` over the same sync window (no HTTP, no database:
  that only favours the baseline);
- an unchanged calendar (the server answers 304) vs. the full sync; and, for information, the
  same content served again without an ETag (the content hash short-circuits the parse);
- throughput: `connections` small calendars synced by the real Huey queue (SQLite storage in
  the data dir, a consumer of 2 worker threads), as connections per second, beside the same
  syncs run one after another in-process.
"""

from __future__ import annotations

import gc
import random
import secrets
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import icalendar
import recurring_ical_events
from sqlalchemy import func, select, update

from calsync.bench.feeds import WARMUP, PeakRss, Row, _expect, _paired, _print_table
from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import SyncContext, sync_connection, sync_window
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import BusyBlock, Company, Connection, ConnectionStatus, utcnow
from calsync.web import create_app

QUEUE_WORKERS = 2
THROUGHPUT_REPEATS = 3  # whole runs of all connections, each way; the median is reported
SMALL_EVENTS = 20
PRODID = "-//Google Inc//Google Calendar 70.9054//EN"
# Event zones, weighted: most of a European team's events in Berlin, meetings with New York,
# and the UTC times that some exporters write.
EVENT_ZONES = ["Europe/Berlin", "Europe/Berlin", "America/New_York", "UTC"]
VTIMEZONES = {
    "Europe/Berlin": (
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nX-LIC-LOCATION:Europe/Berlin\r\n"
        "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
        "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n"
        "DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"
    ),
    "America/New_York": (
        "BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nX-LIC-LOCATION:America/New_York\r\n"
        "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nTZNAME:EDT\r\n"
        "DTSTART:19700308T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nTZNAME:EST\r\n"
        "DTSTART:19701101T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"
    ),
}
TITLES = ["Team sync", "1:1", "Customer call", "Dentist", "Design review", "Lunch with Ana",
          "Sprint planning", "Interview", "Focus time", "Board meeting", "Gym", "Pick up kids"]
PLACES = ["Room 4.12", "Zoom", "Café Lindner, Kastanienallee 12, Berlin", "Client office", ""]
WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


# --- calendars --------------------------------------------------------------------------------


def _fold(line: str) -> str:
    """RFC 5545 line folding at 75 octets (the texts here are ASCII)."""
    out = []
    while len(line) > 75:
        out.append(line[:75])
        line = " " + line[75:]
    out.append(line)
    return "\r\n".join(out) + "\r\n"


def _when(name: str, moment: datetime | date, zone: str) -> str:
    """A DTSTART-like property with its parameters."""
    if not isinstance(moment, datetime):
        return f"{name};VALUE=DATE:{moment:%Y%m%d}"
    if zone == "UTC":
        return f"{name}:{moment:%Y%m%dT%H%M%S}Z"
    return f"{name};TZID={zone}:{moment:%Y%m%dT%H%M%S}"


@dataclass
class _Gen:
    """Writes VEVENTs around `today` with a seeded random generator."""

    today: date
    rng: random.Random
    stamp: str = "20260101T080000Z"
    serial: int = 0

    def _start(self, first_day: int, last_day: int) -> tuple[datetime, int]:
        day = self.today + timedelta(days=self.rng.randint(first_day, last_day))
        hour, minute = self.rng.randint(7, 18), self.rng.choice((0, 15, 30, 45))
        start = datetime(day.year, day.month, day.day, hour, minute)
        return start, self.rng.choice((15, 30, 30, 45, 60, 60, 90, 120))

    def _common(self, uid: str, transparent: bool, status: str = "CONFIRMED") -> list[str]:
        rng = self.rng
        lines = [f"DTSTAMP:{self.stamp}", f"UID:{uid}", f"CREATED:{self.stamp}",
                 f"LAST-MODIFIED:{self.stamp}", f"SEQUENCE:{rng.randint(0, 3)}",
                 f"STATUS:{status}", f"SUMMARY:{rng.choice(TITLES)} #{self.serial}",
                 f"TRANSP:{'TRANSPARENT' if transparent else 'OPAQUE'}"]
        place = rng.choice(PLACES)
        if place:
            lines.append(f"LOCATION:{place}")
        if rng.random() < 0.3:
            lines.append("DESCRIPTION:Agenda: status of the open items\\, decisions needed\\, next "
                         "steps. Join: https://meet.example.com/abc-defg-hij (PIN 1234 5678)")
        return lines

    def _uid(self) -> str:
        self.serial += 1
        return f"{self.serial:06d}-{self.rng.getrandbits(48):012x}@bench.calsync.test"

    def single(self) -> list[str]:
        rng, uid = self.rng, self._uid()
        roll = rng.random()
        if roll < 0.04:  # all-day, 1-3 days
            first = self.today + timedelta(days=rng.randint(-60, 240))
            last = first + timedelta(days=rng.randint(1, 3))
            times = [_when("DTSTART", first, ""), _when("DTEND", last, "")]
            body = self._common(uid, transparent=rng.random() < 0.5)
        else:
            zone = rng.choice(EVENT_ZONES)
            start, minutes = self._start(-60, 240)
            times = [_when("DTSTART", start, zone), _when("DTEND", start + timedelta(minutes=minutes), zone)]
            status = "CANCELLED" if roll > 0.98 else "CONFIRMED"
            body = self._common(uid, transparent=rng.random() < 0.1, status=status)
            if rng.random() < 0.03:
                body.append("X-MICROSOFT-CDO-BUSYSTATUS:FREE")
        return [*times, *body]

    def series(self) -> list[list[str]]:
        """A recurring event and its overrides (same UID, RECURRENCE-ID)."""
        rng, uid = self.rng, self._uid()
        all_day = rng.random() < 0.05
        zone = "" if all_day else rng.choice(EVENT_ZONES)
        start, minutes = self._start(-120, 150)
        first: datetime | date = start.date() if all_day else start
        length = timedelta(days=1) if all_day else timedelta(minutes=minutes)
        weekly = rng.random() < 0.6
        step = timedelta(weeks=1) if weekly else timedelta(days=1)
        rule = "FREQ=WEEKLY" if weekly else "FREQ=DAILY"
        count = rng.randint(4, 16) if weekly else rng.randint(3, 10)
        if rng.random() < 0.5:
            rule += f";COUNT={count}"
        else:
            until = first + step * (count - 1)
            # Timed: in UTC, as RFC 5545 asks when DTSTART has a TZID; the last day's evening
            # is after the last occurrence in every zone used here (at most 18:45 in New York).
            rule += f";UNTIL={until:%Y%m%d}" if all_day else f";UNTIL={until:%Y%m%d}T235959Z"
        multi_day = weekly and not all_day and rng.random() < 0.2
        if multi_day:  # e.g. MO,TH: no EXDATE or override arithmetic on those
            rule += f";BYDAY={WEEKDAYS[start.weekday()]},{WEEKDAYS[(start.weekday() + 3) % 7]}"
        master = [_when("DTSTART", first, zone), _when("DTEND", first + length, zone), f"RRULE:{rule}",
                  *self._common(uid, transparent=rng.random() < 0.1)]
        out = [master]
        if multi_day or count < 4:
            return out
        picks = rng.sample(range(1, count), k=min(count - 1, 3))
        if rng.random() < 0.3:  # one or two cancelled occurrences
            for k in picks[: rng.randint(1, 2)]:
                master.append(_when("EXDATE", first + step * k, zone))
        if rng.random() < 0.25 and not all_day:  # one occurrence moved by an hour
            k = picks[-1]
            original = first + step * k
            assert isinstance(original, datetime)
            moved = original + timedelta(hours=1)
            out.append([_when("RECURRENCE-ID", original, zone), _when("DTSTART", moved, zone),
                        _when("DTEND", moved + length, zone),
                        *self._common(uid, transparent=rng.random() < 0.1)])
        return out


def make_calendar(
    events: int, today: date, seed: int, name: str = "Work"
) -> tuple[bytes, bytes, dict[str, int]]:
    """A calendar of `events` VEVENTs, a fifth of them recurring series (overrides count as
    events too). Returned in two halves, so a round marker can go between them."""
    gen = _Gen(today, random.Random(seed))
    components: list[list[str]] = []
    series = overrides = 0
    while series < events // 5 and len(components) < events:
        found = gen.series()
        found = found[: events - len(components)]
        components.extend(found)
        series += 1
        overrides += len(found) - 1
    while len(components) < events:
        components.append(gen.single())
    gen.rng.shuffle(components)
    head = (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:{PRODID}\r\nCALSCALE:GREGORIAN\r\n"
            f"METHOD:PUBLISH\r\nX-WR-CALNAME:{name}\r\n")
    body = "".join(VTIMEZONES.values()) + "".join(
        "BEGIN:VEVENT\r\n" + "".join(_fold(line) for line in lines) + "END:VEVENT\r\n"
        for lines in components
    ) + "END:VCALENDAR\r\n"
    stats = {"events": len(components), "series": series, "overrides": overrides,
             "exdates": sum(line.startswith("EXDATE") for c in components for line in c)}
    return head.encode(), body.encode(), stats


# --- a calendar host on loopback ---------------------------------------------------------------


@dataclass
class _Route:
    body: bytes
    etag: str | None


class CalendarHost:
    """ThreadingHTTPServer in a thread; a route with an ETag answers a matching If-None-Match
    with 304, as calendar hosts do."""

    def __init__(self) -> None:
        self.routes: dict[str, _Route] = {}
        self.statuses: dict[str, list[int]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                route = outer.routes.get(self.path)
                if route is None:
                    self._send(404, b"", None)
                elif route.etag and route.etag in self.headers.get("If-None-Match", ""):
                    self._send(304, b"", route.etag)
                else:
                    self._send(200, route.body, route.etag)

            def _send(self, status: int, body: bytes, etag: str | None) -> None:
                outer.statuses.setdefault(self.path, []).append(status)
                self.send_response(status)
                if status == 200:
                    self.send_header("Content-Type", "text/calendar; charset=utf-8")
                if etag:
                    self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="bench-ics-host", daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, path: str, body: bytes, etag: str | None) -> str:
        self.routes[path] = _Route(body, etag)
        return self.base_url + path

    def last_status(self, path: str) -> int:
        return self.statuses[path][-1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- measuring --------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _median(rounds: int, fn: Callable[[], float]) -> float:
    for _ in range(WARMUP):
        fn()
    return statistics.median(fn() for _ in range(rounds))


def _force_full(ctx: SyncContext, ids: list[int], due: datetime | None = None) -> None:
    """Forget what the last sync stored, so the next one fetches, parses and replaces all."""
    with ctx.sessions.begin() as session:
        session.execute(
            update(Connection).where(Connection.id.in_(ids)).values(
                content_hash=None, http_etag=None, http_last_modified=None, window_key=None,
                status="pending", lease_until=None, lease_owner=None, next_sync_at=due,
            )
        )


def _count_ok(ctx: SyncContext, ids: list[int]) -> tuple[int, int]:
    with ctx.sessions() as session:
        rows = dict(session.execute(
            select(Connection.status, func.count()).where(Connection.id.in_(ids)).group_by(Connection.status)
        ).all())
    return rows.get(ConnectionStatus.OK, 0), rows.get(ConnectionStatus.ERROR, 0)


def _through_queue(services: Any, ids: list[int]) -> float:
    """Wall time from enqueueing every due connection until all of them are ok."""
    ctx: SyncContext = services.sync
    _force_full(ctx, ids, due=utcnow() - timedelta(seconds=1))
    gc.collect()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = services.jobs.consumer(workers=QUEUE_WORKERS, periodic=False)
    consumer.start()
    for sig, handler in saved.items():  # Huey takes the signals of a process of its own
        signal.signal(sig, handler)
    try:
        t0 = time.perf_counter()
        queued = services.jobs._schedule_due()  # what the periodic task does every minute
        _expect(queued == len(ids), f"the scheduler queued {queued} of {len(ids)} due connections")
        deadline = t0 + 60 + len(ids)
        while True:
            ok, failed = _count_ok(ctx, ids)
            if ok == len(ids):
                break
            _expect(failed == 0, f"{failed} queued syncs failed")
            _expect(time.perf_counter() < deadline, f"the queue synced only {ok} of {len(ids)}")
            time.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        consumer.stop(graceful=True)


def _in_sequence(ctx: SyncContext, ids: list[int]) -> float:
    _force_full(ctx, ids)
    gc.collect()
    t0 = time.perf_counter()
    for cid in ids:
        outcome = sync_connection(ctx, cid)
        _expect(outcome.status == "ok", f"sequential sync of {cid}: {outcome.status} {outcome.error}")
    return time.perf_counter() - t0


# --- the benchmark ----------------------------------------------------------------------------


def run(events: int = 5000, connections: int = 200, rounds: int = 10) -> dict[str, Any]:
    """Run the sync benchmark; print a table and return the figures."""
    started = time.perf_counter()
    host = CalendarHost()
    with tempfile.TemporaryDirectory(prefix="calsync-bench-sync-") as tmp:
        settings = Settings(data_dir=Path(tmp), secret_key=secrets.token_urlsafe(48),
                            allow_private_networks=True)
        app = create_app(settings)
        services = app.extensions["calsync"]
        ctx: SyncContext = services.sync
        now = utcnow()
        with services.sessions.begin() as session:
            company = get_or_create_company(session, "Bench GmbH", "Europe/Berlin")
            window = sync_window(company, now)
        today = window[0].date() + timedelta(days=1)

        print(f"Generating a {events:,}-event calendar and {connections} small ones …", flush=True)
        head, tail, stats = make_calendar(events, today, seed=2026)
        version = 0

        def big_body() -> bytes:
            return head + f"X-WR-CALDESC:round {version}\r\n".encode() + tail

        big_url = host.put("/work/basic.ics", big_body(), f'"v{version}"')
        same_url = host.put("/same/basic.ics", big_body(), None)  # no validators at all
        small_urls = []
        for i in range(connections):
            h, t, _ = make_calendar(SMALL_EVENTS, today, seed=i, name=f"Staff {i}")
            small_urls.append(host.put(f"/c/{i:04d}/basic.ics", h + t, f'"s{i}"'))

        with services.sessions.begin() as session:
            company = session.get(Company, company.id)
            assert company is not None
            staff = create_staff(session, company, name="Zoë Bench", email="zoe@bench.calsync.test",
                                 timezone="Europe/Berlin")

            def connect(url: str, mode: str) -> int:
                return create_connection(
                    session, company, services.vault, staff.id,
                    ConnectionInput(kind="ics", url=url, sync_mode=mode), allow_private=True,
                ).id

            # Manual: the big ones must not be picked up by the queue's scheduler.
            big_id, same_id = connect(big_url, "manual"), connect(same_url, "manual")
            small_ids = [connect(url, "interval") for url in small_urls]

        # The baseline: what any sync has to do at the least, on the same bytes and window.
        occurrences: list[Any] = []

        def parse_and_expand() -> float:
            nonlocal occurrences
            body = host.routes["/work/basic.ics"].body
            t, occurrences = _timed(
                lambda: recurring_ical_events.of(icalendar.Calendar.from_ical(body)).between(*window)
            )
            return t

        outcomes = []

        def full_sync() -> float:
            nonlocal version
            version += 1  # new bytes and a new ETag: the content changed
            host.put("/work/basic.ics", big_body(), f'"v{version}"')
            t, outcome = _timed(lambda: sync_connection(ctx, big_id))
            _expect(outcome.status == "ok", f"full sync: {outcome.status} {outcome.error}")
            _expect(host.last_status("/work/basic.ics") == 200, "full sync did not download")
            outcomes.append(outcome)
            return t

        memory = PeakRss()
        rows: list[Row] = []
        figures: dict[str, Any] = {"events": stats["events"], "connections": connections, "rounds": rounds,
                                   "calendar_bytes": len(big_body()), "calendar": stats}
        try:
            print(f"Timing full syncs vs parse + expand ({WARMUP} warm-ups, {rounds} rounds each) …",
                  flush=True)
            with memory.phase("one full sync alone"):
                full_sync()
            with memory.phase("one parse + expand alone"):
                parse_and_expand()
            with memory.phase("full sync vs parse + expand rounds"):
                full, base = _paired(rounds, full_sync, parse_and_expand)
            busy = outcomes[-1].busy_count
            _expect(0 < busy <= len(occurrences), f"{busy} busy blocks from {len(occurrences)} occurrences")
            _expect(busy < ctx.max_occurrences, "the occurrence cap was reached: use fewer --events")
            rows.append(Row(f"full sync, {stats['events']:,} events", full, base, "≤ 1.5",
                            full / base <= 1.5))
            figures.update(full_sync_s=full, parse_expand_s=base, full_ratio=full / base,
                           occurrences=len(occurrences), busy_blocks=busy)

            print("Timing unchanged syncs (304, and same content without an ETag) …", flush=True)

            def unchanged_304() -> float:
                t, outcome = _timed(lambda: sync_connection(ctx, big_id))
                _expect(outcome.status == "unchanged", f"304 sync: {outcome.status} {outcome.error}")
                _expect(host.last_status("/work/basic.ics") == 304, "the server did not answer 304")
                return t

            sync_connection(ctx, same_id)  # its first, full sync

            def unchanged_same() -> float:
                t, outcome = _timed(lambda: sync_connection(ctx, same_id))
                _expect(outcome.status == "unchanged", f"same-content sync: {outcome.status}")
                _expect(host.last_status("/same/basic.ics") == 200, "no-ETag route")
                return t

            with memory.phase("unchanged syncs"):
                r304 = _median(rounds, unchanged_304)
                same = _median(rounds, unchanged_same)
            rows.append(Row("unchanged sync (304)", r304, full, "≤ 5%", r304 / full <= 0.05))
            rows.append(Row("unchanged sync (same bytes, no ETag)", same, full, "(info)"))
            figures.update(unchanged_304_s=r304, unchanged_304_ratio=r304 / full,
                           unchanged_same_s=same, unchanged_same_ratio=same / full)

            print(f"Timing {connections} connections through the queue ({QUEUE_WORKERS} workers) "
                  f"and in sequence, {THROUGHPUT_REPEATS} times each …", flush=True)
            with memory.phase("warm-up"):
                for cid in small_ids[:WARMUP]:
                    sync_connection(ctx, cid)
            walls: dict[str, list[float]] = {"queue": [], "sequence": []}
            with memory.phase("queue and sequential syncs"):
                for i in range(THROUGHPUT_REPEATS):  # alternating, so drift hits both alike
                    if i % 2:
                        walls["queue"].append(_through_queue(services, small_ids))
                        walls["sequence"].append(_in_sequence(ctx, small_ids))
                    else:
                        walls["sequence"].append(_in_sequence(ctx, small_ids))
                        walls["queue"].append(_through_queue(services, small_ids))
            queued, sequential = statistics.median(walls["queue"]), statistics.median(walls["sequence"])
            with services.sessions() as session:
                blocks = session.scalar(select(func.count()).select_from(BusyBlock)
                                        .where(BusyBlock.connection_id.in_(small_ids)))
            rows.append(Row(f"{connections} syncs through the queue (wall)", queued, sequential, "(info)"))
            figures.update(queue_wall_s=queued, queue_per_second=connections / queued,
                           sequential_wall_s=sequential, sequential_per_second=connections / sequential,
                           small_busy_blocks=blocks, queue_walls_s=walls["queue"],
                           sequential_walls_s=walls["sequence"])

            figures.update(peak_rss_mb=memory.peak_mb, rss_phases_mb=dict(memory.phases),
                           peak_rss_is_phase_only=memory.exact)
            rows.append(Row("peak RSS", memory.peak_mb, note="MB"))
        finally:
            host.close()
            services.engine.dispose()

    figures["total_seconds"] = time.perf_counter() - started
    info = [
        f"Calendar: {stats['events']:,} VEVENTs ({stats['series']:,} recurring series, "
        f"{stats['overrides']:,} RECURRENCE-ID overrides, {stats['exdates']:,} EXDATEs; Europe/Berlin, "
        f"America/New_York and UTC times), {figures['calendar_bytes'] / 1e6:.2f} MB over loopback HTTP; "
        f"window {window[0]:%Y-%m-%d} – {window[1]:%Y-%m-%d}: {figures['occurrences']:,} occurrences, "
        f"{figures['busy_blocks']:,} busy blocks.",
        f"Medians of {rounds} rounds after {WARMUP} warm-ups; full sync and baseline interleaved. "
        f"Baseline: icalendar.Calendar.from_ical + recurring_ical_events.of(cal).between(window), "
        "in-process.",
        f"Unchanged sync: 304 = {r304 / full:.2%} of the full sync; same bytes without an ETag "
        f"(download + SHA-256, no parse) = {same / full:.2%}.",
        f"Throughput: {connections} connections of {SMALL_EVENTS} events through the Huey queue "
        f"(SQLite, {QUEUE_WORKERS} worker threads): {connections / queued:.1f} connections/s; "
        f"in sequence in-process: {connections / sequential:.1f} connections/s "
        f"(queue/sequential wall = {queued / sequential:.2f}; medians of {THROUGHPUT_REPEATS} "
        "alternating runs, each a full sync of every connection).",
        "Peak RSS (this process: the calendar host and the queue's workers run in it), "
        + ("high-water mark restarted per phase: " if figures["peak_rss_is_phase_only"]
           else "getrusage ru_maxrss since start: ")
        + "; ".join(f"{name} {start:.0f} → {peak:.0f} MB" for name, (start, peak) in memory.phases.items())
        + ".",
        f"Whole benchmark {figures['total_seconds']:.1f} s.",
    ]
    _print_table(rows, info)
    figures["passed"] = {row.metric: row.passed for row in rows if row.passed is not None}
    return figures

