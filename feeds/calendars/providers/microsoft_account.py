"""The account side of a Microsoft 365 / Outlook.com connection (issue 12, foundation; verified
against tests/fakes/microsoft_graph.py only): the identity platform's sign-in address, the
code exchange (authorization code flow with PKCE, v2.0 endpoint), and the account's calendars
with whether calsync may write into them (`canEdit`).

`MicrosoftProvider` puts them together for the connect flow (feeds.calendars.provider_access).
"""

from __future__ import annotations

from urllib.parse import urlencode

from calsync.feeds.calendars.providers.base import RemoteCalendar, Tokens
from calsync.feeds.calendars.providers.microsoft_api import (
    PROVIDER,
    SCOPES,
    MicrosoftClient,
    MicrosoftEndpoints,
    graph_api,
    json_of,
)
from calsync.feeds.sources.fetch import FetchLimits


def authorise_url(endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, state: str, code_challenge: str,
                  redirect_uri: str) -> str:
    """The sign-in page. `offline_access` among the scopes brings the refresh token;
    `select_account` lets someone signed in to several accounts pick the one to connect."""
    return endpoints.auth_url + "?" + urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri,
        "response_mode": "query", "scope": " ".join(SCOPES), "state": state,
        "code_challenge": code_challenge, "code_challenge_method": "S256", "prompt": "select_account"})


def exchange_code(endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, code: str, code_verifier: str,
                  redirect_uri: str, allow_private: bool, limits: FetchLimits) -> Tokens:
    """The callback's code for tokens; ReconnectNeeded on invalid_grant."""
    with graph_api(endpoints, client, None, mailbox="sign-in", allow_private=allow_private,
                   limits=limits) as api:
        return api.token_request({"grant_type": "authorization_code", "code": code,
                                  "code_verifier": code_verifier, "redirect_uri": redirect_uri})


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
    CalendarProvider (without change notifications: those are the webhook's)."""

    name = PROVIDER

    def __init__(self, endpoints: MicrosoftEndpoints, client: MicrosoftClient, *, allow_private: bool = False,
                 limits: FetchLimits | None = None) -> None:
        self.endpoints, self.client, self.allow_private = endpoints, client, allow_private
        self.limits = limits or FetchLimits()

    def authorise_url(self, *, state: str, code_challenge: str, redirect_uri: str) -> str:
        return authorise_url(self.endpoints, self.client, state=state, code_challenge=code_challenge,
                             redirect_uri=redirect_uri)

    def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> Tokens:
        return exchange_code(self.endpoints, self.client, code=code, code_verifier=code_verifier,
                             redirect_uri=redirect_uri, allow_private=self.allow_private, limits=self.limits)

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
