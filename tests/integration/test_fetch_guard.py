"""Fetching user-supplied URLs (docs/protocol.md): the address decision, the canary that must hear
nothing, redirects re-checked hop by hop, and the caps on size and time."""

from __future__ import annotations

import gzip
import socket
import time

import pytest

from calsync.feeds.errors import ValidationError
from calsync.feeds.sources.addresses import address_problem, normalise_calendar_url, redact_url
from calsync.feeds.sources.fetch import FetchError, FetchLimits, fetch_url
from tests.servers import CalendarHTTPServer

# Timed within a second or two: a collection of the heap earlier tests left must not pause the
# threads mid-test (tests/conftest.py, no_gc_pauses).
pytestmark = pytest.mark.usefixtures("no_gc_pauses")


ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"

# The address decision alone: no connection is made for any of these.
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("100.64.0.1", "private"),  # CGNAT
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.1.1.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
    ("198.18.0.1", "private"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_forbidden_addresses_are_refused(address: str, why: str) -> None:
    problem = address_problem(address, allow_private=False)
    assert problem is not None and why.split("-")[0] in problem.replace("this server itself", "loopback")


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(address, allow_private=False) is None


def test_private_networks_setting_allows_loopback_but_never_unspecified() -> None:
    assert address_problem("127.0.0.1", allow_private=True) is None
    assert address_problem("10.0.0.1", allow_private=True) is None
    assert address_problem("0.0.0.0", allow_private=True) is not None


@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1", "localhost", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1",
     "[::ffff:127.0.0.1]", "017700000001"],
)
def test_every_spelling_of_loopback_is_refused_and_the_canary_hears_nothing(
    canary: CalendarHTTPServer, spelling: str
) -> None:
    port = canary.server.server_address[1]
    with pytest.raises(FetchError) as err:
        fetch_url(f"http://{spelling}:{port}/calendar.ics")
    assert err.value.kind in ("blocked", "dns")
    assert canary.hits == {}


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.ics",
                                 "http://[fd00::1]/x.ics", "http://100.64.1.1/x.ics"])
def test_private_literals_are_refused_before_any_connection(url: str) -> None:
    # The autouse loopback guard would turn any connection attempt into a failure.
    with pytest.raises(FetchError) as err:
        fetch_url(url)
    assert err.value.kind == "blocked"


def test_a_redirect_to_a_forbidden_host_is_refused(calendar_http: CalendarHTTPServer) -> None:
    """The first hop (127.0.0.1, allowed by this test's policy) redirects to 127.0.0.2, which the
    policy forbids; the canary listening there receives nothing."""
    hits: list[str] = []
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.listen(1)
    sock.settimeout(0.5)
    port = sock.getsockname()[1]
    start = calendar_http.add("/start.ics", status=302,
                              headers={"Location": f"http://2130706434:{port}/steal"}, etag=False)
    policy = lambda ip: None if ip == "127.0.0.1" else address_problem(ip, False)  # noqa: E731
    with pytest.raises(FetchError) as err:
        fetch_url(start, policy=policy)
    assert err.value.kind == "blocked"
    try:
        conn, _ = sock.accept()
        hits.append("connected")
        conn.close()
    except TimeoutError:
        pass
    sock.close()
    assert hits == []


def test_redirects_are_followed_and_capped(calendar_http: CalendarHTTPServer) -> None:
    target = calendar_http.add("/final.ics", ICS)
    calendar_http.add("/a.ics", status=301, headers={"Location": "/b.ics"}, etag=False)
    calendar_http.add("/b.ics", status=307, headers={"Location": target}, etag=False)
    fetched = fetch_url(calendar_http.base_url + "/a.ics", allow_private=True)
    assert fetched.body == ICS and fetched.url == target
    calendar_http.add("/loop.ics", status=302, headers={"Location": "/loop.ics"}, etag=False)
    with pytest.raises(FetchError) as err:
        fetch_url(calendar_http.base_url + "/loop.ics", allow_private=True)
    assert err.value.kind == "redirects"
    assert calendar_http.hits["/loop.ics"] == 6  # the first request and five redirects


def test_conditional_get_returns_not_modified(calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/c.ics", ICS)
    first = fetch_url(url, allow_private=True)
    again = fetch_url(url, etag=first.etag, allow_private=True)
    assert again.not_modified and again.body == b""


def test_gzip_is_decoded_and_the_cap_counts_decoded_bytes(calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/z.ics", ICS, gzip=True)
    assert fetch_url(url, allow_private=True).body == ICS
    bomb = calendar_http.add("/bomb.ics", b"X" * (3 * 1024 * 1024), gzip=True)
    assert len(gzip.compress(b"X" * (3 * 1024 * 1024))) < 20_000
    with pytest.raises(FetchError) as err:
        fetch_url(bomb, allow_private=True, limits=FetchLimits(max_bytes=1024 * 1024))
    assert err.value.kind == "too_large"


def test_a_20_mb_body_stops_at_the_cap(calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/big.ics", b"BEGIN:VCALENDAR\r\n" + b"X" * (20 * 1024 * 1024))
    with pytest.raises(FetchError) as err:
        fetch_url(url, allow_private=True)
    assert err.value.kind == "too_large"
    assert "10 MB" in str(err.value)


def test_a_dripping_server_stops_at_the_deadline(calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/slow.ics", ICS * 20, drip_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_url(url, allow_private=True, limits=FetchLimits(total_seconds=1.5, read_seconds=1.0))
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (403, "auth"), (404, "not_found"),
                                              (410, "not_found"), (500, "http"), (503, "http")])
def test_http_errors_become_sentences(calendar_http: CalendarHTTPServer, status: int, kind: str) -> None:
    url = calendar_http.add("/e.ics", b"secret body text", status=status, etag=False)
    with pytest.raises(FetchError) as err:
        fetch_url(url, allow_private=True)
    assert err.value.kind == kind
    assert "secret body text" not in str(err.value)
    assert str(err.value).endswith(".") or str(err.value).endswith(")")


def test_unknown_host_and_closed_port() -> None:
    with pytest.raises(FetchError) as err:
        fetch_url("http://no-such-host.invalid/c.ics")
    assert err.value.kind == "dns"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(FetchError) as err:
        fetch_url(f"http://127.0.0.1:{port}/c.ics", allow_private=True)
    assert err.value.kind == "connection"


@pytest.mark.parametrize("url", ["ftp://example.com/c.ics", "file:///etc/passwd", "gopher://x/",
                                 "javascript:alert(1)", "", "https://", "https://user:pw@example.com/c.ics",
                                 "https://example.com:99999/c.ics", "https://exa mple.com/c.ics"])
def test_bad_urls_are_refused_with_a_sentence(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalise_calendar_url(url)
    assert err.value.field == "url"


def test_webcal_becomes_https() -> None:
    assert normalise_calendar_url("webcal://p01-calendars.icloud.com/published/2/abc") == \
        "https://p01-calendars.icloud.com/published/2/abc"


def test_redacted_urls_hide_secrets() -> None:
    secret = "private-0123456789abcdef0123456789abcdef"
    shown = redact_url(f"https://calendar.google.com/calendar/ical/me%40gmail.com/{secret}/basic.ics?x=1")
    assert secret not in shown and "gmail" not in shown and "calendar.google.com" in shown
