"""The conversation with Google's APIs on one guarded session: the OAuth token endpoint
(RFC 6749 §4.1.3 and §6), and Calendar API calls with their error rules — 401 refreshes the
access token once and repeats the request; invalid_grant is ReconnectNeeded; 403
rateLimitExceeded/userRateLimitExceeded and 429 are retried after Retry-After (RFC 9110
§10.2.3) or an exponential backoff with jitter ("Handle API errors"), within the deadline,
then RateLimited; 5xx is StoreUnavailable (the sync retries later).

Every request goes through feeds.sources.fetch.GuardedSession (answer caps, the conversation's
wall-clock deadline); base URLs are parameters (settings CALSYNC_GOOGLE_*), so tests reach the
loopback contract fake with private networks allowed.
"""

from __future__ import annotations

import json
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
    tokens_from_answer,
)
from calsync.feeds.calendars.providers.google_events import Event
from calsync.feeds.calendars.store import InvalidSyncToken, StoreUnavailable
from calsync.feeds.sources.fetch import FetchError, FetchLimits, GuardedResolver, GuardedSession, _explain

PROVIDER = "Google Calendar"
# The least scopes for busy time, two-way sync of events and the calendar list (issue 11).
SCOPES = ("https://www.googleapis.com/auth/calendar.events",
          "https://www.googleapis.com/auth/calendar.calendarlist.readonly")
PAGE_SIZE = 250  # events.list maxResults default; at most 2500
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
MAX_RETRIES = 3


@dataclass(frozen=True)
class GoogleEndpoints:
    api_base: str = "https://www.googleapis.com/calendar/v3"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - an address, no secret
    revoke_url: str = "https://oauth2.googleapis.com/revoke"
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"

    @classmethod
    def of(cls, settings: Any) -> GoogleEndpoints:
        """From the app's Settings (CALSYNC_GOOGLE_*; feeds.calendars may not import settings)."""
        return cls(settings.google_api_base_url.rstrip("/"), settings.google_token_url,
                   settings.google_revoke_url, settings.google_auth_url)


@dataclass(frozen=True)
class GoogleClient:
    """The operator's OAuth client (Google Cloud console)."""

    client_id: str
    client_secret: str


class GoogleApi:
    """One conversation with Google on one guarded session."""

    def __init__(self, session: GuardedSession, resolver: GuardedResolver, endpoints: GoogleEndpoints,
                 client: GoogleClient, tokens: Tokens | None = None, *,
                 on_tokens: Callable[[Tokens], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.session, self._resolver, self.endpoints, self.client = session, resolver, endpoints, client
        self.tokens = tokens
        self._on_tokens = on_tokens
        self._sleep = sleep
        self.requests = 0  # for tests and the benchmark

    # --- transport ----------------------------------------------------------------------------

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        self.requests += 1
        try:
            return self.session.request(method, url, allow_redirects=False, **kwargs)
        except FetchError as exc:
            raise StoreUnavailable(exc.kind, str(exc)) from exc
        except Exception as exc:
            explained = self.session.failure or _explain(exc, self._resolver)
            raise StoreUnavailable(explained.kind, str(explained)) from exc

    # --- OAuth token endpoint (RFC 6749 §4.1.3, §6) --------------------------------------------

    def token_request(self, form: dict[str, str]) -> Tokens:
        form = {**form, "client_id": self.client.client_id, "client_secret": self.client.client_secret}
        response = self.send("POST", self.endpoints.token_url, data=form,
                             headers={"Accept": "application/json"})
        return tokens_from_answer(PROVIDER, response.status_code, json_of(response), form,
                                  hint="check the OAuth client id and secret in the settings.")

    def refresh(self) -> None:
        if self.tokens is None or not self.tokens.refresh_token:
            raise ReconnectNeeded(PROVIDER)
        self.tokens = self.token_request({"grant_type": "refresh_token",
                                          "refresh_token": self.tokens.refresh_token})
        if self._on_tokens is not None:
            self._on_tokens(self.tokens)  # the caller seals the new access token

    # --- the Calendar API ---------------------------------------------------------------------

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: Event | None = None, headers: dict[str, str] | None = None) -> Any:
        """A Calendar API request with refresh-on-401 and rate-limit retries; the answer's
        other statuses are the caller's to read."""
        url = self.endpoints.api_base + path + ("?" + urlencode(params) if params else "")
        if self.tokens is None or self.tokens.expires_at <= time.time() + 30:
            self.refresh()
        refreshed = False
        retries = 0
        while True:
            assert self.tokens is not None
            sent = {"Authorization": f"Bearer {self.tokens.access_token}", "Accept": "application/json",
                    **(headers or {})}
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
            if status == 429 or (status == 403 and _reason(response) in RATE_LIMIT_REASONS):
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                delay = backoff_seconds(retries, wait)
                if retries >= MAX_RETRIES or time.monotonic() + delay >= self.session.deadline:
                    raise RateLimited(PROVIDER, wait)
                retries += 1
                self._sleep(delay)
                continue
            if status >= 500:
                raise StoreUnavailable("http_status", f"{PROVIDER} had a temporary problem (HTTP {status}); "
                                                      "the calendar is read again later.")
            return response

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a list, following nextPageToken."""
        page_token: str | None = None
        while True:
            more = {"pageToken": page_token} if page_token else {}
            response = self.call("GET", path, params={**params, **more})
            if response.status_code == 410:
                raise InvalidSyncToken()
            expect_status(response, 200)
            page = json_of(response)
            yield page
            page_token = page.get("nextPageToken")
            if not page_token:
                return


def json_of(response: Any) -> dict[str, Any]:
    try:
        value = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reason(response: Any) -> str | None:
    error = json_of(response).get("error")
    if isinstance(error, dict):
        for item in error.get("errors") or []:
            if isinstance(item, dict) and item.get("reason"):
                return str(item["reason"])
    return None


def expect_status(response: Any, *statuses: int) -> None:
    if response.status_code not in statuses:
        raise StoreUnavailable("http_status", f"{PROVIDER} answered HTTP {response.status_code}; "
                                              "the calendar is read again later.")


@contextmanager
def google_api(endpoints: GoogleEndpoints, client: GoogleClient, tokens: Tokens | None, *,
               allow_private: bool, limits: FetchLimits,
               on_tokens: Callable[[Tokens], None] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[GoogleApi]:
    """One guarded conversation with Google (the limits' deadline bounds all of it)."""
    resolver = GuardedResolver(allow_private, ports=limits.ports)
    session = GuardedSession(resolver, limits)
    try:
        yield GoogleApi(session, resolver, endpoints, client, tokens, on_tokens=on_tokens, sleep=sleep)
    finally:
        session.close()


