"""A stateful contract fake of the Microsoft Graph v1.0 calendar endpoints calsync uses and of
the Microsoft identity platform's token endpoint, as a small Flask app on loopback.

Written from Microsoft's published reference (learn.microsoft.com/graph/api: event-delta,
calendar-list-calendarview, event-get, user-post-events, event-update, event-delete;
"Get incremental changes to events in a calendar view", "Microsoft Graph throttling guidance",
"Outlook extended properties overview", "Microsoft identity platform and OAuth 2.0 authorization
code flow"). It is a contract fake, not Microsoft: what it models is listed here, and nothing
else should be assumed.

- Events are stored as calendarView gives them: instances (singleInstance, occurrence,
  exception — with seriesMasterId), times in UTC (`Prefer: outlook.timezone="UTC"`), an
  `@odata.etag` W/"<changeKey>" and `changeKey` that change on every write, and the zone the
  organiser used in originalStartTimeZone / originalEndTimeZone (Windows names or IANA).
- calendarView/delta?startDateTime&endDateTime: pages of `Prefer: odata.maxpagesize` with
  @odata.nextLink ($skiptoken); the last page has @odata.deltaLink ($deltatoken, which carries
  the window). A deltaLink round answers what was written since: changed events in full,
  deleted ones (or ones moved out of the window) as {"id", "@removed": {"reason"}}. An unknown
  or expired $deltatoken is 410 with code syncStateNotFound.
- GET /events/{id} ($expand of singleValueExtendedProperties: they are only returned when
  expanded), GET /events?$filter on one single-value extended property, POST /events
  (`transactionId`: a second POST with the same one returns the first event), PATCH and DELETE
  with If-Match → 412 ErrorIrresolvableConflict on another etag; 404 ErrorItemNotFound.
- Served over TLS on loopback (tests/fakes/tls.py: a trustme CA, whose PEM file is
  `ServedGraph.ca_file`), because msal only talks to an https authority. The identity platform
  as msal reads it ("OpenID Connect on the Microsoft identity platform"): the tenant's OpenID
  configuration at /{tenant}/v2.0/.well-known/openid-configuration (`discovered` counts the
  reads; a tenant in `unknown_tenants` is 400 AADSTS90002), the sign-in at
  /{tenant}/oauth2/v2.0/authorize, the token endpoint /{tenant}/oauth2/v2.0/token:
  authorization_code with PKCE S256 and refresh_token grants; with `openid` among the scopes
  the answer carries an ID token (its `nonce` the one the sign-in was asked with; not signed:
  msal no longer validates ID tokens and calsync reads none) and `client_info`; refresh tokens
  rotate; `expire_refresh_tokens()` answers invalid_grant with the
  AADSTS700082 text. Access tokens expire on the fake's clock (401 InvalidAuthenticationToken).
  Token requests are not Graph requests (not in `log`): `token_requests` records each one's
  tenant, grant_type and answer status.
- Zones in a request's dateTimeTimeZone: IANA names, and the Windows names of `WINDOWS_ZONES`
  (the fake's own small table, so that it never reads zones with calsync's own code); any
  other name is refused with 400, as Graph refuses a zone it does not know.
- Faults: `fail_next(status, code, retry_after)` (429 + Retry-After, 503, 403
  ErrorAccessDenied, ...); `refused_users` answers 403 ErrorAccessDenied for /users/{address}.
- The company-wide connection ("Microsoft identity platform and the OAuth 2.0 client
  credentials flow"): `register_app(tenant)` gives an app's client id and secret in that
  tenant; the client_credentials grant asks for `https://graph.microsoft.com/.default` and gets
  an app-only token (no refresh token). App-only tokens reach `/users/{address}/...` only
  (`/me` is 400, as Graph answers it); an address in `refused_users` (outside the tenant's
  application access policy / RBAC for Applications scope) is 403 ErrorAccessDenied, one in
  `unknown_users` 404 ErrorInvalidUser. Every mailbox reaches the one calendar the fake keeps.
- `latency` seconds per API request and `max_in_flight`, the most requests it served at once
  for one mailbox (the server has a thread per connection, so a cap of 4 is calsync's).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, Response, jsonify, request

from calsync.feeds.calendars.providers.base import Tokens
from calsync.feeds.calendars.providers.microsoft import GraphCalendarStore, open_graph_store
from calsync.feeds.calendars.providers.microsoft_api import MicrosoftClient, MicrosoftEndpoints
from calsync.feeds.sources.fetch import FetchLimits
from tests.fakes import tls
from tests.fakes.google_calendar import _consent_page

Event = dict[str, Any]
_FILTER = re.compile(r"^singleValueExtendedProperties/Any\(ep: ep/id eq '((?:[^']|'')*)' "
                     r"and ep/value eq '((?:[^']|'')*)'\)$")
_CALENDAR = r"(?:me|users/(?P<user>[^/]+))/(?:calendar|calendars/(?P<cal>[^/]+))"
# Windows zone names Graph accepts, and their IANA zones (CLDR's windowsZones.xml, territory
# "001"): the ones the tests send, written out here rather than read from calsync.
WINDOWS_ZONES = {
    "UTC": "UTC", "tzone://Microsoft/Utc": "UTC", "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest", "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago", "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo", "AUS Eastern Standard Time": "Australia/Sydney",
}


@dataclass
class Fault:
    status: int
    code: str
    retry_after: str | None


@dataclass
class FakeMailbox:
    events: dict[str, Event] = field(default_factory=dict)
    written_at: dict[str, int] = field(default_factory=dict)  # id → revision of the last write
    removed_at: dict[str, int] = field(default_factory=dict)  # id → revision of the deletion
    by_transaction: dict[str, str] = field(default_factory=dict)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")


class MicrosoftGraphFake:
    CLIENT_ID = "5f2c6c1e-0000-4000-8000-00000000ca15"
    CLIENT_SECRET = "fake~client~secret"  # noqa: S105 - the fake's own
    TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # the consumer tenant's id: the account's directory
    USER_ID = "6e7b768e-07e2-4810-8459-485f84f8f204"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.offset = 0.0  # the controllable clock: seconds added to the real one
        self.mailbox = FakeMailbox()  # one calendar: the signed-in user's default one
        self.revision = 0
        self.oldest_token = 0
        self._keys = itertools.count(1)
        self.access: dict[str, float] = {}
        self.refresh_tokens: dict[str, bool] = {}
        self.refresh_expired = False
        self.codes: dict[str, dict[str, str]] = {}
        self.discovered = 0  # reads of an OpenID configuration
        self.unknown_tenants: set[str] = set()  # tenants whose OpenID configuration is 400
        self.faults: list[Fault] = []
        self.refused_users: set[str] = set()
        self.unknown_users: set[str] = set()
        self.apps: dict[str, tuple[str, str]] = {}  # client id → (secret, tenant): client credentials
        self.app_tokens: set[str] = set()  # access tokens without a signed-in user
        # GET /me/calendars (calendar resources); every calendar id reaches the same events.
        self.calendars: list[dict[str, Any]] = [
            {"id": "AAMkAGcal-default", "name": "Calendar", "color": "auto", "hexColor": "#e74856",
             "isDefaultCalendar": True, "canEdit": True, "canShare": True, "canViewPrivateItems": True},
            {"id": "AAMkAGcal-holidays", "name": "Team holidays", "color": "lightGreen",
             "hexColor": "#7bd148",
             "isDefaultCalendar": False, "canEdit": False, "canShare": False, "canViewPrivateItems": False}]
        self.log: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []  # tenant, grant_type, status of each
        self.address = "zoe@contoso.example"  # the signed-in account (GET /me)
        self.sign_in_screen = False  # True: the sign-in page waits for a click (browser tests)
        self.access_seconds = 3600
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    # --- test-side controls -------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def id_token(self, root: str, nonce: str | None) -> str:
        """An ID token as the identity platform issues it (v2.0 claims), unsigned."""
        now = int(self.now())
        claims: dict[str, Any] = {
            "aud": self.CLIENT_ID, "iss": f"{root}/{self.TENANT_ID}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "name": "Zoe Miller", "preferred_username": self.address, "oid": self.USER_ID,
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "tid": self.TENANT_ID, "ver": "2.0"}
        if nonce:
            claims["nonce"] = nonce
        header = {"typ": "JWT", "alg": "RS256", "kid": "fake"}
        return ".".join([_pack(header), _pack(claims), "fake-signature"])

    def client_info(self) -> str:
        return _pack({"uid": self.USER_ID, "utid": self.TENANT_ID})

    def grant(self) -> tuple[str, str]:
        with self.lock:
            refresh = "M.C5" + secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = True
            return self._new_access(), refresh

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access.clear()

    def expire_refresh_tokens(self) -> None:
        """90 days unused (AADSTS700082), or consent revoked: every refresh is invalid_grant."""
        with self.lock:
            self.refresh_expired = True
            self.access.clear()

    def expire_delta_tokens(self) -> None:
        with self.lock:
            self.oldest_token = self.revision + 1

    def fail_next(self, status: int, code: str = "", retry_after: str | None = None, times: int = 1) -> None:
        with self.lock:
            default = {429: "TooManyRequests", 503: "ServiceUnavailable", 403: "ErrorAccessDenied"}
            self.faults.extend(Fault(status, code or default.get(status, "generalException"), retry_after)
                               for _ in range(times))

    def put_event(self, start: datetime, end: datetime, *, zone: str = "UTC", **more: Any) -> Event:
        """Someone writes in Outlook directly: `zone` is the organiser's (Windows or IANA name)."""
        with self.lock:
            event = {"id": "AAMkAG" + secrets.token_urlsafe(30), "subject": "Dentist",
                     "type": "singleInstance",
                     "start": {"dateTime": utc_text(start), "timeZone": "UTC"},
                     "end": {"dateTime": utc_text(end), "timeZone": "UTC"},
                     "originalStartTimeZone": zone, "originalEndTimeZone": zone, "isAllDay": False,
                     "showAs": "busy", "isCancelled": False, **copy.deepcopy(more)}
            return self._store(event)

    def patch_event(self, event_id: str, changes: Event) -> Event:
        with self.lock:
            return self._store({**self.mailbox.events[event_id], **copy.deepcopy(changes)})

    def delete_event(self, event_id: str) -> None:
        with self.lock:
            self._remove(event_id)

    def requests_to(self, method: str, path_part: str = "") -> list[dict[str, Any]]:
        return [r for r in self.log if r["method"] == method and path_part in r["path"]]

    def register_app(self, tenant: str) -> tuple[str, str]:
        """An app registration in `tenant` with a client secret and application permissions."""
        client_id, secret = str(uuid.uuid4()), "Q~" + secrets.token_urlsafe(30)
        with self.lock:
            self.apps[client_id] = (secret, tenant)
        return client_id, secret

    # --- inside -------------------------------------------------------------------------------

    def _new_access(self) -> str:
        token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(24)
        self.access[token] = self.now() + self.access_seconds
        return token

    def _store(self, event: Event) -> Event:
        self.revision += 1
        key = base64.b64encode(f"calsync-fake-{next(self._keys)}".encode()).decode()
        stamp = datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        event.setdefault("createdDateTime", stamp)
        event.setdefault("iCalUId", "040000008200E00074C5B7101A82E008" + hashlib.sha256(
            event["id"].encode()).hexdigest()[:32].upper())
        event.update({"@odata.etag": f'W/"{key}"', "changeKey": key, "lastModifiedDateTime": stamp})
        self.mailbox.events[event["id"]] = event
        self.mailbox.written_at[event["id"]] = self.revision
        self.mailbox.removed_at.pop(event["id"], None)
        return copy.deepcopy(event)

    def _remove(self, event_id: str) -> None:
        self.revision += 1
        del self.mailbox.events[event_id]
        self.mailbox.written_at.pop(event_id, None)
        self.mailbox.removed_at[event_id] = self.revision


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # Graph's error resource: {"error": {"code", "message", "innerError": {...}}}
    inner = {"request-id": secrets.token_hex(8), "date": "2026-12-06T00:00:00"}
    response = jsonify({"error": {"code": code, "message": message, "innerError": inner}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _in_window(event: Event, start: str, end: str) -> bool:
    # calendarView: events that overlap [start, end); both sides are UTC texts of one shape.
    return event["start"]["dateTime"][:19] < end[:19] and event["end"]["dateTime"][:19] > start[:19]


def _pack(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _unpack(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class UnknownZone(ValueError):
    """A dateTimeTimeZone whose zone the fake does not know."""


def fake_zone(name: str | None) -> ZoneInfo:
    """A zone as Graph reads a request's timeZone: a Windows name of WINDOWS_ZONES or an IANA
    name (no name: UTC)."""
    key = WINDOWS_ZONES.get(name or "UTC", name or "UTC")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownZone(str(name)) from exc


def _from_request(value: dict[str, str]) -> dict[str, str]:
    """A dateTimeTimeZone as sent (any zone) → stored in UTC."""
    moment = datetime.fromisoformat(value["dateTime"][:26])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=fake_zone(value.get("timeZone")))
    return {"dateTime": utc_text(moment), "timeZone": "UTC"}


def _unknown_zone(exc: UnknownZone) -> Response:
    return _error(400, "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified. "
                  f"The following TimeZone value is not supported: '{exc}'.")


def create_app(fake: MicrosoftGraphFake) -> Flask:  # noqa: C901 - one route per documented endpoint
    app = Flask("microsoft_graph_fake")

    @app.before_request
    def check() -> Response | None:
        if not request.path.startswith("/v1.0/"):
            return None
        with fake.lock:
            entry = {"method": request.method, "path": request.path, "params": request.args.to_dict(),
                     "body": request.get_json(silent=True), "headers": dict(request.headers)}
            fake.log.append(entry)
            request.environ["fake.entry"] = entry
            if fake.faults:
                fault = fake.faults.pop(0)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, fault.code, "Injected by the test.", headers)
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if fake.access.get(token, 0) <= fake.now():
                return _error(401, "InvalidAuthenticationToken",
                              "Lifetime validation failed, the token is expired.")
            if token in fake.app_tokens and request.path.startswith("/v1.0/me"):
                return _error(400, "BadRequest",
                              "/me request is only valid with delegated authentication flow.")
            match = re.match(r"^/v1\.0/users/([^/]+)/", request.path)
            if match and match.group(1).lower() in fake.refused_users:
                return _error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            if match and match.group(1).lower() in fake.unknown_users:
                return _error(404, "ErrorInvalidUser", f"The requested user '{match.group(1)}' is invalid.")
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        if fake.latency:
            time.sleep(fake.latency)
        request.environ["fake.counted"] = True
        return None

    app.register_error_handler(UnknownZone, _unknown_zone)

    @app.after_request
    def remember(response: Response) -> Response:
        token_path = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", request.path)
        if token_path:
            with fake.lock:
                fake.token_requests.append({"tenant": token_path.group(1),
                                            "grant_type": request.form.get("grant_type"),
                                            "status": response.status_code})
        if request.path.startswith("/v1.0/"):
            with fake.lock:
                if request.environ.pop("fake.counted", False):
                    fake.in_flight -= 1
                entry = request.environ.get("fake.entry")
                if entry is not None:
                    entry["status"] = response.status_code
        return response

    # --- identity platform --------------------------------------------------------------------

    @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
    def openid_configuration(tenant: str) -> Any:
        """The tenant's OpenID Provider Metadata (OIDC Discovery 1.0 §3), what msal reads as
        it is made; any tenant name is known to the fake."""
        root = request.host_url.rstrip("/")
        with fake.lock:
            fake.discovered += 1
            if tenant in fake.unknown_tenants:
                return jsonify(error="invalid_tenant", error_codes=[90002],
                               error_description=f"AADSTS90002: Tenant '{tenant}' not found."), 400
        issuer_tenant = "{tenantid}" if tenant in ("common", "organizations", "consumers") else tenant
        return jsonify({
            "issuer": f"{root}/{issuer_tenant}/v2.0",
            "authorization_endpoint": f"{root}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/{tenant}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/{tenant}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{root}/{tenant}/oauth2/v2.0/logout",
            "jwks_uri": f"{root}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "preferred_username",
                                 "oid", "tid", "ver"],
            "tenant_region_scope": None, "cloud_instance_name": "microsoftonline.com"})

    def user_tokens(form: Any, nonce: str | None = None) -> Any:
        """A delegated grant's answer: tokens, and with `openid` asked an ID token and client_info."""
        access, refresh = fake.grant()
        answer: dict[str, Any] = {"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
                                  "expires_in": fake.access_seconds, "ext_expires_in": fake.access_seconds,
                                  "scope": form.get("scope", "")}
        if "openid" in form.get("scope", "").split():
            answer["id_token"] = fake.id_token(request.host_url.rstrip("/"), nonce)
            if form.get("client_info") == "1":
                answer["client_info"] = fake.client_info()
        return jsonify(answer)

    @app.post("/<tenant>/oauth2/v2.0/token")
    def token(tenant: str) -> Any:
        form = request.form
        if form.get("grant_type") == "client_credentials":
            return client_credentials(tenant, form)
        if form.get("client_id") != fake.CLIENT_ID or form.get("client_secret") != fake.CLIENT_SECRET:
            return jsonify(error="invalid_client", error_codes=[7000215],
                           error_description="AADSTS7000215: Invalid client secret provided."), 401
        with fake.lock:
            if form.get("grant_type") == "authorization_code":
                issued = fake.codes.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if issued is None or issued["challenge"] != challenge \
                        or issued["redirect_uri"] != form.get("redirect_uri"):
                    return jsonify(error="invalid_grant", error_codes=[70008],
                                   error_description="AADSTS70008: The provided authorization code or "
                                                     "refresh token has expired due to inactivity."), 400
                return user_tokens(form, issued.get("nonce"))
            if form.get("grant_type") == "refresh_token":
                old = form.get("refresh_token", "")
                if fake.refresh_expired or not fake.refresh_tokens.get(old):
                    return jsonify(error="invalid_grant", error_codes=[700082],
                                   error_description="AADSTS700082: The refresh token has expired due to "
                                                     "inactivity. The token was issued on 2026-09-01 and was "
                                                     "inactive for 90.00:00:00."), 400
                return user_tokens(form)  # refresh tokens rotate
        return jsonify(error="unsupported_grant_type"), 400

    def client_credentials(tenant: str, form: Any) -> Any:
        with fake.lock:
            app_entry = fake.apps.get(form.get("client_id", ""))
            if app_entry is None or app_entry[1] != tenant:
                return jsonify(error="unauthorized_client", error_codes=[700016],
                               error_description=f"AADSTS700016: Application with identifier "
                                                 f"'{form.get('client_id', '')}' was not found in the "
                                                 f"directory '{tenant}'."), 400
            if form.get("client_secret") != app_entry[0]:
                return jsonify(error="invalid_client", error_codes=[7000215],
                               error_description="AADSTS7000215: Invalid client secret provided."), 401
            if form.get("scope") != "https://graph.microsoft.com/.default":
                return jsonify(error="invalid_scope", error_codes=[1002012],
                               error_description="AADSTS1002012: The provided value for scope is not "
                                                 "valid. Client credential flows must have a scope value "
                                                 "with /.default suffixed to the resource identifier."), 400
            access = fake._new_access()
            fake.app_tokens.add(access)
            return jsonify(token_type="Bearer", access_token=access, expires_in=fake.access_seconds,
                           ext_expires_in=fake.access_seconds)

    @app.get("/<tenant>/oauth2/v2.0/authorize")
    def authorize(tenant: str) -> Any:
        """The sign-in, approved at once (response_mode=query), or with `fake.sign_in_screen`
        a page with "Allow" and "Cancel" for a browser test (Cancel: access_denied)."""
        if fake.sign_in_screen and request.args.get("decision") is None:
            return _consent_page("Microsoft", "Let calsync access your info?",
                                 request.args.get("scope", "").split(), request.args)
        if request.args.get("decision") == "cancel":
            query = urlencode({"error": "access_denied", "state": request.args.get("state", "")})
            return Response(status=302, headers={"Location": request.args["redirect_uri"] + "?" + query})
        code = secrets.token_urlsafe(16)
        with fake.lock:
            fake.codes[code] = {"challenge": request.args["code_challenge"],
                                "redirect_uri": request.args["redirect_uri"],
                                "nonce": request.args.get("nonce", "")}
        query = urlencode({"code": code, "state": request.args.get("state", "")})
        return Response(status=302, headers={"Location": request.args["redirect_uri"] + "?" + query})

    # --- Graph --------------------------------------------------------------------------------

    def not_found() -> Response:
        return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def answer_event(event: Event) -> Event:
        out = copy.deepcopy(event)
        if "singleValueExtendedProperties" not in request.args.get("$expand", ""):
            out.pop("singleValueExtendedProperties", None)  # only returned when expanded
        return out

    @app.get("/v1.0/<path:rest>")
    def read(rest: str) -> Any:
        if rest == "me":  # user: get (User.Read), the signed-in account's addresses
            return jsonify({"@odata.context": "fake", "id": "6e7b768e-07e2-4810-8459-485f84f8f204",
                            "displayName": "Zoe Miller", "mail": fake.address,
                            "userPrincipalName": fake.address})
        if rest == "me/calendars" or re.fullmatch(r"users/[^/]+/calendars", rest):
            return jsonify({"@odata.context": "fake", "value": copy.deepcopy(fake.calendars)})
        if re.fullmatch(_CALENDAR, rest):  # the calendar resource itself (calendar-get)
            return jsonify({"@odata.context": "fake", **copy.deepcopy(fake.calendars[0])})
        delta = re.fullmatch(_CALENDAR + r"/calendarView/delta", rest)
        if delta:
            return calendar_view_delta()
        one = re.fullmatch(_CALENDAR + r"/events/(?P<id>[^/]+)", rest)
        if one:
            with fake.lock:
                event = fake.mailbox.events.get(one.group("id"))
                if event is None:
                    return not_found()
                return jsonify(answer_event(event))
        if re.fullmatch(_CALENDAR + r"/events", rest):
            match = _FILTER.match(request.args.get("$filter", ""))
            if match is None:
                return _error(400, "BadRequest", "The fake filters on one extended property only.")
            prop, value = (g.replace("''", "'") for g in match.groups())
            with fake.lock:
                found = [{"id": e["id"]} for e in fake.mailbox.events.values()
                         if any(p["id"] == prop and p["value"] == value
                                for p in e.get("singleValueExtendedProperties") or [])]
            return jsonify({"@odata.context": "fake", "value": found})
        return _error(404, "ResourceNotFound", "Resource not found for the segment.")

    def calendar_view_delta() -> Any:
        args = request.args
        size = 10
        prefer = request.headers.get("Prefer", "")
        wanted = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if wanted:
            size = int(wanted.group(1))
        with fake.lock:
            state: dict[str, Any] | None
            if "$deltatoken" in args:
                state = _unpack(args["$deltatoken"])
                if state is None or not fake.oldest_token <= int(state.get("r", -1)) <= fake.revision:
                    return _error(410, "syncStateNotFound", "The sync state generation is not found.")
                state = {**state, "since": state["r"], "at": 0, "r": fake.revision}
            elif "$skiptoken" in args:
                state = _unpack(args["$skiptoken"])
                if state is None:
                    return _error(400, "syncStateInvalid", "The skip token is not valid.")
            elif "startDateTime" in args and "endDateTime" in args:
                state = {"s": args["startDateTime"], "e": args["endDateTime"], "since": None, "at": 0,
                         "r": fake.revision}
            else:
                return _error(400, "ErrorInvalidParameter", "startDateTime and endDateTime are required.")
            box = fake.mailbox
            items: list[Event] = []
            if state["since"] is None:
                ids = sorted((i for i, e in box.events.items() if _in_window(e, state["s"], state["e"])),
                             key=lambda i: box.written_at[i])
                items = [answer_event(box.events[i]) for i in ids]
            else:
                touched = [(rev, i) for i, rev in {**box.written_at, **box.removed_at}.items()
                           if state["since"] < rev]
                for _rev, event_id in sorted(touched):
                    event = box.events.get(event_id)
                    if event is not None and _in_window(event, state["s"], state["e"]):
                        items.append(answer_event(event))
                    else:
                        reason = "deleted" if event is None else "changed"
                        items.append({"@odata.type": "#microsoft.graph.event", "id": event_id,
                                      "@removed": {"reason": reason}})
            page = items[state["at"]:state["at"] + size]
            base = request.base_url
            answer: dict[str, Any] = {"@odata.context": "fake", "value": page}
            if state["at"] + size < len(items):
                answer["@odata.nextLink"] = base + "?" + urlencode({"$skiptoken": _pack(
                    {**state, "at": state["at"] + size})}, safe="$")
            else:
                answer["@odata.deltaLink"] = base + "?" + urlencode({"$deltatoken": _pack(
                    {"s": state["s"], "e": state["e"], "r": state["r"]})}, safe="$")
            return jsonify(answer)

    @app.post("/v1.0/<path:rest>")
    def create(rest: str) -> Any:
        if not re.fullmatch(_CALENDAR + r"/events", rest):
            return _error(404, "ResourceNotFound", "Resource not found for the segment.")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "start" not in body or "end" not in body:
            return _error(400, "ErrorInvalidRequest",
                          "Your request can't be completed. Start and end are required.")
        with fake.lock:
            earlier = fake.mailbox.by_transaction.get(str(body.get("transactionId")))
            if earlier is not None and earlier in fake.mailbox.events:
                response = jsonify(answer_event(fake.mailbox.events[earlier]))  # the retried POST
                response.status_code = 201
                return response
            event = {**body, "id": "AAMkAG" + secrets.token_urlsafe(30), "type": "singleInstance",
                     "start": _from_request(body["start"]), "end": _from_request(body["end"]),
                     "originalStartTimeZone": body["start"].get("timeZone", "UTC"),
                     "originalEndTimeZone": body["end"].get("timeZone", "UTC"), "isCancelled": False}
            stored = fake._store(event)
            if body.get("transactionId"):
                fake.mailbox.by_transaction[str(body["transactionId"])] = stored["id"]
            response = jsonify(answer_event(stored))
            response.status_code = 201
            return response

    def conditional(rest: str) -> tuple[str | None, Response | None]:
        match = re.fullmatch(_CALENDAR + r"/events/(?P<id>[^/]+)", rest)
        event_id = match.group("id") if match else ""
        if event_id not in fake.mailbox.events:
            return None, not_found()
        if_match = request.headers.get("If-Match")
        if if_match and if_match != fake.mailbox.events[event_id]["@odata.etag"]:
            return None, _error(412, "ErrorIrresolvableConflict", "The send or update operation could not be "
                                "performed because the change key passed in the request does not match the "
                                "current change key for the item.")
        return event_id, None

    @app.patch("/v1.0/<path:rest>")
    def update(rest: str) -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "Unable to read JSON request payload.")
        with fake.lock:
            event_id, refused = conditional(rest)
            if refused is not None:
                return refused
            assert event_id is not None
            new = {**fake.mailbox.events[event_id], **body}
            for key in ("start", "end"):
                if key in body:
                    new[key] = _from_request(body[key])
                    new["original" + key.title() + "TimeZone"] = body[key].get("timeZone", "UTC")
            if "singleValueExtendedProperties" in body:  # merged by id, as Graph does
                old = fake.mailbox.events[event_id].get("singleValueExtendedProperties") or []
                props = {p["id"]: p for p in old}
                props.update({p["id"]: p for p in body["singleValueExtendedProperties"]})
                new["singleValueExtendedProperties"] = list(props.values())
            return jsonify(answer_event(fake._store(new)))

    @app.delete("/v1.0/<path:rest>")
    def delete(rest: str) -> Any:
        with fake.lock:
            event_id, refused = conditional(rest)
            if refused is not None:
                return refused
            assert event_id is not None
            fake._remove(event_id)
            return "", 204

    return app


