"""The conversation with Microsoft Graph (v1.0) and the Microsoft identity platform on one
guarded session, with Graph's error rules:

- 401 refreshes the access token once (through msal: microsoft_identity.py) and repeats the
  request; `invalid_grant` (e.g. AADSTS700082: the refresh token expired after 90 days unused,
  or consent was revoked) is ReconnectNeeded.
- 429 and 503 are retried after Retry-After (Graph's "throttling guidance" asks to honour it),
  or an exponential backoff, within the deadline; then RateLimited / StoreUnavailable.
- At most MAILBOX_CONCURRENCY requests in flight per mailbox, whatever the number of open
  conversations in this process: Exchange Online throttles a mailbox at 4 concurrent requests
  per app ("Outlook service limits"), and answers more with 429 ApplicationThrottled.
- Every request asks `Prefer: outlook.timezone="UTC"`, so event times come back in UTC.

Every request, msal's token requests included, goes through feeds.sources.fetch.GuardedSession
(answer caps, the wall-clock deadline); base URLs are parameters (settings CALSYNC_MICROSOFT_*),
so tests reach the loopback contract fake (served over TLS with its own CA, `ca_file`) with
private networks allowed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from calsync.feeds.calendars.providers.base import (
    RateLimited,
    ReconnectNeeded,
    Tokens,
    backoff_seconds,
    retry_after_seconds,
)
from calsync.feeds.calendars.providers.microsoft_identity import PROVIDER, Identity
from calsync.feeds.calendars.store import InvalidSyncToken, StoreUnavailable
from calsync.feeds.sources.fetch import FetchError, FetchLimits, GuardedResolver, GuardedSession, _explain

MAX_RETRIES = 3
MAILBOX_CONCURRENCY = 4
# Codes Graph gives a delta token it no longer has (410 Gone; also seen as 400).
SYNC_STATE_CODES = {"syncStateNotFound", "syncStateInvalid", "resyncRequired"}


@dataclass(frozen=True)
class MicrosoftEndpoints:
    graph_base: str = "https://graph.microsoft.com/v1.0"
    login_base: str = "https://login.microsoftonline.com"
    tenant: str = "common"
    # A PEM file of the certificate authorities trusted for these addresses instead of the
    # system's (CALSYNC_MICROSOFT_CA_FILE: the loopback contract fake's own CA in tests).
    ca_file: str | None = None

    @property
    def authority(self) -> str:
        """msal's authority: the identity platform of the tenant."""
        return f"{self.login_base}/{self.tenant}"

    @classmethod
    def of(cls, settings: Any) -> MicrosoftEndpoints:
        """From the app's Settings (CALSYNC_MICROSOFT_*; feeds.calendars may not import settings)."""
        return cls(settings.microsoft_graph_base_url.rstrip("/"),
                   settings.microsoft_login_base_url.rstrip("/"), settings.microsoft_tenant,
                   settings.microsoft_ca_file or None)


@dataclass(frozen=True)
class MicrosoftClient:
    """The operator's app registration (Microsoft Entra)."""

    client_id: str
    client_secret: str


# --- the per-mailbox cap ----------------------------------------------------------------------

_slots_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}


