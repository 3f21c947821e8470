"""The company-wide Google Workspace connection (issue 11, "corporate" mode): a service account
with domain-wide delegation reaches every staff member's calendar by acting as them, with no
action by the staff member. Verified against tests/fakes/google_calendar.py only.

Access tokens come from the JWT-bearer grant (RFC 7523 §2.1; Google's "Using OAuth 2.0 for
Server to Server Applications"): an assertion signed RS256 with the service account's private
key, `iss` = the account, `sub` = the staff member's address, `aud` = the token endpoint,
an hour at most. The signing is google-auth's (`google.auth.crypt` / `google.auth.jwt`), the
token request ours, on the guarded session like every other request to Google: google-auth's
own transports (requests, urllib3) would go around the address checks and caps.

The token endpoint is the configured one (CALSYNC_GOOGLE_TOKEN_URL), never the key file's
`token_uri`: an uploaded file must not choose where calsync sends a signed assertion.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.auth import crypt
from google.auth import jwt as google_jwt

from calsync.feeds.calendars.providers.base import (
    AccountRefused,
    MemberRefused,
    TokenCache,
    tokens_from_answer,
)
from calsync.feeds.calendars.providers.google import GoogleCalendarStore
from calsync.feeds.calendars.providers.google_api import (
    PROVIDER,
    SCOPES,
    GoogleApi,
    GoogleClient,
    GoogleEndpoints,
    json_of,
)
from calsync.feeds.calendars.store import StoreUnavailable
from calsync.feeds.errors import ValidationError
from calsync.feeds.sources.fetch import FetchLimits, GuardedResolver, GuardedSession

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600  # Google's maximum lifetime of an assertion
NO_CLIENT = GoogleClient("", "")  # the service account signs; no OAuth client is involved


@dataclass(frozen=True)
class ServiceAccountKey:
    """The JSON key file of a service account, as the Cloud console hands it out."""

    client_email: str
    client_id: str
    private_key_id: str
    info: dict[str, str]  # the whole file: what is sealed in the vault

    @property
    def signer(self) -> crypt.Signer:
        return crypt.RSASigner.from_service_account_info(self.info)


def read_service_account_key(text: str) -> ServiceAccountKey:
    """The uploaded key file, or a sentence saying what is wrong with it."""
    try:
        info = json.loads(text)
    except ValueError:
        raise ValidationError("That file is not a JSON key file: in the Google Cloud console open the "
                              "service account, Keys → Add key → Create new key → JSON, and upload the "
                              "file it downloads.", "key_file") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValidationError("That JSON file is not a service account key (its \"type\" is not "
                              "\"service_account\"); an OAuth client file does not work here.", "key_file")
    missing = [f for f in ("client_email", "client_id", "private_key_id", "private_key") if not info.get(f)]
    if missing:
        raise ValidationError(f"The key file lacks {', '.join(missing)}; download a new JSON key.",
                              "key_file")
    try:
        crypt.RSASigner.from_service_account_info(info)
    except (ValueError, TypeError):
        raise ValidationError("The key file's private key cannot be read; download a new JSON key.",
                              "key_file") from None
    return ServiceAccountKey(str(info["client_email"]), str(info["client_id"]), str(info["private_key_id"]),
                             {k: str(v) for k, v in info.items()})


def signed_assertion(key: ServiceAccountKey, subject: str, token_url: str, now: float,
                     scopes: tuple[str, ...] = SCOPES) -> str:
    """RFC 7523 §3's claims, signed RS256; the key id lets Google pick the public key."""
    payload = {"iss": key.client_email, "sub": subject, "aud": token_url, "scope": " ".join(scopes),
               "iat": int(now), "exp": int(now) + ASSERTION_SECONDS}
    return google_jwt.encode(key.signer, payload, key_id=key.private_key_id).decode("ascii")


