"""The Microsoft identity platform through msal (issue 12): the sign-in (authorization code flow
with PKCE S256 and an OpenID Connect nonce), the refresh of a staff member's tokens, and the
client credentials grant of the company-wide connection.

- One `ConfidentialClientApplication` per conversation, made only when a token is needed: msal
  fetches the tenant's OpenID configuration (<login base>/<tenant>/v2.0/.well-known/
  openid-configuration) as it is made, and that is where it learns the sign-in and token
  addresses. `instance_discovery=False`: msal would otherwise ask login.microsoftonline.com
  whether another host is a known authority (the login base is a setting). `azure_region=False`:
  no regional token service, and no probe of a cloud metadata address, whatever REGION_NAME or
  MSAL_FORCE_REGION say.
- msal's HTTP is the conversation's: `http_client` is `GuardedHttp`, whose GET and POST are
  requests of the caller's guarded session (address checks, answer caps, the wall-clock
  deadline, the per-mailbox cap of microsoft_api.GraphApi.send). msal insists on an https
  authority; which certificate authorities are trusted is that session's (CALSYNC_MICROSOFT_CA_FILE
  in tests, the system's otherwise).
- What is kept: calsync's `Tokens` (access token, refresh token, expiry, scopes) filled from
  msal's answer and sealed in the vault (feeds.calendars.provider_access), not msal's
  SerializableTokenCache. Why: one sealed shape for Google and Microsoft that every connection
  already stored has (no re-consent, no data migration), read by the disconnect's shared-consent
  check and re-sealed by `calsync rotate-credentials-key`; msal's cache would add the person's ID
  token (name, address) to every connection row, and its account lookup adds nothing where one
  row is one consent. msal's own cache lives for one conversation.
- Refresh: `acquire_token_by_refresh_token` with the stored refresh token; a rotated one comes
  back in the answer and the caller seals it at once. `invalid_grant` / `interaction_required`
  (AADSTS700082: unused for 90 days; consent revoked; MFA now required) is ReconnectNeeded.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msal
from msal.exceptions import MsalServiceError

from calsync.feeds.calendars.providers.base import ReconnectNeeded, Tokens, tokens_from_answer
from calsync.feeds.calendars.store import StoreUnavailable

PROVIDER = "Microsoft 365"
# Delegated permissions, the least that works (issue 12): events read/write and the signed-in
# user's profile (which mailbox this is). msal adds `openid profile offline_access` itself (the
# last brings the refresh token) and refuses them in this list.
SCOPES = ("https://graph.microsoft.com/Calendars.ReadWrite", "https://graph.microsoft.com/User.Read")
# The token endpoint's answers only the person can fix by signing in again (AADSTS700082:
# refresh token expired after 90 days unused; AADSTS50173/50076: password changed, MFA needed).
RECONNECT_ERRORS = frozenset({"invalid_grant", "interaction_required"})
HINT = "check the application (client) id, secret and tenant in the settings."
# The documented parts of msal's flow that are not sealed in the state: the sign-in address
# (used once, to send the person there) and the state itself (the callback brings it back).
_PUBLIC_FLOW_KEYS = ("auth_uri", "state")

Send = Callable[..., Any]  # (method, url, **kwargs) -> a response, as GraphApi.send


class GuardedHttp:
    """msal's `http_client` (a requests-like object: get, post, close): every request is one of
    the conversation's, through its guarded session."""

    def __init__(self, send: Send) -> None:
        self._send = send

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._send("POST", url, **kwargs)

    def close(self) -> None:
        """The guarded session belongs to the conversation, which closes it."""


@contextmanager
def _asking() -> Iterator[None]:
    """msal's own failures as calsync's: a 5xx of the token endpoint (MsalServiceError) or an
    answer that is not JSON is the provider's temporary problem."""
    try:
        yield
    except MsalServiceError as exc:
        raise StoreUnavailable("http_status", f"{PROVIDER}'s sign-in service had a temporary problem; "
                                              "try again in a moment.") from exc
    except json.JSONDecodeError as exc:
        raise StoreUnavailable("unreadable", f"{PROVIDER}'s sign-in service gave an answer calsync "
                                             "could not read; try again in a moment.") from exc


