"""The one place that turns a Google or Microsoft connection row into a live calendar store
(issues 11/12), and what the connect flow needs around it: the operator's OAuth clients, the
providers, the sealed tokens.

- `ProviderSetup.of(settings, limits)`: the base URLs and OAuth clients (CALSYNC_GOOGLE_*,
  CALSYNC_MICROSOFT_*); `not_set_up(kind)` is the one-line reason a "Connect" button is not
  offered when the operator has not registered a client.
- `open_provider_store(sessions, vault, setup, connection_id, ...)`: the connection's calendar
  as a CalendarStore for one conversation. Its tokens are unsealed from the vault; the provider
  API clients (providers/google_api.py, providers/microsoft_api.py) refresh the access token when
  it has expired and, once, on a 401; every refreshed token (Microsoft rotates refresh tokens
  too) is sealed and stored at once in its own short transaction, so a crash after a refresh
  never leaves an old, already-rotated refresh token behind. A refresh token the provider
  refuses is ReconnectNeeded; throttling is RateLimited (providers/base.py) — the sync turns
  both into the connection's status (feeds.calendars.health).
- `seal_tokens` / `open_tokens`: tokens as one JSON document sealed with the credentials key,
  exactly like a CalDAV password (and re-sealed by `calsync rotate-credentials-key`).

Where a connection's tokens come from (H3, the company-wide connection) is decided in
`open_provider_store`: a connection with `company_account_id` set is opened by
feeds.calendars.company_accounts.open_company_store, which mints an access token for the staff
member's address from the company's account (a Google service account with domain-wide
delegation, Microsoft client credentials) and never involves the operator's OAuth client; any
other connection acts with the staff member's own consent, the refresh token sealed on the
connection (`_tokens_for`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import CredentialsError, Vault
from calsync.feeds.calendars.company_accounts import CompanyAccess, open_company_store
from calsync.feeds.calendars.providers.base import ProviderNotConfigured, ReconnectNeeded, Tokens
from calsync.feeds.calendars.providers.google import GoogleProvider, open_google_store
from calsync.feeds.calendars.providers.google_api import GoogleClient, GoogleEndpoints
from calsync.feeds.calendars.providers.microsoft import open_graph_store
from calsync.feeds.calendars.providers.microsoft_account import MicrosoftProvider
from calsync.feeds.calendars.providers.microsoft_api import MicrosoftClient, MicrosoftEndpoints
from calsync.feeds.calendars.store import CalendarStore, StoreUnavailable
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import Connection, ConnectionKind, utcnow

log = logging.getLogger("calsync.providers")

PROVIDER_KINDS = frozenset({ConnectionKind.GOOGLE.value, ConnectionKind.MICROSOFT.value})
# What the pages call each provider (buttons, connection cards).
PROVIDER_LABELS = {"google": "Google Calendar", "microsoft": "Outlook / Microsoft 365"}
# Where the provider sends the person back: one fixed path per provider, registered with it
# (README "Google Calendar and Microsoft 365").
CALLBACK_PATHS = {"google": "/oauth/google/callback", "microsoft": "/oauth/microsoft/callback"}
NOT_SET_UP = {
    "google": "The operator has not registered a Google OAuth client "
              "(CALSYNC_GOOGLE_CLIENT_ID and CALSYNC_GOOGLE_CLIENT_SECRET).",
    "microsoft": "The operator has not registered a Microsoft Entra app "
                 "(CALSYNC_MICROSOFT_CLIENT_ID and CALSYNC_MICROSOFT_CLIENT_SECRET).",
}

Provider = GoogleProvider | MicrosoftProvider


@dataclass(frozen=True)
class ProviderSetup:
    """What the operator configured for the providers, and how calsync reaches them."""

    google_endpoints: GoogleEndpoints = GoogleEndpoints()
    google_client: GoogleClient | None = None
    microsoft_endpoints: MicrosoftEndpoints = MicrosoftEndpoints()
    microsoft_client: MicrosoftClient | None = None
    allow_private: bool = False
    limits: FetchLimits = FetchLimits()
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def of(cls, settings: Any, limits: FetchLimits) -> ProviderSetup:
        """From the app's Settings (feeds.calendars may not import feeds.settings)."""
        def secret(value: Any) -> str:  # a pydantic SecretStr (or a plain string in tests)
            return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)

        google = microsoft = None
        if settings.google_client_id and settings.google_client_secret:
            google = GoogleClient(settings.google_client_id, secret(settings.google_client_secret))
        if settings.microsoft_client_id and settings.microsoft_client_secret:
            microsoft = MicrosoftClient(settings.microsoft_client_id,
                                        secret(settings.microsoft_client_secret))
        return cls(GoogleEndpoints.of(settings), google, MicrosoftEndpoints.of(settings), microsoft,
                   allow_private=settings.allow_private_networks, limits=limits)

    def not_set_up(self, kind: str) -> str | None:
        """Why `kind` cannot be connected here (one line), or None when it can."""
        client = self.google_client if kind == "google" else self.microsoft_client
        return NOT_SET_UP[kind] if client is None else None

    def provider(self, kind: str, limits: FetchLimits | None = None) -> Provider:
        """The provider of `kind`; ProviderNotConfigured when the operator registered no client."""
        limits = limits or self.limits
        if kind == "google" and self.google_client is not None:
            return GoogleProvider(self.google_endpoints, self.google_client, allow_private=self.allow_private,
                                  limits=limits, sleep=self.sleep)
        if kind == "microsoft" and self.microsoft_client is not None:
            return MicrosoftProvider(self.microsoft_endpoints, self.microsoft_client,
                                     allow_private=self.allow_private, limits=limits)
        reason = NOT_SET_UP.get(kind, "Unknown provider.")
        raise ProviderNotConfigured(f"{PROVIDER_LABELS.get(kind, kind)} is not set up: "
                                    f"{reason[0].lower()}{reason[1:]}")


