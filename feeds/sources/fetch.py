"""Fetch a user-supplied URL under the rules of docs/protocol.md ("Fetching user-supplied URLs").

- Every address a host name resolves to is checked (addresses.address_problem) inside the
  resolver that the connection itself uses, so the checked address is the one connected to:
  no second lookup, no DNS-rebinding window.
- Redirects are followed by hand, at most `max_redirects`, each hop checked again.
- The body is capped in bytes *after* decompression (a gzip bomb stops at the cap), and the
  whole fetch has a wall-clock deadline covering connect, TLS, headers and body, enforced by
  shutting its sockets down (cutoff.py): a server dripping header bytes stops at it too.
- A stored ETag / Last-Modified makes the request conditional: an unchanged calendar costs a
  304, not a download and a parse.

niquests is used rather than requests because it accepts a resolver object; it is already a
dependency of caldav 3, which uses the same stack for CalDAV.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin

import niquests

from calsync.feeds.errors import CalsyncError, ValidationError
from calsync.feeds.sources.addresses import normalise_calendar_url
from calsync.feeds.sources.client_logs import hide_paths_in_client_logs
from calsync.feeds.sources.resolver import AddressPolicy, BlockedAddressError, GuardedResolver

__all__ = ["AddressPolicy", "BlockedAddressError", "FetchError", "FetchLimits", "Fetched",
           "GuardedResolver", "GuardedSession", "fetch_url"]

USER_AGENT = "calsync/1.0 (calendar subscription; +https://github.com/calsync)"


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 10 * 1024 * 1024  # one answer, after decompression
    total_seconds: float = 30.0  # one request, answer included
    connect_seconds: float = 10.0
    read_seconds: float = 15.0
    max_redirects: int = 5
    # A CalDAV conversation (discovery, or a sync's reading or writing) is many requests: each
    # has the limits above, and together they end by `deadline` (a time.monotonic() value; a
    # sync sets it inside its lease) or else within session_seconds, and read at most
    # session_bytes. Without these, a server answering each of 20,000 items slowly, or every
    # sync-collection page as "truncated", would hold a worker for hours.
    session_seconds: float = 60.0
    deadline: float | None = None
    # Ports a public address may be reached on (CALSYNC_FETCH_ALLOWED_PORTS adds to 80 and 443):
    # a calendar address must not turn us into a client of someone's Redis or FTP server. With
    # private networks allowed (tests, a local demo) any port is.
    ports: frozenset[int] = frozenset({80, 443})

    @property
    def session_bytes(self) -> int:
        return 5 * self.max_bytes


# "Sync now", CalDAV discovery and the writability check run while a person waits on a web
# thread: they get this long at most, whatever the operator allows background syncs.
INTERACTIVE_SECONDS = 10.0


def interactive(limits: FetchLimits) -> FetchLimits:
    """The operator's limits (sizes, ports), with the time cut to what a web request waits."""
    return replace(limits, total_seconds=min(limits.total_seconds, INTERACTIVE_SECONDS),
                   deadline=time.monotonic() + INTERACTIVE_SECONDS)


