"""One wall-clock deadline per outgoing request, whatever the server does (issue 14), and the
port rule for public addresses.

The drip-headers server sends a status line and then one header byte every 0.3 s: every read
returns in time, so before the cutoff a fetch ran until the server gave up (20 s here, for
ever on the internet)."""

from __future__ import annotations

import socket
import time

import pytest

from calsync.feeds.sources.addresses import address_problem
from calsync.feeds.sources.caldav_source import GetCTag, calendar_writable, dav_client, discover_calendars
from calsync.feeds.sources.fetch import FetchError, FetchLimits, fetch_url
from tests.servers import CalendarHTTPServer
from tests.slow_servers import DripHeadersServer

# Timed within a second or two: a collection of the heap earlier tests left must not pause the
# threads mid-test (tests/conftest.py, no_gc_pauses).
pytestmark = pytest.mark.usefixtures("no_gc_pauses")


LIMITS = FetchLimits(total_seconds=1.5, read_seconds=1.0, connect_seconds=1.0, session_seconds=3.0)


def _ended_by_us(server: DripHeadersServer, within: float) -> None:
    """The server saw every connection end within `within` seconds (it would hold it 20 s)."""
    deadline = time.monotonic() + 3
    while len(server.held) < server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections >= 1
    assert server.held and max(server.held) < within, server.held


def test_fetch_url_cuts_a_server_that_drips_its_headers(drip_headers_server: DripHeadersServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_url(drip_headers_server.base_url + "/calendar.ics", allow_private=True, limits=LIMITS)
    took = time.monotonic() - started
    assert err.value.kind == "timeout", err.value
    assert "too slow" in str(err.value)
    assert took < 4.0, took
    _ended_by_us(drip_headers_server, within=4.0)


def test_caldav_discovery_cuts_a_server_that_drips_its_headers(
    drip_headers_server: DripHeadersServer,
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        discover_calendars(drip_headers_server.base_url + "/dav/", "ana", "pw", allow_private=True,
                           limits=LIMITS)
    assert err.value.kind == "timeout", err.value
    assert time.monotonic() - started < 4.0
    _ended_by_us(drip_headers_server, within=4.0)


def _sync_first_request(url: str) -> None:
    """What a sync of a CalDAV calendar asks first (its CTag), on the sync's client."""
    with dav_client(url, "ana", "pw", allow_private=True, limits=LIMITS) as (client, _resolver):
        client.calendar(url=url).get_properties([GetCTag()])


def test_the_writability_check_and_a_sync_read_cut_it_too(drip_headers_server: DripHeadersServer) -> None:
    url = drip_headers_server.base_url + "/dav/cal/"
    for attempt in (
        lambda: calendar_writable(url, "ana", "pw", allow_private=True, limits=LIMITS),
        lambda: _sync_first_request(url),
    ):
        started = time.monotonic()
        with pytest.raises(FetchError) as err:
            attempt()
        assert err.value.kind == "timeout", err.value
        assert time.monotonic() - started < 4.0


def test_a_tls_handshake_that_never_completes_ends_at_the_deadline() -> None:
    """The kernel accepts the connection (the listener's backlog) but no ServerHello ever
    comes: the TLS handshake is inside the deadline too."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        started = time.monotonic()
        with pytest.raises(FetchError) as err:
            fetch_url(f"https://127.0.0.1:{listener.getsockname()[1]}/calendar.ics", allow_private=True,
                      limits=FetchLimits(total_seconds=1.0))
        assert err.value.kind == "timeout"
        assert time.monotonic() - started < 2.5
    finally:
        listener.close()


def test_a_conversation_ends_by_its_session_deadline_however_many_requests(
    drip_headers_server: DripHeadersServer,
) -> None:
    """Each request has its own 1.5 s, but the conversation as a whole ends by its deadline:
    a library retrying another way (caldav falls back between requests) cannot extend it."""
    limits = FetchLimits(total_seconds=1.5, read_seconds=1.0, deadline=time.monotonic() + 1.0)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        discover_calendars(drip_headers_server.base_url + "/dav/", "ana", "pw", allow_private=True,
                           limits=limits)
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 2.0


def test_a_fast_server_is_not_touched_by_the_cutoff(calendar_http: CalendarHTTPServer) -> None:
    """The deadline is lifted when an answer is complete: a kept-alive connection is reused
    by the next request and the cutoff does not fire later in the session."""
    url = calendar_http.add("/ok.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    # 4 s, not less: a loaded CI machine once took over 0.5 s for one of these local fetches.
    limits = FetchLimits(total_seconds=4.0)
    for _ in range(3):
        fetched = fetch_url(url, allow_private=True, limits=limits)
        assert fetched.body.startswith(b"BEGIN:VCALENDAR")
    time.sleep(4.1)  # past every armed deadline: nothing fires into a finished fetch
    assert fetch_url(url, allow_private=True, limits=limits).status == 200


# --- ports -------------------------------------------------------------------------------------

def _loopback_is_public(ip: str) -> str | None:
    """Treat 127.0.0.1 as a public address, so the port rule (which private networks lift) is
    what decides, and nothing ever leaves the machine."""
    return None if ip == "127.0.0.1" else address_problem(ip, False)


@pytest.mark.parametrize("port", [6379, 21, 8080])
def test_public_addresses_are_only_fetched_on_80_and_443(canary: CalendarHTTPServer, port: int) -> None:
    """Decided before connecting: a listener on the port (where the port is free to take;
    6379 is this machine's Redis) hears nothing."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        listener.settimeout(0.3)
    except OSError:
        listener.close()
        listener = None  # type: ignore[assignment]
    try:
        with pytest.raises(FetchError) as err:
            fetch_url(f"http://127.0.0.1:{port}/calendar.ics", policy=_loopback_is_public)
        assert err.value.kind == "blocked"
        assert f"port {port}" in str(err.value) and "80, 443" in str(err.value)
        if listener is not None:
            with pytest.raises(TimeoutError):
                listener.accept()  # nobody connected
    finally:
        if listener is not None:
            listener.close()


def test_the_operator_can_allow_more_ports(canary: CalendarHTTPServer) -> None:
    port = canary.server.server_address[1]
    url = f"http://127.0.0.1:{port}/calendar.ics"
    with pytest.raises(FetchError) as err:
        fetch_url(url, policy=_loopback_is_public)
    assert err.value.kind == "blocked" and canary.hits == {}
    allowed = FetchLimits(ports=frozenset({80, 443, port}))
    assert fetch_url(url, policy=_loopback_is_public, limits=allowed).body.startswith(b"BEGIN:VCALENDAR")


def test_the_port_rule_holds_for_caldav_too(canary: CalendarHTTPServer) -> None:
    """Discovery and the writability check go through the same resolver, which judges the port
    before it resolves the name (so the refusal names the port, not the loopback address)."""
    port = canary.server.server_address[1]
    for attempt in (discover_calendars, calendar_writable):
        with pytest.raises(FetchError) as err:
            attempt(f"http://127.0.0.1:{port}/dav/", "ana", "pw", allow_private=False)
        assert err.value.kind == "blocked" and f"port {port}" in str(err.value)
    assert canary.hits == {}