# --- tokens at rest ---------------------------------------------------------------------------


def seal_tokens(vault: Vault, tokens: Tokens) -> str:
    return vault.seal(json.dumps({"a": tokens.access_token, "r": tokens.refresh_token,
                                  "e": tokens.expires_at, "s": tokens.scope}, separators=(",", ":")))


def open_tokens(vault: Vault, sealed: str, provider: str) -> Tokens:
    """The stored tokens; ReconnectNeeded when there are none that can be read (a connection
    whose tokens were sealed with a key that is gone needs a new consent, not a retry)."""
    try:
        data = json.loads(vault.open(sealed))
        return Tokens(str(data["a"]), data.get("r"), float(data["e"]), str(data.get("s", "")))
    except (CredentialsError, ValueError, KeyError, TypeError):
        raise ReconnectNeeded(provider) from None


@dataclass(frozen=True)
class _Target:
    """What opening a store needs, copied out of the row before any network use."""

    id: int
    kind: str
    calendar_id: str
    account: str | None
    tokens_sealed: str | None
    company_account_id: int | None = None  # reached through a company-wide account (H3)


def _target(session: Session, connection_id: int) -> _Target:
    conn = session.get(Connection, connection_id)
    if conn is None or conn.kind not in PROVIDER_KINDS:
        raise StoreUnavailable("missing", "The calendar connection is gone.")
    return _Target(conn.id, conn.kind, conn.remote_calendar_id or "primary", conn.account_email,
                   conn.tokens_sealed, conn.company_account_id)


def _tokens_for(vault: Vault, target: _Target) -> Tokens:
    """The tokens calsync acts with for a connection the staff member consented to themselves
    (a company-wide connection never gets here: open_provider_store opens it through
    open_company_store)."""
    label = PROVIDER_LABELS[target.kind]
    if not target.tokens_sealed:
        raise ReconnectNeeded(label)
    return open_tokens(vault, target.tokens_sealed, label)


def save_tokens(sessions: sessionmaker[Session], vault: Vault, connection_id: int, tokens: Tokens) -> None:
    """Store refreshed tokens at once, in their own transaction (see the module docstring)."""
    with sessions.begin() as session:
        conn = session.get(Connection, connection_id)
        if conn is not None:
            conn.tokens_sealed = seal_tokens(vault, tokens)
            conn.updated_at = utcnow()


@contextmanager
def open_provider_store(
    sessions: sessionmaker[Session], vault: Vault, setup: ProviderSetup, connection_id: int, *,
    limits: FetchLimits | None = None, window: tuple[datetime, datetime] | None = None,
    max_items: int = 20_000,
) -> Iterator[CalendarStore]:
    """The connection's calendar as a store for one conversation (the limits' deadline bounds
    all of it). `window`: the sync window, which Graph's calendarView delta is read over."""
    with sessions() as session:
        target = _target(session, connection_id)
    if target.company_account_id is not None:
        # The company-wide connection: its tokens are minted for the staff member's address
        # from the company's service account / app registration (feeds.calendars.company_accounts),
        # and the operator's OAuth client is not involved.
        with open_company_store(sessions, vault, CompanyAccess.of_setup(setup), connection_id, limits=limits,
                                window=window, max_items=max_items) as company_store:
            yield company_store
        return
    tokens = _tokens_for(vault, target)
    limits = limits or setup.limits

    def keep(new: Tokens) -> None:
        save_tokens(sessions, vault, target.id, new)

    try:
        setup.provider(target.kind)  # refuses a provider the operator has not set up
    except ProviderNotConfigured as exc:
        raise StoreUnavailable("not_set_up", str(exc)) from None
    if target.kind == "google":
        assert setup.google_client is not None
        with open_google_store(setup.google_endpoints, setup.google_client, tokens, target.calendar_id,
                               allow_private=setup.allow_private, limits=limits, max_items=max_items,
                               on_tokens=keep, sleep=setup.sleep) as google:
            yield google
        return
    assert setup.microsoft_client is not None
    # The per-mailbox concurrency cap is keyed by the account (several calendars of one
    # mailbox share Exchange's 4 concurrent requests).
    with open_graph_store(setup.microsoft_endpoints, setup.microsoft_client, tokens, target.calendar_id,
                          mailbox=target.account or f"connection-{target.id}",
                          allow_private=setup.allow_private, limits=limits, window=window,
                          max_items=max_items, on_tokens=keep, sleep=setup.sleep) as graph:
        yield graph


def revoke_tokens(vault: Vault, setup: ProviderSetup, kind: str, tokens_sealed: str | None) -> bool:
    """Best effort: tell the provider to forget calsync's access (Google's revocation endpoint,
    RFC 7009). True when the provider confirmed it; a failure is logged, never raised — a
    disconnect must not depend on the provider being reachable."""
    if not tokens_sealed:
        return False
    try:
        tokens = open_tokens(vault, tokens_sealed, PROVIDER_LABELS.get(kind, kind))
        provider = setup.provider(kind)
        provider.revoke(tokens.refresh_token or tokens.access_token)
    except Exception as exc:  # noqa: BLE001 - best effort, by design
        log.info("revoking the %s tokens failed: %s", kind, type(exc).__name__)
        return False
    return kind == "google"
