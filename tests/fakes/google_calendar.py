"""A stateful contract fake of Google Calendar API v3 (the endpoints calsync uses) and of
Google's OAuth 2.0 endpoints, as a small Flask app on loopback.

Written from the published reference (developers.google.com/calendar/api/v3/reference,
"Synchronize resources efficiently", "Handle API errors", "Using OAuth 2.0 for Web Server
Applications"); its field names are checked against the Calendar v3 discovery document in
tests/integration/test_google_store.py. It is a contract fake, not Google: what it models is
listed here, and nothing else should be assumed.

- Events keep an etag (changes on every write), `updated`, and a revision; deleted events stay
  with status "cancelled" (Google keeps them, and their ids: a new insert with the id is 409).
- events.list: maxResults pages (pageToken), nextSyncToken on the last page only; syncToken
  answers everything written since, deleted ones included; an unknown or expired token is
  410 (reason fullSyncRequired). showDeleted, iCalUID and singleEvents=false are honoured.
- insert with an id (base32hex, 5-1024 characters) → 409 if taken; patch/update/delete with
  If-Match → 412 on another etag.
- OAuth: authorization code with PKCE S256, refresh tokens (invalid_grant once revoked),
  access tokens that expire on the fake's clock (401 then), revocation.
- Faults: `fail_next(status, reason=..., retry_after=...)` answers the next API request with
  that error (403 rateLimitExceeded, 429, 500, 503, ...).
- events.watch / channels.stop with expirations on the fake's clock. This fake delivers no
  notifications itself: tests/fakes/push.py (PushingGoogleFake) extends it to send the `sync`
  and `exists` messages to the channel's address.
- The company-wide connection ("Using OAuth 2.0 for Server to Server Applications", RFC 7523):
  `add_service_account()` makes a service account with an RSA key (the JSON key file as the
  Cloud console hands it out) and the scopes its domain-wide delegation grants;
  `add_workspace_user(email, delegated=..., calendar=...)` a user of the domain. The token
  endpoint's jwt-bearer grant verifies the assertion's RS256 signature against the account's
  public key, its iss/aud/iat/exp (at most an hour, on the fake's clock) and scope: a scope
  outside the delegation, or a subject outside it, is 401 `unauthorized_client`; an unknown
  subject 400 `invalid_grant` ("Invalid email or User ID"); a bad signature 400 `invalid_grant`
  ("Invalid JWT Signature."). Its access tokens act as the subject: `primary` (or the subject's
  address) is the subject's calendar, notFound when the user has none.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Flask, Response, jsonify, redirect, request

from calsync.feeds.calendars.providers.base import Tokens
from calsync.feeds.calendars.providers.google import (
    GoogleCalendarStore,
    GoogleClient,
    GoogleEndpoints,
    open_google_store,
)
from calsync.feeds.calendars.providers.google_api import SCOPES
from calsync.feeds.sources.fetch import FetchLimits
from tests.servers import _serve_wsgi

Event = dict[str, Any]
_ID = re.compile(r"^[a-v0-9]{5,1024}$")  # events.insert: base32hex characters


@dataclass
class FakeCalendar:
    id: str
    summary: str
    access_role: str = "owner"
    events: dict[str, Event] = field(default_factory=dict)
    written_at: dict[str, int] = field(default_factory=dict)  # event id → revision


@dataclass
class Fault:
    status: int
    reason: str | None
    retry_after: str | None


class GoogleCalendarFake:
    CLIENT_ID = "calsync-test.apps.googleusercontent.com"
    CLIENT_SECRET = "fake-client-secret"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.offset = 0.0  # the controllable clock: seconds added to the real one
        self.calendars: dict[str, FakeCalendar] = {}
        self.revision = 0
        self.oldest_token = 0
        self._etags = itertools.count(int(time.time() * 1000))
        self.access: dict[str, float] = {}  # access token → expiry
        self.refresh_tokens: dict[str, bool] = {}  # refresh token → still valid
        self.codes: dict[str, dict[str, str]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []  # every API request and its answer
        self.access_seconds = 3600
        self.service_accounts: dict[str, dict[str, Any]] = {}  # client_email → key, delegated scopes
        self.workspace_users: dict[str, bool] = {}  # address → inside the domain-wide delegation
        self.subjects: dict[str, str] = {}  # access token (jwt-bearer grant) → impersonated address
        self.add_calendar("primary", "Zoe")
        self.consent_screen = False  # True: the consent page waits for a click (browser tests)

    # --- test-side controls -------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def add_calendar(self, cal_id: str, summary: str, access_role: str = "owner") -> FakeCalendar:
        with self.lock:
            self.calendars[cal_id] = FakeCalendar(cal_id, summary, access_role)
            return self.calendars[cal_id]

    def grant(self) -> tuple[str, str]:
        """An access token and a refresh token, as after a consent."""
        with self.lock:
            refresh = "1//" + secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = True
            return self._new_access(), refresh

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access.clear()

    def revoke_consent(self) -> None:
        with self.lock:
            self.refresh_tokens = dict.fromkeys(self.refresh_tokens, False)
            self.access.clear()

    def expire_sync_tokens(self) -> None:
        with self.lock:
            self.oldest_token = self.revision + 1

    def fail_next(self, status: int, reason: str | None = None, retry_after: str | None = None,
                  times: int = 1) -> None:
        with self.lock:
            self.faults.extend(Fault(status, reason, retry_after) for _ in range(times))

    def put_event(self, cal_id: str, event: Event) -> Event:
        """Someone writes in Google Calendar directly (the web app, a phone)."""
        with self.lock:
            event = copy.deepcopy(event)
            event.setdefault("id", secrets.token_hex(13))
            return self._store(self.calendars[cal_id], event)

    def patch_event(self, cal_id: str, event_id: str, changes: Event) -> Event:
        with self.lock:
            cal = self.calendars[cal_id]
            return self._store(cal, {**cal.events[event_id], **copy.deepcopy(changes)})

    def delete_event(self, cal_id: str, event_id: str) -> None:
        with self.lock:
            cal = self.calendars[cal_id]
            self._store(cal, {**cal.events[event_id], "status": "cancelled"})

    def requests_to(self, method: str, path_part: str = "") -> list[dict[str, Any]]:
        return [r for r in self.log if r["method"] == method and path_part in r["path"]]

    def add_service_account(self, token_uri: str, scopes: tuple[str, ...] = SCOPES) -> dict[str, str]:
        """A service account with a new key and domain-wide delegation of `scopes`; returns
        its JSON key file's content (the fields a Cloud console download has)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        number = str(100000000000000000000 + len(self.service_accounts))
        email = f"calsync-sync{len(self.service_accounts)}@salon-project.iam.gserviceaccount.com"
        info = {"type": "service_account", "project_id": "salon-project",
                "private_key_id": secrets.token_hex(20), "private_key": pem,
                "client_email": email, "client_id": number,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
                "universe_domain": "googleapis.com"}
        with self.lock:
            self.service_accounts[email] = {"public_key": key.public_key(), "scopes": set(scopes)}
        return info

    def add_workspace_user(self, email: str, name: str = "", *, delegated: bool = True,
                           calendar: bool = True) -> None:
        with self.lock:
            self.workspace_users[email.lower()] = delegated
            if calendar:
                self.add_calendar(email.lower(), name or email)

    # --- inside -------------------------------------------------------------------------------

    def _new_access(self) -> str:
        token = "ya29." + secrets.token_urlsafe(24)
        self.access[token] = self.now() + self.access_seconds
        return token

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def _store(self, cal: FakeCalendar, event: Event) -> Event:
        self.revision += 1
        stamp = self._stamp()
        event.setdefault("created", stamp)
        event.setdefault("status", "confirmed")
        event.setdefault("iCalUID", f"{event['id']}@google.com")
        event.setdefault("sequence", 0)
        event.update(kind="calendar#event", etag=f'"{next(self._etags)}"', updated=stamp)
        cal.events[event["id"]] = event
        cal.written_at[event["id"]] = self.revision
        return copy.deepcopy(event)

    def _token(self) -> str:
        return f"CPDAlvWDx-sync{self.revision}"

    def _token_revision(self, token: str) -> int | None:
        match = re.fullmatch(r"CPDAlvWDx-sync(\d+)", token)
        if match is None or not self.oldest_token <= int(match.group(1)) <= self.revision:
            return None
        return int(match.group(1))


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # "Handle API errors": {"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}
    body = {"error": {"errors": [{"domain": "global", "reason": reason, "message": message}],
                      "code": status, "message": message}}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 §2.1


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_bearer(fake: GoogleCalendarFake, assertion: str, token_url: str) -> Any:
    """Google's answer to a service account's signed assertion (RFC 7523 §3 and Google's
    "Preparing to make an authorized API call": iss, scope, aud, exp, iat, sub), checked here
    with cryptography directly, not with the library calsync signs with."""
    def refused(error: str, description: str, status: int = 400) -> Any:
        return jsonify(error=error, error_description=description), status

    try:
        head_text, claims_text, signature_text = assertion.split(".")
        header, claims = json.loads(_b64(head_text)), json.loads(_b64(claims_text))
        signature = _b64(signature_text)
    except ValueError:
        return refused("invalid_grant", "Invalid JWT: the assertion is not a JWT.")
    with fake.lock:
        account = fake.service_accounts.get(str(claims.get("iss")))
        if header.get("alg") != "RS256" or account is None:
            return refused("invalid_grant", "Invalid JWT Signature.")
        try:
            account["public_key"].verify(signature, f"{head_text}.{claims_text}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return refused("invalid_grant", "Invalid JWT Signature.")
        now = fake.now()
        if claims.get("aud") != token_url:
            return refused("invalid_grant", "Invalid JWT: Invalid audience.")
        iat, exp = float(claims.get("iat", 0)), float(claims.get("exp", 0))
        if not (iat - 300 <= now < exp and exp - iat <= 3600):
            return refused("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                                            "and in a reasonable timeframe. Check your iat and exp values.")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes or not scopes <= account["scopes"]:
            return refused("unauthorized_client", "Client is unauthorized to retrieve access tokens using "
                           "this method, or client not authorized for any of the scopes requested.", 401)
        subject = str(claims.get("sub", "")).lower()
        if subject not in fake.workspace_users:
            return refused("invalid_grant", "Invalid email or User ID")
        if not fake.workspace_users[subject]:
            return refused("unauthorized_client", "Client is unauthorized to retrieve access tokens using "
                           "this method, or client not authorized for any of the scopes requested.", 401)
        access = fake._new_access()
        fake.subjects[access] = subject
        return jsonify(access_token=access, expires_in=fake.access_seconds, token_type="Bearer")


def _consent_page(provider: str, heading: str, scopes: list[str], args: Any) -> Response:
    """A tiny consent page in the provider's place: what is asked, and two buttons that send
    the same query back with a decision (shared with tests/fakes/microsoft_graph.py)."""
    from html import escape

    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in args.items(multi=True) if k != "decision")
    asked = "".join(f"<li>{escape(s)}</li>" for s in scopes)
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in - {provider} '
            f'(contract fake)</title></head><body><main><h1>{escape(heading)}</h1>'
            f"<p>This is the contract fake of {provider}'s consent screen, not {provider}.</p>"
            f"<p>calsync asks for:</p><ul>{asked}</ul><form method=\"get\">{hidden}"
            '<button type="submit" name="decision" value="allow">Allow</button> '
            '<button type="submit" name="decision" value="cancel">Cancel</button></form>'
            "</main></body></html>")
    return Response(page, mimetype="text/html")