@dataclass
class ServedGraph:
    fake: MicrosoftGraphFake
    url: str  # the fake's https root: Graph at url/v1.0, the identity platform at url/<tenant>/...
    ca_file: str = field(default_factory=tls.ca_file)  # trusted by calsync (CALSYNC_MICROSOFT_CA_FILE)

    def endpoints(self) -> MicrosoftEndpoints:
        return MicrosoftEndpoints(graph_base=self.url + "/v1.0", login_base=self.url, tenant="common",
                                  ca_file=self.ca_file)


@contextmanager
def serve_graph_fake(fake: MicrosoftGraphFake | None = None, app: Flask | None = None
                     ) -> Iterator[ServedGraph]:
    """A fresh fake (or `fake` with its `app`) over TLS on loopback for one test; a thread per
    connection, so that the fake never caps concurrency itself."""
    fake = fake or MicrosoftGraphFake()
    with tls.serve_tls(app or create_app(fake)) as url:
        yield ServedGraph(fake, url)


CLIENT = MicrosoftClient(MicrosoftGraphFake.CLIENT_ID, MicrosoftGraphFake.CLIENT_SECRET)


@contextmanager
def open_fake_graph_store(served: ServedGraph, calendar_id: str = "primary", *, tokens: Tokens | None = None,
                          mailbox: str | None = None, user: str | None = None,
                          sleep: Callable[[float], None] | None = None,
                          window: tuple[datetime, datetime] | None = None,
                          limits: FetchLimits | None = None) -> Iterator[GraphCalendarStore]:
    """The store calsync opens on the fake, with tokens fresh from a sign-in unless given."""
    if tokens is None:
        access, refresh = served.fake.grant()
        tokens = Tokens(access, refresh, time.time() + 3600)
    with open_graph_store(served.endpoints(), CLIENT, tokens, calendar_id,
                          mailbox=mailbox or f"{served.url} zoe", user=user, allow_private=True,
                          limits=limits or FetchLimits(), window=window,
                          sleep=sleep or (lambda _s: None)) as store:
        yield store