def mailbox_slots(mailbox: str) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one mailbox (keyed by Graph root and mailbox)."""
    with _slots_lock:
        if mailbox not in _slots:
            _slots[mailbox] = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)
        return _slots[mailbox]


class GraphApi:
    """One conversation with Microsoft Graph on one guarded session, for one mailbox."""

    def __init__(self, session: GuardedSession, resolver: GuardedResolver, endpoints: MicrosoftEndpoints,
                 client: MicrosoftClient, tokens: Tokens | None, *, mailbox: str,
                 on_tokens: Callable[[Tokens], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.session, self._resolver, self.endpoints, self.client = session, resolver, endpoints, client
        self.tokens = tokens
        self._slots = mailbox_slots(f"{endpoints.graph_base} {mailbox}")
        self._on_tokens = on_tokens
        self._sleep = sleep
        self._identity: Identity | None = None
        self.requests = 0  # for tests and the benchmark
        self.bytes = 0

    # --- transport ----------------------------------------------------------------------------

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        waited = self._slots.acquire(timeout=max(0.0, self.session.deadline - time.monotonic()))
        if not waited:
            raise StoreUnavailable("timeout", f"{PROVIDER} was busy with this mailbox for too long; "
                                              "the calendar is read again later.")
        try:
            self.requests += 1
            response = self.session.request(method, url, allow_redirects=False, **kwargs)
            self.bytes += len(response.content or b"")
            return response
        except FetchError as exc:
            raise StoreUnavailable(exc.kind, str(exc)) from exc
        except Exception as exc:
            explained = self.session.failure or _explain(exc, self._resolver)
            raise StoreUnavailable(explained.kind, str(explained)) from exc
        finally:
            self._slots.release()

    # --- the identity platform (msal, on this conversation's session) -------------------------

    def identity(self) -> Identity:
        """msal's application for this conversation, made at the first token request (msal
        reads the tenant's OpenID configuration as it is made)."""
        if self._identity is None:
            self._identity = Identity(self.endpoints.authority, self.client.client_id,
                                      self.client.client_secret, self.send)
        return self._identity

    def refresh(self) -> None:
        if self.tokens is None or not self.tokens.refresh_token:
            raise ReconnectNeeded(PROVIDER)
        # The identity platform rotates refresh tokens: the new one is kept when it sends one.
        self.tokens = self.identity().refresh(self.tokens.refresh_token)
        if self._on_tokens is not None:
            self._on_tokens(self.tokens)  # the caller seals the new tokens

    # --- Graph --------------------------------------------------------------------------------

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self.endpoints.graph_base + path + ("?" + urlencode(params) if params else "")

    def owns(self, url: str) -> bool:
        """A link Graph handed us (nextLink, deltaLink) points at Graph itself: the bearer
        token is never sent anywhere else."""
        return url.startswith(self.endpoints.graph_base + "/")

    def call(self, method: str, url: str, *, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Any:
        """A Graph request (absolute `url`) with refresh-on-401 and throttling retries; the
        answer's other statuses are the caller's to read."""
        if self.tokens is None or self.tokens.expires_at <= time.time() + 30:
            self.refresh()
        refreshed = False
        retries = 0
        while True:
            assert self.tokens is not None
            sent = {"Authorization": f"Bearer {self.tokens.access_token}", "Accept": "application/json",
                    "Prefer": 'outlook.timezone="UTC"', **(headers or {})}
            if body is not None:
                sent["Content-Type"] = "application/json"
            response = self.send(method, url, headers=sent,
                                 data=json.dumps(body).encode() if body is not None else None)
            status = response.status_code
            if status == 401 and not refreshed:
                refreshed = True  # an access token expired early or was revoked: once, no more
                self.refresh()
                continue
            if status == 401:
                raise ReconnectNeeded(PROVIDER)
            if status in (429, 503):
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                delay = backoff_seconds(retries, wait)
                if retries >= MAX_RETRIES or time.monotonic() + delay >= self.session.deadline:
                    if status == 429:
                        raise RateLimited(PROVIDER, wait)
                    raise StoreUnavailable("http_status", f"{PROVIDER} had a temporary problem (HTTP 503); "
                                                          "the calendar is read again later.")
                retries += 1
                self._sleep(delay)
                continue
            if status >= 500:
                raise StoreUnavailable("http_status", f"{PROVIDER} had a temporary problem (HTTP {status}); "
                                                      "the calendar is read again later.")
            return response

    def pages(self, url: str, *, prefer: str = "") -> Iterator[dict[str, Any]]:
        """Every page of a collection or delta round, following @odata.nextLink; the last page
        carries @odata.deltaLink (delta) or nothing more."""
        headers = {"Prefer": f'outlook.timezone="UTC", {prefer}' if prefer else 'outlook.timezone="UTC"'}
        while True:
            response = self.call("GET", url, headers=headers)
            if response.status_code == 410 or error_code(response) in SYNC_STATE_CODES:
                raise InvalidSyncToken()
            expect_ok(response, 200)
            page = json_of(response)
            yield page
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            if not self.owns(str(next_link)):
                raise StoreUnavailable("unreadable", f"{PROVIDER} answered a link outside Graph; "
                                                     "the calendar is read again later.")
            url = str(next_link)


def json_of(response: Any) -> dict[str, Any]:
    try:
        value = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def error_code(response: Any) -> str | None:
    """Graph's error code: {"error": {"code": "...", "message": "..."}}."""
    if response.status_code < 400:
        return None
    error = json_of(response).get("error")
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


def expect_ok(response: Any, *statuses: int) -> None:
    if response.status_code in statuses:
        return
    if response.status_code == 403:
        raise StoreUnavailable("auth", f"{PROVIDER} refused access to this mailbox "
                                            f"({error_code(response) or 'HTTP 403'}): ask the Microsoft 365 "
                                            "admin to allow calsync for it, or connect it again.")
    raise StoreUnavailable("http_status", f"{PROVIDER} answered HTTP {response.status_code}; "
                                          "the calendar is read again later.")


@contextmanager
def graph_api(endpoints: MicrosoftEndpoints, client: MicrosoftClient, tokens: Tokens | None, *, mailbox: str,
              allow_private: bool, limits: FetchLimits, on_tokens: Callable[[Tokens], None] | None = None,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[GraphApi]:
    """One guarded conversation with Graph (the limits' deadline bounds all of it)."""
    with graph_session(endpoints, allow_private=allow_private, limits=limits) as (session, resolver):
        yield GraphApi(session, resolver, endpoints, client, tokens, mailbox=mailbox, on_tokens=on_tokens,
                       sleep=sleep)


@contextmanager
def graph_session(endpoints: MicrosoftEndpoints, *, allow_private: bool, limits: FetchLimits
                  ) -> Iterator[tuple[GuardedSession, GuardedResolver]]:
    """The guarded session of one conversation with Microsoft, trusting `endpoints.ca_file`
    when the operator (or a test) names one; certificates are always verified."""
    resolver = GuardedResolver(allow_private, ports=limits.ports)
    session = GuardedSession(resolver, limits)
    if endpoints.ca_file:
        session.verify = endpoints.ca_file
    try:
        yield session, resolver
    finally:
        session.close()