def create_app(fake: GoogleCalendarFake) -> Flask:
    app = Flask("google_calendar_fake")

    @app.before_request
    def check() -> Response | None:
        if not request.path.startswith("/calendar/v3/"):
            return None
        with fake.lock:
            entry = {"method": request.method, "path": request.path, "params": request.args.to_dict(),
                     "body": request.get_json(silent=True), "headers": dict(request.headers)}
            fake.log.append(entry)
            if fake.faults:
                fault = fake.faults.pop(0)
                default = {429: "rateLimitExceeded", 503: "backendError"}.get(fault.status, "error")
                reason = fault.reason or default
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, reason, "Injected by the test.", headers)
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or fake.access.get(token, 0) <= fake.now():
                return _error(401, "authError", "Invalid Credentials",
                              {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        return None

    @app.after_request
    def remember(response: Response) -> Response:
        if request.path.startswith("/calendar/v3/") and fake.log:
            fake.log[-1]["status"] = response.status_code
            fake.log[-1]["answer"] = response.get_json(silent=True)
        return response

    # --- OAuth --------------------------------------------------------------------------------

    @app.get("/o/oauth2/v2/auth")
    def consent() -> Any:
        """The consent screen: approved at once, or with `fake.consent_screen` a page with
        "Allow" and "Cancel" for a browser test to click (Cancel answers access_denied, RFC 6749
        §4.1.2.1)."""
        if fake.consent_screen and request.args.get("decision") is None:
            return _consent_page("Google", "calsync wants to access your Google Account",
                                 request.args.get("scope", "").split(), request.args)
        if request.args.get("decision") == "cancel":
            query = urlencode({"error": "access_denied", "state": request.args.get("state", "")})
            return redirect(request.args["redirect_uri"] + "?" + query)
        code = secrets.token_urlsafe(16)
        with fake.lock:
            fake.codes[code] = {"challenge": request.args["code_challenge"],
                                "redirect_uri": request.args["redirect_uri"],
                                "client_id": request.args["client_id"]}
        query = urlencode({"code": code, "state": request.args.get("state", ""),
                           "scope": request.args.get("scope", "")})
        return redirect(request.args["redirect_uri"] + "?" + query)

    @app.post("/token")
    def token() -> Any:
        form = request.form
        if form.get("grant_type") == JWT_BEARER:
            return _jwt_bearer(fake, form.get("assertion", ""), request.url_root + "token")
        if form.get("client_id") != fake.CLIENT_ID or form.get("client_secret") != fake.CLIENT_SECRET:
            return jsonify(error="invalid_client", error_description="The OAuth client was not found."), 401
        with fake.lock:
            if form.get("grant_type") == "authorization_code":
                issued = fake.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
                if issued is None or issued["redirect_uri"] != form.get("redirect_uri") \
                        or issued["challenge"] != challenge.decode():
                    return jsonify(error="invalid_grant", error_description="Bad Request"), 400
                access, refresh = fake.grant()
                return jsonify(access_token=access, refresh_token=refresh, expires_in=fake.access_seconds,
                               scope="https://www.googleapis.com/auth/calendar.events", token_type="Bearer")
            if form.get("grant_type") == "refresh_token":
                if not fake.refresh_tokens.get(form.get("refresh_token", "")):
                    return jsonify(error="invalid_grant",
                                   error_description="Token has been expired or revoked."), 400
                return jsonify(access_token=fake._new_access(), expires_in=fake.access_seconds,
                               scope="https://www.googleapis.com/auth/calendar.events", token_type="Bearer")
        return jsonify(error="unsupported_grant_type"), 400

    @app.post("/revoke")
    def revoke() -> Any:
        token = request.form.get("token", "")
        with fake.lock:
            if token in fake.refresh_tokens:
                fake.refresh_tokens[token] = False
                fake.access.clear()  # Google revokes the grant, its access tokens with it
                return "", 200
            if fake.access.pop(token, None) is not None:
                return "", 200
        return jsonify(error="invalid_token"), 400

    # --- Calendar API -------------------------------------------------------------------------

    @app.get("/calendar/v3/users/me/calendarList")
    def calendar_list() -> Any:
        with fake.lock:
            subject = fake.subjects.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
            mine = [c for c in fake.calendars.values() if subject is None or c.id == subject]
            items = [{"kind": "calendar#calendarListEntry", "etag": '"1"', "id": c.id, "summary": c.summary,
                      "backgroundColor": "#9fe1e7", "accessRole": c.access_role,
                      "primary": c.id in ("primary", subject), "timeZone": "Europe/Berlin"} for c in mine]
            return jsonify(kind="calendar#calendarList", etag='"1"', items=items, nextSyncToken=fake._token())

    def calendar(cal_id: str) -> FakeCalendar | None:
        subject = fake.subjects.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if subject is not None and cal_id in ("primary", subject):
            return fake.calendars.get(subject)  # the impersonated user's own calendar
        return fake.calendars.get(cal_id)

    def not_found() -> Response:
        return _error(404, "notFound", "Not Found")

    @app.get("/calendar/v3/calendars/<cal_id>/events")
    def events_list(cal_id: str) -> Any:
        args = request.args
        with fake.lock:
            cal = calendar(cal_id)
            if cal is None:
                return not_found()
            if args.get("singleEvents", "false") != "false":
                return _error(400, "invalid", "The fake lists with singleEvents=false only.")
            page_size = min(int(args.get("maxResults", 250)), 2500)
            sync_token = args.get("syncToken")
            if sync_token is not None and args.get("iCalUID"):
                return _error(400, "invalid", "syncToken cannot be combined with iCalUID.")
            if sync_token is not None:
                since = fake._token_revision(sync_token)
                if since is None:
                    return _error(410, "fullSyncRequired",
                                  "Sync token is no longer valid, a full sync is required.")
                ids = [i for i, rev in cal.written_at.items() if rev > since]
            else:
                show_deleted = args.get("showDeleted") == "true"
                ids = [i for i, e in cal.events.items() if show_deleted or e["status"] != "cancelled"]
                if args.get("iCalUID"):
                    ids = [i for i in ids if cal.events[i]["iCalUID"] == args["iCalUID"]]
            ids.sort(key=lambda i: cal.written_at[i])
            # pageToken: where the page starts, and the revision the listing began at (later
            # writes come with the next sync, as Google's do).
            start, basis = 0, fake.revision
            if args.get("pageToken"):
                start_text, _sep, basis_text = args["pageToken"].partition("-")
                start, basis = int(start_text), int(basis_text)
            page = ids[start:start + page_size]
            answer: dict[str, Any] = {"kind": "calendar#events", "etag": f'"p{fake.revision}"',
                                      "summary": cal.summary, "timeZone": "Europe/Berlin",
                                      "accessRole": cal.access_role, "updated": fake._stamp(),
                                      "items": [copy.deepcopy(cal.events[i]) for i in page]}
            if start + page_size < len(ids):
                answer["nextPageToken"] = f"{start + page_size}-{basis}"
            elif not args.get("iCalUID"):
                answer["nextSyncToken"] = f"CPDAlvWDx-sync{basis}"
            return jsonify(answer)

    @app.get("/calendar/v3/calendars/<cal_id>/events/<event_id>")
    def events_get(cal_id: str, event_id: str) -> Any:
        with fake.lock:
            cal = calendar(cal_id)
            if cal is None or event_id not in cal.events:
                return not_found()
            return jsonify(cal.events[event_id])

    @app.post("/calendar/v3/calendars/<cal_id>/events")
    def events_insert(cal_id: str) -> Any:
        body = request.get_json(silent=True)
        with fake.lock:
            cal = calendar(cal_id)
            if cal is None:
                return not_found()
            if not isinstance(body, dict) or "start" not in body or "end" not in body:
                return _error(400, "required", "Missing end time.")
            if cal.access_role not in ("owner", "writer"):
                return _error(403, "requiredAccessLevel", "You need to have writer access to this calendar.")
            event_id = body.get("id") or secrets.token_hex(13)
            if not _ID.match(event_id):
                return _error(400, "invalid", "Invalid resource id value.")
            if event_id in cal.events:
                return _error(409, "duplicate", "The requested identifier already exists.")
            return jsonify(fake._store(cal, {**body, "id": event_id}))

    def conditional(cal_id: str, event_id: str) -> tuple[FakeCalendar | None, Response | None]:
        cal = calendar(cal_id)
        if cal is None or event_id not in cal.events:
            return None, not_found()
        if_match = request.headers.get("If-Match")
        if if_match and if_match != cal.events[event_id]["etag"]:
            return None, _error(412, "conditionNotMet", "Precondition Failed")
        return cal, None

    @app.route("/calendar/v3/calendars/<cal_id>/events/<event_id>", methods=["PATCH", "PUT"])
    def events_patch(cal_id: str, event_id: str) -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "parseError", "Parse Error")
        with fake.lock:
            cal, refused = conditional(cal_id, event_id)
            if refused is not None:
                return refused
            assert cal is not None
            old = cal.events[event_id]
            if request.method == "PATCH":  # events.patch: only the fields sent change
                new = {**old, **body}
                if "extendedProperties" in body:
                    props = copy.deepcopy(old.get("extendedProperties") or {})
                    for scope, values in body["extendedProperties"].items():
                        props.setdefault(scope, {}).update(values)
                    new["extendedProperties"] = props
            else:
                new = {**body, "created": old["created"], "iCalUID": old["iCalUID"]}
            new["id"] = event_id
            new.setdefault("status", "confirmed")
            return jsonify(fake._store(cal, new))

    @app.delete("/calendar/v3/calendars/<cal_id>/events/<event_id>")
    def events_delete(cal_id: str, event_id: str) -> Any:
        with fake.lock:
            cal = calendar(cal_id)
            if cal is not None and cal.events.get(event_id, {}).get("status") == "cancelled":
                return _error(410, "deleted", "Resource has been deleted")  # before any If-Match
            cal, refused = conditional(cal_id, event_id)
            if refused is not None:
                return refused
            assert cal is not None
            fake._store(cal, {**cal.events[event_id], "status": "cancelled"})
            return "", 204

    @app.post("/calendar/v3/calendars/<cal_id>/events/watch")
    def events_watch(cal_id: str) -> Any:
        body = request.get_json(silent=True) or {}
        with fake.lock:
            watched = calendar(cal_id)
            if watched is None:
                return not_found()
            expiration = int((fake.now() + 7 * 86400) * 1000)  # a week, in milliseconds
            channel = {"kind": "api#channel", "id": body["id"], "resourceId": secrets.token_hex(12),
                       "resourceUri": f"{request.host_url}calendar/v3/calendars/{cal_id}/events",
                       "token": body.get("token"), "expiration": str(expiration)}
            # The calendar itself: "primary" of an impersonated user is their own calendar.
            fake.channels[body["id"]] = {**channel, "address": body.get("address"), "calendar": watched.id}
            return jsonify(channel)

    @app.post("/calendar/v3/channels/stop")
    def channels_stop() -> Any:
        body = request.get_json(silent=True) or {}
        with fake.lock:
            channel = fake.channels.get(body.get("id", ""))
            if channel is None or channel["resourceId"] != body.get("resourceId"):
                return not_found()
            del fake.channels[body["id"]]
            return "", 204

    return app


@dataclass
class ServedFake:
    fake: GoogleCalendarFake
    url: str  # the fake's root: API at url/calendar/v3, OAuth at url/token, url/revoke

    @property
    def api_base(self) -> str:
        return self.url + "/calendar/v3"


@contextmanager
def serve_google_fake() -> Iterator[ServedFake]:
    """A fresh fake served on loopback, for one test (a `google_fake` fixture)."""
    fake = GoogleCalendarFake()
    server, url = _serve_wsgi(create_app(fake))
    try:
        yield ServedFake(fake, url)
    finally:
        server.close()


def endpoints(served: ServedFake) -> GoogleEndpoints:
    return GoogleEndpoints(api_base=served.api_base, token_url=served.url + "/token",
                           revoke_url=served.url + "/revoke", auth_url=served.url + "/o/oauth2/v2/auth")


CLIENT = GoogleClient(GoogleCalendarFake.CLIENT_ID, GoogleCalendarFake.CLIENT_SECRET)


@contextmanager
def open_fake_store(served: ServedFake, calendar_id: str = "primary", *, tokens: Tokens | None = None,
                    sleep: Callable[[float], None] | None = None,
                    limits: FetchLimits | None = None) -> Iterator[GoogleCalendarStore]:
    """The store calsync opens on the fake, with tokens fresh from a consent unless given."""
    if tokens is None:
        access, refresh = served.fake.grant()
        tokens = Tokens(access, refresh, time.time() + 3600)
    with open_google_store(endpoints(served), CLIENT, tokens, calendar_id, allow_private=True,
                           limits=limits or FetchLimits(), sleep=sleep or (lambda _s: None)) as store:
        yield store