@dataclass
class Fetched:
    url: str  # after redirects
    not_modified: bool
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class FetchError(CalsyncError):
    """A fetch failed; the message is a sentence for a non-technical admin, `kind` a short code
    for logs and the API. The message never contains the fetched body or the URL's secrets."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _session(resolver: GuardedResolver, limits: FetchLimits) -> niquests.Session:
    hide_paths_in_client_logs()
    session = niquests.Session(
        resolver=resolver,
        retries=0,
        disable_http3=True,  # no QUIC probing: one protocol path to reason about
        revocation_configuration=None,  # OCSP would be a request to a third host
    )
    # Proxy variables from the environment would send the request around our checks.
    session.trust_env = False
    session.headers["User-Agent"] = USER_AGENT
    return session


# A document type declaration can only stand in the prolog, before the first element.
_DOCTYPE = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:(?:<!--.*?-->|<\?[^>]*\?>)\s*)*<!DOCTYPE",
    re.S | re.I,
)
_RESPONSE_END = re.compile(rb"</(?:[\w.-]+:)?response\s*>")


class GuardedSession(niquests.Session):
    """A session for a conversation with one server (CalDAV), under the caps of FetchLimits.

    Every answer's body is read through a guard put on the connection's response object, so
    the caps hold whoever reads it (caldav, niquests following a redirect, the Digest
    authentication hook): past max_bytes, past the conversation's byte budget, or past the
    deadline, reading stops with a FetchError. An answer that declares a DTD is refused
    (docs/protocol.md: server XML is parsed without DTDs; caldav's parser already resolves no
    entities and uses no network, so this is the second lock on that door).

    The first cap hit is kept in `failure`, and every later request fails with it at once: a
    library that catches an error and tries another way (caldav falls back from
    sync-collection to a full listing) cannot talk its way past a cap.
    """

    def __init__(self, resolver: GuardedResolver, limits: FetchLimits) -> None:
        hide_paths_in_client_logs()
        super().__init__(resolver=resolver, retries=0, disable_http3=True,
                         revocation_configuration=None)
        self.trust_env = False  # proxy variables would send requests around the resolver
        self.headers["User-Agent"] = USER_AGENT
        self.max_redirects = limits.max_redirects  # niquests follows them, each hop resolved by us
        self.limits = limits
        self.deadline = limits.deadline if limits.deadline is not None else \
            time.monotonic() + limits.session_seconds
        self.bytes_left = limits.session_bytes
        self.failure: FetchError | None = None
        self.cutoff = resolver.cutoff
        self._answer_deadline = self.deadline
        # Set by a caller that lists items: more DAV:response elements than this in one answer,
        # or twice this in the whole conversation (caldav follows "truncated" listings page
        # after page), and the answer is refused before it is parsed — caldav spends about half
        # a millisecond on each, so a 10 MB listing of tiny items would cost most of a minute.
        self.max_items: int | None = None
        self._items_seen = 0
        # Set by the CalDAV client: a web page in answer to a WebDAV request means the address
        # is a website, not a calendar server, which is what the person must be told (rather
        # than that its HTML was not valid XML).
        self.refuse_web_pages = False
        for adapter in self.adapters.values():
            setattr(adapter, "build_response", self._guarding(getattr(adapter, "build_response")))  # noqa: B009,B010

    def _fail(self, error: FetchError) -> FetchError:
        if self.failure is None:
            self.failure = error
        return self.failure

    def _guarding(self, build: Callable[..., Any]) -> Callable[..., Any]:
        def build_response(request: Any, raw_response: Any) -> Any:
            response = build(request, raw_response)
            if hasattr(response.raw, "read1"):
                self._guard(response.raw)
            return response

        return build_response

    def _guard(self, raw: Any) -> None:
        """Count and time every read of this answer's body (urllib3's read() and stream() both
        go through read1, so a body is never read in one unbounded piece)."""
        read1, read = raw.read1, raw.read
        deadline = self._answer_deadline
        size = 0

        def stop(error: FetchError) -> FetchError:
            # Hang up: whoever was reading (a library hook, say) may never close it.
            with contextlib.suppress(Exception):
                raw.close()
            return self._fail(error)

        def guarded_read1(amt: int | None = None, decode_content: bool | None = None) -> bytes:
            nonlocal size
            data: bytes = read1(amt=amt, decode_content=decode_content)
            size += len(data)
            self.bytes_left -= len(data)
            if size > self.limits.max_bytes:
                raise stop(FetchError("too_large", _too_large(self.limits)))
            if self.bytes_left < 0:
                raise stop(FetchError(
                    "too_large", f"The calendar server sent more than {_mb(self.limits.session_bytes)} MB "
                                 "in one go; the calendar is too large to sync."))
            if time.monotonic() > deadline:
                raise stop(FetchError("timeout", "The calendar server was too slow to send its answer."))
            return data

        def guarded_read(amt: int | None = None, decode_content: bool | None = None,
                         cache_content: bool = False) -> bytes:
            if amt is None or amt < 0:
                return b"".join(raw.stream(64 * 1024, decode_content=decode_content))
            data: bytes = read(amt, decode_content=decode_content)
            return data

        raw.read1, raw.read = guarded_read1, guarded_read

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.failure is not None:
            raise self.failure
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._fail(FetchError("timeout", "The calendar server did not answer in time."))
        per_request = min(self.limits.total_seconds, remaining)
        self._answer_deadline = time.monotonic() + per_request
        kwargs["timeout"] = (min(self.limits.connect_seconds, per_request),
                             min(self.limits.read_seconds, per_request))
        kwargs["stream"] = True  # the body is read below, through the guard
        # The guard's checks run between reads; the cutoff ends a read that never returns
        # (headers dripped a byte at a time, a stalled TLS handshake).
        self.cutoff.arm(self._answer_deadline)
        try:
            response = super().request(method, url, *args, **kwargs)
            try:
                body = response.content or b""
            except FetchError:
                response.close()  # the rest of the body stays unread: drop the connection
                raise
        except Exception as exc:
            if self.cutoff.fired:
                raise self._fail(FetchError(
                    "timeout", "The calendar server was too slow to send its answer.")) from exc
            raise
        finally:
            self.cutoff.disarm()
        if self.refuse_web_pages and _is_web_page(response, body):
            raise self._fail(FetchError(
                "web_page", "This address is a web page, not a CalDAV server: enter the CalDAV "
                            "address your calendar provider gives (for iCloud "
                            "https://caldav.icloud.com/, for Fastmail https://caldav.fastmail.com/)."))
        if _DOCTYPE.match(body[:64 * 1024]):
            raise self._fail(FetchError(
                "unsafe", "The calendar server's answer declared XML entities (a DTD), which "
                          "calendar servers never send; it was refused for safety."))
        if self.max_items is not None:
            count = len(_RESPONSE_END.findall(body))
            self._items_seen += count
            if count > self.max_items or self._items_seen > 2 * self.max_items:
                raise self._fail(
                    FetchError("too_large", f"The calendar has more than {self.max_items} items."))
        return response

    def close(self) -> None:
        super().close()
        self.cutoff.close()


def _is_web_page(response: Any, body: bytes) -> bool:
    """An HTML answer to a WebDAV request that succeeded or that the server does not support
    (405, 501): a website. An HTML 401 or 404 is left to say what it says."""
    if not (200 <= response.status_code < 300 or response.status_code in (405, 501)):
        return False
    kind = response.headers.get("content-type", "").lower()
    head = body[:512].lstrip().lower()
    return "text/html" in kind or head.startswith((b"<!doctype html", b"<html"))


def _mb(size: int) -> int:
    return size // (1024 * 1024)


def _explain(exc: BaseException, resolver: GuardedResolver) -> FetchError:
    if resolver.refusal:
        return FetchError("blocked", resolver.refusal)
    if resolver.cutoff.fired:
        return FetchError("timeout", "The calendar server was too slow to send its answer.")
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if isinstance(exc, niquests.exceptions.SSLError) or "certificate" in text or "ssl" in text:
        return FetchError(
            "tls",
            "The calendar server's secure connection (TLS certificate) could not be verified.",
        )
    if isinstance(exc, niquests.exceptions.Timeout) or "timed out" in text:
        return FetchError("timeout", "The calendar server did not answer in time.")
    if "name or service not known" in text or "nameresolution" in text or "gaierror" in text \
            or "no address associated" in text or "temporary failure in name resolution" in text:
        return FetchError("dns", "The calendar address was not found: check the host name.")
    if "refused" in text:
        return FetchError("connection", "The calendar server refused the connection.")
    return FetchError("connection", "The calendar server could not be reached.")


def fetch_url(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    limits: FetchLimits | None = None,
    allow_private: bool = False,
    accept: str = "text/calendar, text/plain;q=0.5, */*;q=0.1",
    auth: tuple[str, str] | None = None,
    policy: AddressPolicy | None = None,
) -> Fetched:
    """GET a calendar URL safely. Raises FetchError (or ValidationError for a bad URL)."""
    limits = limits or FetchLimits()
    deadline = min(time.monotonic() + limits.total_seconds, limits.deadline or float("inf"))
    resolver = GuardedResolver(allow_private, policy, limits.ports)
    current = normalise_calendar_url(url)
    headers = {"Accept": accept, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    resolver.cutoff.arm(deadline)  # connect, TLS, headers and body of every hop
    with _session(resolver, limits) as session, contextlib.closing(resolver.cutoff):
        for _hop in range(limits.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("timeout", "The calendar server did not answer in time.")
            try:
                response = session.get(
                    current,
                    headers=headers,
                    allow_redirects=False,
                    stream=True,
                    timeout=(min(limits.connect_seconds, remaining), min(limits.read_seconds, remaining)),
                    auth=auth,
                )
            except ValidationError:
                raise
            except Exception as exc:  # niquests wraps socket, TLS and protocol errors
                raise _explain(exc, resolver) from exc
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError("http", "The calendar server sent a redirect without a target.")
                    current = normalise_calendar_url(urljoin(current, location))
                    # Credentials never follow a redirect to another host.
                    auth = None
                    continue
                return _read(response, current, limits, deadline)
            finally:
                response.close()
    raise FetchError("redirects", f"The calendar address redirected more than {limits.max_redirects} times.")


def _read(response: Any, url: str, limits: FetchLimits, deadline: float) -> Fetched:
    status = response.status_code
    hdrs = {k.lower(): v for k, v in response.headers.items()}
    if status == 304:
        return Fetched(url=url, not_modified=True, status=304, etag=hdrs.get("etag"),
                       last_modified=hdrs.get("last-modified"), headers=hdrs)
    if status in (401, 403):
        # fetch_url reads ICS addresses, which carry no login: the secret is in the address.
        raise FetchError("auth", "The calendar server refused access: the address is wrong or was "
                                 "reset, or the calendar is no longer shared. Copy the calendar's "
                                 "current address again.")
    if status == 404 or status == 410:
        raise FetchError("not_found", "The calendar was not found at that address (it may have "
                                      "been deleted or its secret address reset).")
    if status >= 400:
        raise FetchError("http", f"The calendar server answered with an error (HTTP {status}).")
    declared = hdrs.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchError("too_large", _too_large(limits))
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > limits.max_bytes:
                raise FetchError("too_large", _too_large(limits))
            if time.monotonic() > deadline:
                raise FetchError("timeout", "The calendar server was too slow to send the calendar.")
            chunks.append(chunk)
    except FetchError:
        raise
    except Exception as exc:
        if time.monotonic() > deadline:
            raise FetchError("timeout", "The calendar server was too slow to send the calendar.") from exc
        raise FetchError("connection", "The connection broke while the calendar was downloading.") from exc
    return Fetched(
        url=url, not_modified=False, body=b"".join(chunks), status=status, etag=hdrs.get("etag"),
        last_modified=hdrs.get("last-modified"), content_type=hdrs.get("content-type", ""), headers=hdrs,
    )


def _too_large(limits: FetchLimits) -> str:
    return f"The calendar is larger than the {_mb(limits.max_bytes)} MB limit."
