"""The company-wide Microsoft 365 connection (issue 12, "corporate" mode): an app registration
of the company's own tenant with the *application* permission Calendars.ReadWrite reaches
each staff member's mailbox at /users/{address}/calendar, with no action by the staff member.
Which mailboxes it may reach is the tenant's business (RBAC for Applications in Exchange
Online, formerly application access policies): one outside that scope answers 403
ErrorAccessDenied. Verified against tests/fakes/microsoft_graph.py only.

Tokens come from the client credentials grant (RFC 6749 §4.4; the identity platform's
"OAuth 2.0 client credentials flow") with the scope `https://graph.microsoft.com/.default`
(the application permissions the admin consented to), through msal's `acquire_token_for_client`
on the guarded session, as for the delegated flow (microsoft_identity.py). There is no refresh
token: a new grant is the refresh. The token is kept per app registration in `TOKENS`, not in
msal's cache, which lives for one conversation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from calsync.feeds.calendars.providers.base import (
    AccountRefused,
    MemberRefused,
    TokenCache,
    tokens_from_answer,
)
from calsync.feeds.calendars.providers.microsoft import GraphCalendarStore
from calsync.feeds.calendars.providers.microsoft_api import (
    PROVIDER,
    GraphApi,
    MicrosoftClient,
    MicrosoftEndpoints,
    error_code,
    graph_session,
)
from calsync.feeds.calendars.store import StoreUnavailable
from calsync.feeds.errors import ValidationError
from calsync.feeds.sources.fetch import FetchLimits, GuardedResolver, GuardedSession

APP_SCOPE = "https://graph.microsoft.com/.default"
# A tenant is its id (a GUID) or a verified domain name; "common"/"organizations" cannot issue
# app-only tokens.
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TENANT = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")  # or a GUID


@dataclass(frozen=True)
class AppCredentials:
    tenant: str
    client_id: str
    client_secret: str

    def as_dict(self) -> dict[str, str]:
        return {"tenant": self.tenant, "client_id": self.client_id, "client_secret": self.client_secret}


def read_app_credentials(tenant: str, client_id: str, client_secret: str) -> AppCredentials:
    tenant, client_id, client_secret = tenant.strip(), client_id.strip(), client_secret.strip()
    shared = tenant.lower() in ("common", "organizations", "consumers")
    if shared or not (_TENANT.match(tenant) or _GUID.match(tenant)):
        raise ValidationError("Enter your tenant's directory (tenant) id or its domain, e.g. "
                              "contoso.onmicrosoft.com (Microsoft Entra admin center → Overview).", "tenant")
    if not _GUID.match(client_id):
        raise ValidationError("The application (client) id is a GUID such as "
                              "5f2c6c1e-1234-4000-8000-00000000ca15 (the app registration's Overview).",
                              "client_id")
    if not client_secret:
        raise ValidationError("Enter the client secret's value (Certificates & secrets → its Value, "
                              "shown once when it was created).", "client_secret")
    return AppCredentials(tenant, client_id, client_secret)


def mailbox_refusal(address: str, response: Any, who: str | None = None) -> MemberRefused | None:
    """The sentence for a refused mailbox, or None for any other answer; `who` names the staff
    member in it."""
    who = who or address
    code = error_code(response) or f"HTTP {response.status_code}"
    if response.status_code == 403:
        return MemberRefused(code, (
            f"{who}'s mailbox is outside the app's allowed mailboxes ({code}): ask your Microsoft 365 "
            f"admin to add {address} to the application access policy (RBAC for Applications scope) of "
            "calsync's app registration."))
    if response.status_code == 404:
        return MemberRefused(code, f"{who} has no Exchange Online mailbox in your tenant at {address} "
                                   f"({code}): check the staff member's email address, or their "
                                   "Microsoft 365 licence.")
    return None


# per (tenant, client id): one app-only token serves every mailbox of the company
TOKENS = TokenCache()


def app_endpoints(endpoints: MicrosoftEndpoints, credentials: AppCredentials) -> MicrosoftEndpoints:
    """The operator's Graph and login addresses with the company's own tenant."""
    return replace(endpoints, tenant=credentials.tenant)


class AppGraphApi(GraphApi):
    """A GraphApi whose "refresh" is a new client credentials grant; throttling, the
    per-mailbox cap and the 401 rule of GraphApi stay as they are."""

    def __init__(self, session: GuardedSession, resolver: GuardedResolver, endpoints: MicrosoftEndpoints,
                 credentials: AppCredentials, *, mailbox: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.credentials = credentials
        self._cache_key = (endpoints.login_base, credentials.tenant, credentials.client_id)
        super().__init__(session, resolver, app_endpoints(endpoints, credentials),
                         MicrosoftClient(credentials.client_id, credentials.client_secret),
                         TOKENS.get(self._cache_key), mailbox=mailbox, sleep=sleep)

    def refresh(self) -> None:
        try:
            answer = self.identity().for_client(APP_SCOPE)
        except StoreUnavailable as exc:
            if exc.kind == "auth":  # no such tenant: the company's settings, not a staff member's
                raise AccountRefused(str(exc)) from exc
            raise
        if "access_token" not in answer:
            description = str(answer.get("error_description", "")).split(" Trace ID")[0]
            raise AccountRefused(f"{PROVIDER} refused calsync's app registration "
                                 f"({answer.get('error', 'no token')}: {description}): check the "
                                 "tenant, the application (client) id and the client secret (secrets "
                                 "expire), and that an admin granted consent.")
        self.tokens = tokens_from_answer(PROVIDER, 200, answer, {}, hint="check the app registration.")
        TOKENS.put(self._cache_key, self.tokens)


@contextmanager
def app_graph_api(endpoints: MicrosoftEndpoints, credentials: AppCredentials, *, mailbox: str,
                  allow_private: bool, limits: FetchLimits,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[AppGraphApi]:
    with graph_session(endpoints, allow_private=allow_private, limits=limits) as (session, resolver):
        yield AppGraphApi(session, resolver, endpoints, credentials,
                          mailbox=f"{credentials.tenant} {mailbox.lower()}", sleep=sleep)


@contextmanager
def open_app_graph_store(endpoints: MicrosoftEndpoints, credentials: AppCredentials, address: str,
                         calendar_id: str = "primary", *, allow_private: bool, limits: FetchLimits,
                         window: tuple[datetime, datetime] | None = None, max_items: int = 20_000,
                         sleep: Callable[[float], None] = time.sleep) -> Iterator[GraphCalendarStore]:
    """The calendar of the mailbox `address` (its default calendar unless named) as a store."""
    with app_graph_api(endpoints, credentials, mailbox=address, allow_private=allow_private, limits=limits,
                       sleep=sleep) as api:
        yield GraphCalendarStore(api, calendar_id, user=address, window=window, max_items=max_items)


def check_mailbox(api: GraphApi, address: str, who: str | None = None) -> None:
    """Raises MemberRefused/StoreUnavailable unless the mailbox's default calendar is reachable
    (GET /users/{address}/calendar: the least a sync needs)."""
    path = f"/users/{quote(address, safe='@')}/calendar"
    response = api.call("GET", api.url(path, {"$select": "id,name,canEdit"}))
    refused = mailbox_refusal(address, response, who)
    if refused is not None:
        raise refused
    if response.status_code != 200:
        raise StoreUnavailable("http_status", f"{PROVIDER} answered HTTP {response.status_code} for "
                                              f"{who or address}'s calendar; try the check again later.")