def _refusal(subject: str, who: str, key: ServiceAccountKey, status: int,
             answer: dict[str, Any]) -> StoreUnavailable:
    error = str(answer.get("error", ""))
    description = str(answer.get("error_description", ""))
    if error == "unauthorized_client":
        return MemberRefused(error, (
            f"{who} is not in the domain-wide delegation of the service account {key.client_email}: "
            f"in the Google Admin console (Security → Access and data control → API controls → "
            f"Domain-wide delegation) allow client id {key.client_id} the scopes {', '.join(SCOPES)}, "
            f"and make sure {subject} belongs to your Google Workspace."))
    if error == "invalid_grant" and "email or user id" in description.lower():
        return MemberRefused("invalid_grant", f"{who} is not a user of your Google Workspace ({subject} was "
                                               "not found): check the staff member's email address.")
    return AccountRefused(f"{PROVIDER} refused the service account {key.client_email} "
                          f"({error or status}: {description or 'no reason given'}); its key may have been "
                          "deleted or disabled: upload a new JSON key.")


# per (service account key, subject): Google allows an hour per token
TOKENS = TokenCache()


class DelegatedGoogleApi(GoogleApi):
    """A GoogleApi whose "refresh" is a new JWT-bearer grant for the subject: the 401 rules,
    backoff and 5xx handling of GoogleApi stay as they are."""

    def __init__(self, session: GuardedSession, resolver: GuardedResolver, endpoints: GoogleEndpoints,
                 key: ServiceAccountKey, subject: str, *, who: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.key, self.subject, self.who = key, subject, who or subject
        self._cache_key = (key.client_email, key.private_key_id, subject.lower())
        super().__init__(session, resolver, endpoints, NO_CLIENT, TOKENS.get(self._cache_key), sleep=sleep)

    def refresh(self) -> None:
        form = {"grant_type": JWT_BEARER,
                "assertion": signed_assertion(self.key, self.subject, self.endpoints.token_url, time.time())}
        response = self.send("POST", self.endpoints.token_url, data=form,
                             headers={"Accept": "application/json"})
        answer = json_of(response)
        if response.status_code != 200:
            raise _refusal(self.subject, self.who, self.key, response.status_code, answer)
        self.tokens = tokens_from_answer(PROVIDER, response.status_code, answer, form,
                                         hint="upload the service account's key again.")
        TOKENS.put(self._cache_key, self.tokens)


@contextmanager
def delegated_google_api(endpoints: GoogleEndpoints, key: ServiceAccountKey, subject: str, *,
                         allow_private: bool, limits: FetchLimits, who: str | None = None,
                         sleep: Callable[[float], None] = time.sleep) -> Iterator[DelegatedGoogleApi]:
    resolver = GuardedResolver(allow_private, ports=limits.ports)
    session = GuardedSession(resolver, limits)
    try:
        yield DelegatedGoogleApi(session, resolver, endpoints, key, subject, who=who, sleep=sleep)
    finally:
        session.close()


@contextmanager
def open_delegated_google_store(endpoints: GoogleEndpoints, key: ServiceAccountKey, subject: str,
                                calendar_id: str = "primary", *, allow_private: bool, limits: FetchLimits,
                                max_items: int = 20_000, sleep: Callable[[float], None] = time.sleep,
                                ) -> Iterator[GoogleCalendarStore]:
    """`subject`'s calendar (their primary one unless named) as a store."""
    with delegated_google_api(endpoints, key, subject, allow_private=allow_private, limits=limits,
                              sleep=sleep) as api:
        yield GoogleCalendarStore(api, calendar_id, max_items)


def check_subject(api: GoogleApi, subject: str, who: str | None = None) -> None:
    """Raises MemberRefused/AccountRefused/StoreUnavailable unless `subject`'s primary calendar
    is reachable: a token for them, then one events.list of one event (the least a sync needs)."""
    who = who or subject
    response = api.call("GET", f"/calendars/{quote(subject, safe='@')}/events",
                        params={"maxResults": 1, "singleEvents": "false"})
    if response.status_code == 404:
        raise MemberRefused("notFound", f"{who} has no Google Calendar calsync can reach (notFound): check "
                                         f"that Google Calendar is turned on for {subject} in the Admin "
                                         "console, and that it is their primary address.")
    if response.status_code != 200:
        raise StoreUnavailable("http_status", f"{PROVIDER} answered HTTP {response.status_code} for "
                                              f"{who}'s calendar; try the check again later.")
