"""The provider interface (issue 11): what Google and Microsoft calendars share, so that sync,
two-way sync, conflicts and health stay provider-neutral. A provider's calendar is a
CalendarStore (feeds.calendars.store); everything else it offers is here: OAuth, the account's
calendar list, change notifications, revocation.

OAuth is the authorisation-code flow (RFC 6749 §4.1) with PKCE (RFC 7636, method S256) and a
`state` that is sealed (Fernet: encrypted and authenticated with a key derived from the app's
secret key), expires, names the staff member it was issued for and carries a nonce, so that a
callback can be accepted once. The PKCE verifier (Google) or msal's whole flow — verifier,
OpenID Connect nonce, scopes (Microsoft) — travels inside the sealed state: the browser carries
it but cannot read or change it, and no server-side session is needed between the redirect and
the callback.

Google's token requests use no OAuth client library: authlib's and requests-oauthlib's clients
bring their own HTTP stack (requests/httpx), which would go around the guarded session (address
checks, answer caps, the wall-clock deadline); the pieces kept here are the two lines RFC 7636
§4.1-4.2 define. Microsoft's go through msal, which takes the guarded session as its
`http_client` (microsoft_identity.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from calsync.feeds.accounts.keys import Sealer
from calsync.feeds.calendars.store import CalendarStore, StoreUnavailable
from calsync.feeds.errors import CalsyncError

# --- named errors -----------------------------------------------------------------------------


class ReconnectNeeded(StoreUnavailable):
    """The provider refused our refresh token (OAuth `invalid_grant`, RFC 6749 §5.2): consent
    was revoked, the password changed, or a Google app in "Testing" let it expire after 7 days.
    Only the staff member can fix it, by connecting again; writes wait until then."""

    def __init__(self, provider: str) -> None:
        super().__init__("reconnect", f"{provider} no longer accepts calsync's access to this calendar "
                                      f"(it was revoked or expired): connect {provider} again.")
        self.provider = provider


class RateLimited(StoreUnavailable):
    """The provider asked us to slow down (HTTP 429, or Google's 403 rateLimitExceeded) and
    kept asking after our retries; `retry_after` is its Retry-After in seconds, if it sent one."""

    def __init__(self, provider: str, retry_after: float | None) -> None:
        super().__init__("rate_limited", f"{provider} asked calsync to slow down; the calendar is read "
                                         "again a little later, nothing is lost.")
        self.provider = provider
        self.retry_after = retry_after


class AccountRefused(StoreUnavailable):
    """The provider refused a company-wide account itself (a deleted service-account key, an
    expired client secret): no staff member can be reached until the admin fixes it."""

    def __init__(self, message: str) -> None:
        super().__init__("auth", message)


class MemberRefused(StoreUnavailable):
    """A company-wide account works, but not for this staff member: `code` is the provider's
    reason (unauthorized_client, notFound, ErrorAccessDenied, ErrorInvalidUser, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("auth", message)
        self.code = code


class ProviderNotConfigured(CalsyncError):
    """The operator has not registered an OAuth client for this provider."""


class OAuthStateInvalid(CalsyncError):
    """A callback whose `state` is forged, expired, already used or another person's."""

    def __init__(self, why: str) -> None:
        super().__init__(f"The connection could not be finished ({why}). "
                         "Start \"Connect calendar\" again from your page.")
        self.why = why


# --- what a provider hands back ---------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None  # only on the first exchange (and only with offline access)
    expires_at: float  # time.time() value
    scope: str = ""


class TokenCache:
    """Access tokens of a company-wide account per key (the account and, for Google, the
    mailbox acted as) until a minute before they expire, so a sync does not ask the token
    endpoint each time: Google signs an assertion per mailbox, Microsoft serves every mailbox
    of the tenant with one app-only token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], Tokens] = {}

    def get(self, key: tuple[str, str, str]) -> Tokens | None:
        with self._lock:
            tokens = self._tokens.get(key)
            return tokens if tokens is not None and tokens.expires_at > time.time() + 60 else None

    def put(self, key: tuple[str, str, str], tokens: Tokens) -> None:
        with self._lock:
            self._tokens[key] = tokens

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


def tokens_from_answer(provider: str, status: int, answer: dict[str, Any], form: dict[str, str], *,
                       reconnect_statuses: tuple[int, ...] = (400,),
                       reconnect_errors: frozenset[str] = frozenset({"invalid_grant"}),
                       hint: str) -> Tokens:
    """An OAuth token endpoint's answer (RFC 6749 §5.1, §5.2) as Tokens: consent that is gone
    means ReconnectNeeded; any other refusal is a sentence naming what the operator checks.
    A refresh that brings no new refresh token keeps the one sent (Google never rotates it;
    Microsoft's identity platform may)."""
    if status in reconnect_statuses and answer.get("error") in reconnect_errors:
        raise ReconnectNeeded(provider)
    if status != 200 or "access_token" not in answer:
        raise StoreUnavailable("auth", f"{provider} refused calsync's sign-in "
                                       f"({answer.get('error', status)}); {hint}")
    return Tokens(str(answer["access_token"]), answer.get("refresh_token") or form.get("refresh_token"),
                  time.time() + float(answer.get("expires_in", 3600)), str(answer.get("scope", "")))


@dataclass(frozen=True)
class RemoteCalendar:
    id: str
    name: str
    colour: str | None
    access_role: str  # Google calendarList accessRole: owner | writer | reader | freeBusyReader
    primary: bool = False

    @property
    def writable(self) -> bool:
        """A calendar calsync may write bookings into (roles `linked` and `additional`)."""
        return self.access_role in ("owner", "writer")


@dataclass(frozen=True)
class Channel:
    """A change-notification subscription (Google events.watch)."""

    id: str
    resource_id: str
    token: str  # our secret, echoed by the provider in every notification
    expires_at: float  # time.time() value


class CalendarProvider(Protocol):
    """One calendar provider. Every call goes through the guarded session under its deadline."""

    name: str

    def authorise_url(self, *, state: str, code_challenge: str, redirect_uri: str) -> str:
        """The consent screen's address (offline access, consent prompt, least scopes)."""

    def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> Tokens:
        """The callback's code for tokens; ReconnectNeeded on invalid_grant."""

    def refresh(self, refresh_token: str) -> Tokens:
        """A new access token; ReconnectNeeded on invalid_grant."""

    def list_calendars(self, tokens: Tokens) -> list[RemoteCalendar]: ...

    def open_store(self, tokens: Tokens, calendar_id: str) -> AbstractContextManager[CalendarStore]:
        """One calendar as a store, for one conversation."""

    def subscribe(self, tokens: Tokens, calendar_id: str, *, address: str, channel_token: str) -> Channel: ...

    def renew(self, tokens: Tokens, calendar_id: str, old: Channel, *, address: str) -> Channel:
        """A new channel before `old` expires; `old` is stopped once the new one is up."""

    def stop(self, tokens: Tokens, channel: Channel) -> None: ...

    def revoke(self, token: str) -> None:
        """Best effort: a failure is logged by the caller, never stops a disconnect."""


# --- slowing down when asked (shared by the providers' API clients) ---------------------------


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (RFC 9110 §10.2.3): delay-seconds, or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_seconds(retries: int, retry_after: float | None) -> float:
    """How long to wait before retry number `retries` + 1: the server's Retry-After if it sent
    one, else exponential backoff with jitter, capped at 32 s (both Google's "Handle API errors"
    and Microsoft's "throttling guidance" ask for this)."""
    if retry_after is not None:
        return retry_after
    return min(32.0, 2.0 ** retries) * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


# --- PKCE (RFC 7636) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str
    method: str = "S256"


def new_pkce() -> Pkce:
    # §4.1: 43-128 characters of [A-Z a-z 0-9 - . _ ~]; 64 random bytes in base64url are 86.
    verifier = secrets.token_urlsafe(64)
    return Pkce(verifier, s256_challenge(verifier))


def s256_challenge(verifier: str) -> str:
    # §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), without padding (Appendix A).
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- the OAuth state --------------------------------------------------------------------------

STATE_SECONDS = 600  # the consent screen takes a person minutes, not hours


@dataclass(frozen=True)
class OAuthState:
    staff_id: int
    provider: str
    nonce: str  # record it when the callback is accepted: single use
    code_verifier: str  # Google's; Microsoft's is inside `flow`
    issued_at: float
    flow: dict[str, Any] | None = None  # msal's auth code flow without its address and state

    @property
    def expires_at(self) -> float:
        return self.issued_at + STATE_SECONDS


class NonceLedger(Protocol):
    def use(self, nonce: str, expires_at: float) -> bool:
        """Record `nonce` as used; False if it was used before."""


class MemoryNonceLedger:
    """Single use within one process (tests). The web flow uses the oauth_state table
    (feeds.calendars.provider_connect.DatabaseNonceLedger), single use across workers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def use(self, nonce: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            self._used = {n: e for n, e in self._used.items() if e > now}
            if nonce in self._used:
                return False
            self._used[nonce] = expires_at
            return True


class StateSealer:
    """Issues and opens OAuth states with a key derived from the app's secret key."""

    def __init__(self, secret_key: str, clock: Callable[[], float] = time.time) -> None:
        self._sealer = Sealer(secret_key, "oauth-state")
        self._clock = clock

    def issue(self, staff_id: int, provider: str, pkce: Pkce | None = None, nonce: str | None = None,
              flow: dict[str, Any] | None = None) -> str:
        """`nonce`: the caller's, when it records the state (feeds.calendars.provider_connect
        stores it in the oauth_state table); a random one otherwise. `pkce` (Google) or `flow`
        (msal's, Microsoft) is what the callback needs back to redeem the code."""
        payload: dict[str, Any] = {"s": staff_id, "p": provider, "n": nonce or secrets.token_urlsafe(16),
                                   "v": pkce.verifier if pkce else "", "t": self._clock()}
        if flow is not None:
            payload["f"] = flow
        return self._sealer.seal(json.dumps(payload, separators=(",", ":")))

    def peek(self, sealed: str) -> OAuthState | None:
        """What a state says, unchecked beyond its seal (None if forged or unreadable): only to
        find where its callback belongs. `open` decides whether it is accepted."""
        plain = self._sealer.open(sealed)
        if plain is None:
            return None
        try:
            data = json.loads(plain)
            flow = data.get("f")
            return OAuthState(int(data["s"]), str(data["p"]), str(data["n"]), str(data["v"]),
                              float(data["t"]), flow if isinstance(flow, dict) else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def open(self, sealed: str, *, staff_id: int, provider: str, ledger: NonceLedger) -> OAuthState:
        """The state of a callback, or OAuthStateInvalid. `staff_id` is whose page the callback
        landed on (the invitation link or the admin's staff page): a state issued for another
        person is refused, so a link passed on cannot attach someone else's calendar."""
        state = self.peek(sealed)
        if state is None:
            raise OAuthStateInvalid("the answer was not issued by this calsync")
        if state.staff_id != staff_id or state.provider != provider:
            raise OAuthStateInvalid("it was started for another person or provider")
        if not state.issued_at <= self._clock() < state.expires_at:
            raise OAuthStateInvalid("it took longer than ten minutes")
        if not ledger.use(state.nonce, state.expires_at):
            raise OAuthStateInvalid("this answer was already used")
        return state
