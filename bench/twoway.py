"""Two-way sync benchmark (`calsync bench twoway`): issue 4's "Benchmark" section.

A staff member's linked calendar of `appointments` bookings lives in Radicale, served
in-process by waitress on loopback (htpasswd auth, owner_only rights), as tests/servers.py runs
it. Every appointment is booked through feeds.booking.book_appointment (which queues its push),
and the bookings reach the calendar through `feeds.sync.sync_connection`, the function the
queue's jobs call. Then, each round:

1. the staff member drags one random event in their calendar app: a GET of the event and a
   PUT of it with DTSTART/DTEND changed (the caldav library, as tests/integration/test_twoway.py does it);
2. ONE `sync_connection` pass is timed: it asks for the changes since its sync token
   (RFC 6578), loads the one moved event, reschedules the appointment (SEQUENCE+1, history,
   the customer's email into the outbox) and pushes the refreshed copy back;
3. checked: exactly that appointment moved, to the calendar's time, SEQUENCE+1, one email;
4. the next scheduled sync runs (outside the ratio, its own row): it finds only our own write,
   by its ETag, and loads nothing — so every timed pass starts from the steady state.

The baseline, measured in the same run against the same Radicale and interleaved with the
rounds: a full listing of the calendar with the caldav library,
`calendar.objects_by_sync_token(load_objects=False)` without a token (every href with its ETag,
the least any client must do to learn what changed without a token); and, for information,
`calendar.events()` (list and load every event).
"""

from __future__ import annotations

import logging
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from caldav.collection import Calendar
from caldav.davclient import DAVClient
from sqlalchemy import func, select

from calsync.bench.feeds import (
    ALL_DAY,
    WARMUP,
    PeakRss,
    Row,
    _expect,
    _paired,
    _print_table,
)
from calsync.bench.served_wsgi import ServedWSGI
from calsync.bench.sync import _timed
from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import SyncContext, SyncOutcome, sync_connection, sync_window
from calsync.feeds.company_settings import update_company_settings
from calsync.feeds.demo import CUSTOMERS, NOTES, SERVICES
from calsync.feeds.scheduling.booking import CustomerDetails, book_appointment
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Appointment, Company, Connection, LinkedItem, OutboxEmail, utcnow
from calsync.web import create_app

USER, PASSWORD = "zoe", "bench-app-password"
BATCH = 500
GRID = timedelta(minutes=5)
DURATIONS = (30, 45, 60)  # minutes, capped so that every event can move within its own slot


# --- CalDAV servers on loopback ---------------------------------------------------------------------


@dataclass
class Request:
    method: str
    status: int
    bytes: int
    seconds: float  # inside the CalDAV server (server time)


