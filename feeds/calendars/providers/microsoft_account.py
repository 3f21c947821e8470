"""The account side of a Microsoft 365 / Outlook.com connection (issue 12; verified against
tests/fakes/microsoft_graph.py only): the sign-in through msal (authorization code flow with
PKCE S256 and a nonce, v2.0 endpoint: microsoft_identity.py), and the account's calendars with
whether calsync may write into them (`canEdit`).

`MicrosoftProvider` puts them together for the connect flow (feeds.calendars.provider_access).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from calsync.feeds.calendars.providers.base import RemoteCalendar, Tokens
from calsync.feeds.calendars.providers.microsoft_api import (
    PROVIDER,
    MicrosoftClient,
    MicrosoftEndpoints,
    graph_api,
    json_of,
)
from calsync.feeds.sources.fetch import FetchLimits


def sign_in_url(endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, redirect_uri: str,
                seal: Callable[[dict[str, Any]], str], allow_private: bool, limits: FetchLimits) -> str:
    """The sign-in page of a new msal flow, its state the one `seal` makes of the flow's secret
    part (microsoft_identity.Identity.begin). `offline_access` among the scopes brings the
    refresh token; `select_account` lets someone signed in to several accounts pick one."""
    with graph_api(endpoints, client, None, mailbox="sign-in", allow_private=allow_private,
                   limits=limits) as api:
        return api.identity().begin(redirect_uri, seal)


def finish_sign_in(endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, flow: Mapping[str, Any],
                   state: str, answer: Mapping[str, str], allow_private: bool, limits: FetchLimits) -> Tokens:
    """The callback's answer for tokens, with the flow sealed in its `state`; ReconnectNeeded
    when the code is refused (invalid_grant: used, too old, another verifier)."""
    with graph_api(endpoints, client, None, mailbox="sign-in", allow_private=allow_private,
                   limits=limits) as api:
        return api.identity().finish(flow, state, answer)


def list_calendars(endpoints: MicrosoftEndpoints, client: MicrosoftClient, tokens: Tokens, *, mailbox: str,
                   allow_private: bool, limits: FetchLimits) -> list[RemoteCalendar]:
    """The signed-in account's calendars (GET /me/calendars). `canEdit` decides the role:
    a calendar shared read-only is a "reader", which may only be a busy-time source."""
    found: list[RemoteCalendar] = []
    with graph_api(endpoints, client, tokens, mailbox=mailbox, allow_private=allow_private,
                   limits=limits) as api:
        fields = "id,name,hexColor,canEdit,isDefaultCalendar"
        for page in api.pages(api.url("/me/calendars", {"$select": fields})):
            for entry in page.get("value") or []:
                found.append(RemoteCalendar(
                    str(entry["id"]), str(entry.get("name") or entry["id"]), entry.get("hexColor") or None,
                    "writer" if entry.get("canEdit") else "reader", bool(entry.get("isDefaultCalendar"))))
    return found


def account_address(endpoints: MicrosoftEndpoints, client: MicrosoftClient, tokens: Tokens, *,
                    allow_private: bool, limits: FetchLimits) -> str | None:
    """The signed-in account's address (GET /me with User.Read), shown on the connection; None
    when Graph gives none."""
    with graph_api(endpoints, client, tokens, mailbox="sign-in", allow_private=allow_private,
                   limits=limits) as api:
        response = api.call("GET", api.url("/me", {"$select": "mail,userPrincipalName"}))
        if response.status_code != 200:
            return None
        me = json_of(response)
        found = me.get("mail") or me.get("userPrincipalName")
        return str(found)[:320] if found else None


class MicrosoftProvider:
    """The account side of a Microsoft connection in the shape of providers/base.py's
    CalendarProvider (without change notifications: those are the webhook's), except for the
    sign-in: msal makes the PKCE pair and the nonce, so `sign_in_url` takes the sealing of the
    state and `finish_sign_in` the flow back, where Google has authorise_url / exchange_code."""

    name = PROVIDER

    def __init__(self, endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, allow_private: bool = False,
                 limits: FetchLimits | None = None) -> None:
        self.endpoints, self.client, self.allow_private = endpoints, client, allow_private
        self.limits = limits or FetchLimits()

    def sign_in_url(self, *, redirect_uri: str, seal: Callable[[dict[str, Any]], str]) -> str:
        return sign_in_url(self.endpoints, self.client, redirect_uri=redirect_uri, seal=seal,
                           allow_private=self.allow_private, limits=self.limits)

    def finish_sign_in(self, *, flow: Mapping[str, Any], state: str, answer: Mapping[str, str]) -> Tokens:
        return finish_sign_in(self.endpoints, self.client, flow=flow, state=state, answer=answer,
                              allow_private=self.allow_private, limits=self.limits)

    def list_calendars(self, tokens: Tokens) -> list[RemoteCalendar]:
        return list_calendars(self.endpoints, self.client, tokens, mailbox="sign-in",
                              allow_private=self.allow_private, limits=self.limits)

    def account_address(self, tokens: Tokens) -> str | None:
        return account_address(self.endpoints, self.client, tokens, allow_private=self.allow_private,
                               limits=self.limits)

    def revoke(self, token: str) -> None:
        """The identity platform has no endpoint revoking one app's refresh token (RFC 7009 is
        not offered; Graph's revokeSignInSessions would sign the person out everywhere). The
        tokens are forgotten; the person removes calsync under "Apps and services" of their
        Microsoft account."""