class Identity:
    """The operator's (or a company's) app registration talking to the identity platform,
    for one conversation."""

    def __init__(self, authority: str, client_id: str, client_secret: str, send: Send) -> None:
        try:
            self.app = msal.ConfidentialClientApplication(
                client_id, client_credential=client_secret, authority=authority,
                http_client=GuardedHttp(send), instance_discovery=False, azure_region=False,
                token_cache=msal.SerializableTokenCache())
        except (ValueError, MsalServiceError) as exc:
            # Not https, an unknown tenant (4xx), or a configuration that is not JSON.
            raise StoreUnavailable("auth", f"{PROVIDER}'s sign-in service gave no configuration for "
                                           f"{authority}: check the tenant and "
                                           "CALSYNC_MICROSOFT_LOGIN_BASE_URL.") from exc

    def begin(self, redirect_uri: str, seal: Callable[[dict[str, Any]], str]) -> str:
        """The sign-in address of a new auth code flow (PKCE S256 and the nonce are msal's).
        `seal` turns the flow's secret part (verifier, nonce, scopes, redirect address) into
        calsync's sealed state, which is sent as the flow's `state`: the secrets travel sealed in
        it, never in clear, and nothing is kept on the server but the state's single-use row.
        The answer comes back to a GET (`response_mode=query`): calsync's session cookie is
        SameSite=Lax, so a cross-site form_post would arrive without it."""
        with _asking(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*form_post.*")  # chosen, see above
            flow = self.app.initiate_auth_code_flow(list(SCOPES), redirect_uri, prompt="select_account",
                                                    response_mode="query")
        state = seal({k: v for k, v in flow.items() if k not in _PUBLIC_FLOW_KEYS})
        return with_state(str(flow["auth_uri"]), state)

    def finish(self, flow: Mapping[str, Any], state: str, answer: Mapping[str, str]) -> Tokens:
        """The callback's answer (its query) for tokens, with the flow opened from `state`
        (already accepted once for this staff member). A refused or replayed code, or an ID token
        whose nonce is not the flow's, is ReconnectNeeded: the sign-in is started again."""
        with _asking():
            try:
                result = self.app.acquire_token_by_auth_code_flow({**flow, "state": state}, dict(answer))
            except RuntimeError as exc:  # the ID token's nonce is not the one sealed in the state
                raise ReconnectNeeded(PROVIDER) from exc
        return tokens_of(result)

    def refresh(self, refresh_token: str) -> Tokens:
        with _asking():
            result = self.app.acquire_token_by_refresh_token(refresh_token, list(SCOPES))
        return tokens_of(result, refresh_token)

    def for_client(self, scope: str) -> dict[str, Any]:
        """The client credentials grant (the app's own permissions): msal's answer as it is,
        for the caller to name a refusal."""
        with _asking():
            answer: dict[str, Any] = self.app.acquire_token_for_client([scope])
        return answer


def tokens_of(answer: dict[str, Any], sent_refresh_token: str | None = None) -> Tokens:
    """msal's answer as Tokens (msal answers the token endpoint's JSON, or its error, as a
    dict); a refresh that brings no new refresh token keeps the one sent."""
    return tokens_from_answer(PROVIDER, 400 if "error" in answer else 200, answer,
                              {"refresh_token": sent_refresh_token} if sent_refresh_token else {},
                              reconnect_errors=RECONNECT_ERRORS, hint=HINT)


def with_state(address: str, state: str) -> str:
    """`address` with its `state` query parameter replaced (RFC 6749 §4.1.1)."""
    parts = urlsplit(address)
    query = [(k, state if k == "state" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))