@dataclass
class Recorder:
    """WSGI middleware: what the server was asked and how much it answered."""

    app: Any
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status: list[int] = []

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(int(line.split()[0]))
            return start_response(line, headers, exc_info)

        t0 = time.perf_counter()
        result = self.app(environ, start)
        try:
            body = list(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        with self.lock:
            self.requests.append(Request(environ["REQUEST_METHOD"], status[0] if status else 0,
                                         sum(len(chunk) for chunk in body), time.perf_counter() - t0))
        return body

    def mark(self) -> int:
        with self.lock:
            return len(self.requests)

    def since(self, mark: int) -> list[Request]:
        with self.lock:
            return self.requests[mark:]


class CalDAVServer:
    """A CalDAV server app under waitress on loopback, every request recorded."""

    name = "?"
    version = "?"
    home = ""  # path of the user's calendar home
    how_sync_works = ""  # where an incremental pass's server time goes (for the printed notes)

    def _serve(self, app: Any) -> None:
        self.recorder = Recorder(app)
        self.served = ServedWSGI(self.recorder, ident=f"{self.name.lower()}-bench",
                                 name=f"bench-{self.name.lower()}")
        self.base_url = self.served.url
        self.calendar_url = f"{self.base_url}{self.home}work/"

    def client(self) -> DAVClient:
        return DAVClient(self.base_url + "/", username=USER, password=PASSWORD,
                                enable_rfc6764=False)

    def make_calendar(self) -> Calendar:
        calendar = self.client().principal().make_calendar(name="Work", cal_id="work")
        self.calendar_url = str(calendar.url)
        return calendar

    def close(self) -> None:
        self.served.close()


class RadicaleServer(CalDAVServer):
    """Radicale (filesystem storage, htpasswd plain auth, owner_only rights)."""

    name = "Radicale"
    home = f"/{USER}/"
    how_sync_works = ("Radicale's sync-collection REPORT rebuilds the href → ETag state of every "
                      "item to diff it with the token's, so even an incremental REPORT reads the "
                      "whole collection on the server")

    def __init__(self, root: Path) -> None:
        import radicale
        import radicale.config

        # Radicale reports creating its storage folders as warnings; nothing to see here.
        logging.getLogger("radicale").setLevel(logging.ERROR)
        users = root / "radicale-users"
        users.write_text(f"{USER}:{PASSWORD}\n")
        config = radicale.config.load([])
        config.update({
            "auth": {"type": "htpasswd", "htpasswd_filename": str(users), "htpasswd_encryption": "plain"},
            "rights": {"type": "owner_only"},
            "storage": {"filesystem_folder": str(root / "radicale-data")},
        }, "bench", privileged=True)
        self.version = radicale.VERSION
        self._serve(radicale.Application(config))


class XandikosServer(CalDAVServer):
    """Xandikos (a git repository per calendar, single user), as tests/servers.py runs it."""

    name = "Xandikos"
    home = f"/{USER}/calendars/"
    how_sync_works = ("Xandikos keeps a calendar in a git repository and its sync token names a "
                      "tree, so an incremental REPORT diffs two trees: its cost follows the changes")

    def __init__(self, root: Path) -> None:
        from importlib.metadata import version

        from xandikos.web import SingleUserFilesystemBackend, XandikosApp

        logging.getLogger("xandikos").setLevel(logging.ERROR)
        backend = SingleUserFilesystemBackend(str(root / "xandikos-data"), autocreate=True)
        backend.create_principal(f"/{USER}/", create_defaults=True)
        self.version = version("xandikos")
        self._serve(XandikosApp(backend, f"/{USER}/"))


SERVERS: dict[str, Callable[[Path], CalDAVServer]] = {
    "radicale": RadicaleServer, "xandikos": XandikosServer,
}


# --- the company and its bookings -------------------------------------------------------------


@dataclass
class Slot:
    """An appointment's own stretch of time: it is booked, and moved, only inside it, so no
    move can ever collide with another appointment."""

    start: datetime
    minutes: int  # length of the slot
    duration: int  # length of the appointment
    offset: int = 0  # where in the slot it is now, in minutes

    def when(self, offset: int) -> tuple[datetime, datetime]:
        begin = self.start + timedelta(minutes=offset)
        return begin, begin + timedelta(minutes=self.duration)

    def other_offset(self, rng: random.Random) -> int:
        step = int(GRID.total_seconds() // 60)
        choices = [m for m in range(0, self.minutes - self.duration + 1, step) if m != self.offset]
        return rng.choice(choices)


def _slots(count: int, first: datetime, last: datetime, rng: random.Random) -> list[Slot]:
    """`count` back-to-back slots of equal length over [first, last), on a 5-minute grid; an
    appointment takes at most half of its slot, so it always has somewhere to move to."""
    step = int(GRID.total_seconds() // 60)
    minutes = int((last - first) / count / GRID) * step
    _expect(minutes >= 2 * step, f"{count} appointments do not fit in the sync window")
    first = first.replace(second=0, microsecond=0) + timedelta(minutes=step - first.minute % step)
    out = []
    for k in range(count):
        slot = Slot(first + k * timedelta(minutes=minutes), minutes,
                    min(rng.choice(DURATIONS), minutes // 2 // step * step))
        slot.offset = rng.choice(range(0, minutes - slot.duration + 1, step))
        out.append(slot)
    return out


@dataclass
class Setup:
    company_id: int
    staff_id: int
    connection_id: int
    window: tuple[datetime, datetime]
    slots: dict[int, Slot]  # appointment id → its slot
    booking_seconds: float
    first_sync_seconds: float
    first_syncs: int


def _populate(services: Any, server: CalDAVServer, appointments: int, rng: random.Random) -> Setup:
    with services.sessions.begin() as session:
        company = get_or_create_company(session, "Praxis Sommer & Söhne", "Europe/Berlin")
        update_company_settings(session, company, {"bidirectional_sync": True})
        staff = create_staff(session, company, name="Zoë Bench", email="zoe@bench.calsync.test",
                             timezone="Europe/Berlin", working_hours=ALL_DAY)
        conn = create_connection(
            session, company, services.vault, staff.id,
            ConnectionInput(kind="caldav", url=server.calendar_url, name="Work", username=USER,
                            password=PASSWORD, roles=("linked",), sync_mode="manual"),
            allow_private=True,
        )
        ids = (company.id, staff.id, conn.id)
        window = sync_window(company, utcnow())
    company_id, staff_id, connection_id = ids
    # Until its first sync the connection's busy time is unknown, and booking is refused.
    ctx: SyncContext = services.sync
    first = sync_connection(ctx, connection_id)
    _expect(first.status == "ok", f"first sync of the empty calendar: {first.status} {first.error}")
    # A day inside both window edges, so a day's rollover during the run changes nothing.
    slots = _slots(appointments, window[0] + timedelta(days=2), window[1] - timedelta(days=2), rng)
    customers = [
        CustomerDetails(name=CUSTOMERS[i % len(CUSTOMERS)], email=f"customer{i}@example.com",
                        phone=f"+49 30 {1000000 + i * 7919}")
        for i in range(max(50, appointments // 20))
    ]
    order = list(range(appointments))
    rng.shuffle(order)  # booked in random order, like real traffic
    by_id: dict[int, Slot] = {}
    t0 = time.perf_counter()
    for chunk in range(0, appointments, BATCH):
        with services.sessions.begin() as session:
            company = session.get(Company, company_id)
            assert company is not None
            for k in order[chunk : chunk + BATCH]:
                start, end = slots[k].when(slots[k].offset)
                appt = book_appointment(
                    session, company, staff_id=staff_id, start=start, end=end,
                    service=rng.choice(SERVICES)[0], customer=rng.choice(customers),
                    location=rng.choice([None, "Praxis Mitte, Torstraße 1, 10119 Berlin", "Room 2"]),
                    notes=rng.choice(NOTES),
                )
                by_id[appt.id] = slots[k]
    booking_seconds = time.perf_counter() - t0

    # Push everything (each sync writes at most 200 copies), then one more sync to store a
    # sync token: after a sync that created items it is cleared and the next one lists the
    # calendar by ETag.
    t0 = time.perf_counter()
    syncs = 0
    while True:
        outcome = sync_connection(ctx, connection_id)
        syncs += 1
        _expect(outcome.status == "ok", f"initial sync: {outcome.status} {outcome.error}")
        if _pending(services, connection_id) == 0 and _token(services, connection_id):
            break
        _expect(syncs <= appointments // 100 + 5, "the initial syncs do not converge")
    outcome = sync_connection(ctx, connection_id)
    _expect(outcome.status == "unchanged", f"a sync after the setup found work: {outcome.status}")
    return Setup(company_id, staff_id, connection_id, window, by_id, booking_seconds,
                 time.perf_counter() - t0, syncs)


def _pending(services: Any, connection_id: int) -> int:
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(LinkedItem).where(
            LinkedItem.connection_id == connection_id, LinkedItem.state != "synced")) or 0


def _token(services: Any, connection_id: int) -> bool:
    with services.sessions() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        return bool(conn.sync_token)


# --- the benchmark ----------------------------------------------------------------------------


def _summary(requests: list[Request]) -> str:
    return ", ".join(f"{r.method} {r.status} ({r.bytes:,} B)" for r in requests)


def _server_ms(calls: list[list[Request]]) -> tuple[float, str]:
    """Median time spent inside the server per call, in ms, and its split by request method."""
    per_method: dict[str, list[float]] = {}
    for call in calls:
        split: dict[str, float] = {}
        for r in call:
            split[r.method] = split.get(r.method, 0.0) + r.seconds
        for method in {r.method for c in calls for r in c}:
            per_method.setdefault(method, []).append(split.get(method, 0.0))
    total = statistics.median(sum(r.seconds for r in call) for call in calls) * 1000
    order = [r.method for r in calls[-1]]
    parts = [f"{m} {statistics.median(per_method[m]) * 1000:,.0f}" for m in dict.fromkeys(order)]
    return total, " + ".join(parts)


def run(appointments: int = 2000, rounds: int = 10, server_name: str = "radicale") -> dict[str, Any]:
    """Run the two-way sync benchmark against one CalDAV server; print a table, return the figures."""
    started = time.perf_counter()
    rng = random.Random(2026)
    with tempfile.TemporaryDirectory(prefix="calsync-bench-twoway-") as tmp:
        root = Path(tmp)
        server = SERVERS[server_name](root)
        settings = Settings(data_dir=root / "calsync", secret_key=secrets.token_urlsafe(48),
                            allow_private_networks=True)
        app = create_app(settings)
        services = app.extensions["calsync"]
        ctx: SyncContext = services.sync
        try:
            server.make_calendar()
            print(f"Setting up: {appointments:,} appointments booked through feeds.booking and "
                  f"pushed into {server.name} {server.version} …", flush=True)
            setup = _populate(services, server, appointments, rng)
            print(f"  booked in {setup.booking_seconds:.1f} s; pushed by {setup.first_syncs} syncs "
                  f"in {setup.first_sync_seconds:.1f} s", flush=True)
            figures = _measure(services, ctx, server, setup, appointments, rounds, rng)
        finally:
            server.close()
            services.engine.dispose()
    figures["total_seconds"] = time.perf_counter() - started
    figures["server"] = f"{server_name} {server.version}"
    info = figures.pop("_info")
    info.append(f"Setup {figures['setup_seconds']:.1f} s; whole benchmark {figures['total_seconds']:.1f} s.")
    _print_table(figures.pop("_rows"), info)
    return figures


def _measure(
    services: Any, ctx: SyncContext, server: CalDAVServer, setup: Setup, appointments: int,
    rounds: int, rng: random.Random,
) -> dict[str, Any]:
    setup_seconds = setup.booking_seconds + setup.first_sync_seconds
    cid = setup.connection_id
    # A calendar app's connection, and the baseline's: one persistent client each (keeping
    # its connection open only favours the baseline; every sync pass opens its own).
    app_calendar = server.client().calendar(url=server.calendar_url)
    base_calendar = server.client().calendar(url=server.calendar_url)
    with services.sessions() as session:
        hrefs = dict(session.execute(select(LinkedItem.appointment_id, LinkedItem.href)
                                     .where(LinkedItem.connection_id == cid)).all())
    movable = sorted(setup.slots)
    quiet: list[float] = []
    timed_requests: list[list[Request]] = []
    quiet_requests: list[list[Request]] = []
    listing_calls: list[list[Request]] = []
    load_calls: list[list[Request]] = []

    def move_in_calendar() -> tuple[int, datetime, datetime, int]:
        """What a calendar app does when the staff member drags an event: GET it, PUT it back
        with new times."""
        appt_id = rng.choice(movable)
        slot = setup.slots[appt_id]
        offset = slot.other_offset(rng)
        start, end = slot.when(offset)
        with services.sessions() as session:
            appt = session.get(Appointment, appt_id)
            assert appt is not None
            sequence = appt.sequence
        event = app_calendar.event_by_url(hrefs[appt_id])
        component = event.icalendar_component
        # New properties, not new values in the old ones: those keep their TZID parameter,
        # and icalendar then writes "DTSTART;TZID=Europe/Berlin:...Z", which no calendar app
        # sends and which reads as Berlin time, an hour off in winter.
        for name, value in (("DTSTART", start), ("DTEND", end)):
            del component[name]
            component.add(name, value)
        event.save()
        slot.offset = offset
        return appt_id, start, end, sequence

    def emails_of(appt_id: int) -> list[tuple[str, int | None]]:
        with services.sessions() as session:
            return [(kind, seq) for kind, seq in session.execute(
                select(OutboxEmail.kind, OutboxEmail.sequence)
                .where(OutboxEmail.appointment_id == appt_id).order_by(OutboxEmail.id)
            ).all()]

    def one_round() -> float:
        appt_id, start, end, sequence = move_in_calendar()
        _expect(_token(services, cid), "no sync token before the timed pass: it would list everything")
        emails_before = emails_of(appt_id)
        mark = server.recorder.mark()
        seconds, outcome = _timed(lambda: sync_connection(ctx, cid))
        timed_requests.append(server.recorder.since(mark))
        _check(outcome, "timed pass")
        with services.sessions() as session:
            appt = session.get(Appointment, appt_id)
            assert appt is not None
            _expect((appt.start_at, appt.end_at) == (start, end),
                    f"appointment {appt_id} is at {appt.start_at}, the calendar says {start}")
            _expect(appt.sequence == sequence + 1, f"SEQUENCE {appt.sequence}, expected {sequence + 1}")
            item = session.scalar(select(LinkedItem).where(LinkedItem.appointment_id == appt_id))
            assert item is not None
            _expect(item.state == "synced" and item.pushed_sequence == sequence + 1,
                    f"the refreshed copy was not pushed ({item.state}, {item.pushed_sequence})")
            moved = session.scalar(select(func.count()).select_from(Appointment).where(
                Appointment.staff_id == setup.staff_id, Appointment.sequence > 0)) or 0
        _expect(emails_of(appt_id) == [*emails_before, ("rescheduled", sequence + 1)],
                "not exactly one reschedule email in the outbox")
        _expect(moved == len({*moved_ids, appt_id}), f"{moved} appointments moved, expected one more")
        moved_ids.add(appt_id)
        # The refreshed copy was an update, so the pass kept its sync token (feeds.calendars.
        # push_pass.finish_pushes): the next round starts from it, as a real staff member's next move would.
        _expect(_token(services, cid), "the pass dropped its sync token")
        # The next scheduled sync, before the staff member's next move: it sees our own write
        # in the REPORT, knows its ETag, and loads nothing (shown as its own row).
        quiet_pass()
        return seconds

    def quiet_pass() -> float:
        """A sync when nothing changed: the floor of any pass, on this server."""
        mark = server.recorder.mark()
        seconds, outcome = _timed(lambda: sync_connection(ctx, cid))
        quiet_requests.append(server.recorder.since(mark))
        _expect(outcome.status in ("ok", "unchanged"), f"quiet pass: {outcome.status} {outcome.error}")
        quiet.append(seconds)
        return seconds

    def full_listing() -> float:
        def listing() -> dict[str, str | None]:
            found = base_calendar.objects_by_sync_token(load_objects=False)
            return {str(obj.url): (obj.props or {}).get("{DAV:}getetag") for obj in found}

        mark = server.recorder.mark()
        seconds, etags = _timed(listing)
        listing_calls.append(server.recorder.since(mark))
        _expect(len(etags) == appointments and all(etags.values()), f"listing of {len(etags)} items")
        return seconds

    loads: list[float] = []

    def list_and_load() -> float:
        mark = server.recorder.mark()
        seconds, events = _timed(lambda: [e.data for e in base_calendar.events()])
        load_calls.append(server.recorder.since(mark))
        _expect(len(events) == appointments and all(events), f"events() returned {len(events)}")
        loads.append(seconds)
        return seconds

    def baseline() -> float:
        # events() is timed on its own, alternating before and after the listing.
        if len(loads) % 2:
            seconds = full_listing()
            list_and_load()
        else:
            list_and_load()
            seconds = full_listing()
        return seconds

    moved_ids: set[int] = set()
    memory = PeakRss()
    print(f"Timing one-move sync passes vs full listings ({WARMUP} warm-ups, {rounds} rounds each) …",
          flush=True)
    with memory.phase("sync passes and listings"):
        ours, base = _paired(rounds, one_round, baseline)
    load = statistics.median(loads[-rounds:])
    quiet_s = statistics.median(quiet[-rounds:])

    rows = [
        Row("sync pass finding 1 moved event", ours, base, "≤ 20%", ours / base <= 0.20),
        Row("  same pass vs events() (list + load all)", ours, load, "(info)"),
        Row("next sync, nothing new (our write seen by ETag)", quiet_s, base, "(info)"),
        Row("peak RSS", memory.peak_mb, note="MB"),
    ]
    last = timed_requests[-1]
    pass_server, pass_split = _server_ms(timed_requests[-rounds:])
    listing_server, listing_split = _server_ms(listing_calls[-rounds:])
    figures: dict[str, Any] = {
        "appointments": appointments, "rounds": rounds, "sync_pass_s": ours, "full_listing_s": base,
        "ratio": ours / base, "events_load_all_s": load, "quiet_sync_s": quiet_s,
        "quiet_ratio": quiet_s / base, "timed_requests": [r.__dict__ for r in last],
        "peak_rss_mb": memory.peak_mb, "rss_phases_mb": dict(memory.phases),
        "setup_seconds": setup_seconds, "moves": len(moved_ids),
        "pass_server_ms": pass_server, "listing_server_ms": listing_server,
        "passed": {rows[0].metric: rows[0].passed},
    }
    figures["_rows"] = rows
    figures["_info"] = [
        f"A linked calendar of {appointments:,} bookings in {server.name} {server.version} (in-process, "
        "waitress on loopback), two-way sync on; each "
        f"appointment booked through feeds.booking in its own slot of the {setup.window[0]:%Y-%m-%d} – "
        f"{setup.window[1]:%Y-%m-%d} sync window.",
        "Each round a random event is moved within its slot as a calendar app does it (GET, PUT "
        "with new DTSTART/DTEND); then ONE sync_connection pass is timed. Every round checked: that "
        "appointment, and only it, moved to the calendar's time with SEQUENCE+1, one reschedule "
        "email in the outbox, the refreshed copy pushed.",
        f"A timed pass's requests to {server.name}: {_summary(last)}.",
        f"Where the time goes (medians, ms spent inside {server.name}): a timed pass {pass_server:,.0f} of "
        f"{ours * 1000:,.0f} ({pass_split}); a full listing {listing_server:,.0f} of {base * 1000:,.0f} "
        f"({listing_split}). {server.how_sync_works}; with a token the pass skips the CTag "
        "PROPFIND (on Radicale it reads the whole collection a second time).",
        "A pass that only updated our copies keeps its sync token (push_pass.finish_pushes) and "
        "stores the ETags of its writes, so the next sync sees them in the REPORT and loads "
        f"nothing ({_summary(quiet_requests[-1])}); it runs after every round, outside the ratio, "
        "and is the 'next sync' row: the floor of any pass on this server.",
        f"Baseline: the caldav library on one persistent connection: "
        f"calendar.objects_by_sync_token(load_objects=False) without a token = every href with its "
        f"ETag ({_summary(listing_calls[-1])}); events() = list + load all ({_summary(load_calls[-1])}). "
        f"Medians of {rounds} rounds after {WARMUP} warm-ups, interleaved with the sync passes.",
        f"Peak RSS (this process: {server.name} and waitress run in it), "
        + ("high-water mark restarted per phase: " if memory.exact else "getrusage ru_maxrss since start: ")
        + "; ".join(f"{name} {start:.0f} → {peak:.0f} MB" for name, (start, peak) in memory.phases.items())
        + ".",
    ]
    return figures


def _check(outcome: SyncOutcome, what: str) -> None:
    _expect(outcome.status == "ok", f"{what}: {outcome.status} {outcome.error}")
