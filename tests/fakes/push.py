"""Change notifications from the contract fakes to calsync over HTTP (issues 11/12): the
Google fake's push channels and the Graph fake's change-notification subscriptions. A contract
fake, written from the published references, not Google or Microsoft:

- Google ("Push notifications"): after events.watch the channel's address gets a `sync`
  message (number 1); every later write to a watched calendar sends `exists` with the next
  X-Goog-Message-Number, X-Goog-Channel-ID/-Token/-Expiration, X-Goog-Resource-ID/-URI/-State,
  and an empty body. Expired (on the fake's clock) and stopped channels get nothing.
- Graph ("Set up notifications for changes in resource data", "subscription-post-
  subscriptions", "subscription-update", "Reduce missing subscriptions"): POST /subscriptions
  sends `?validationToken=` to the notification and the lifecycle URL, and creates the
  subscription only if each answers 200, text/plain, the token itself, within
  `validation_timeout` (Graph: 10 s) — else 400 ValidationError. An expiry beyond 10,080 minutes
  is refused. PATCH extends, DELETE removes, POST .../reauthorize clears a reauthorization;
  a removed or expired subscription is 404. Writes to the mailbox are notified as single
  notifications, or batched while `batching()` holds them; `lifecycle(...)` sends lifecycle
  notifications; `send_graph(...)` sends any crafted batch (wrong clientState, repeats).
- Where notifications go: the address calsync registered (https://<its base URL>/hooks/...)
  mapped by `route` to calsync's real loopback http address — a test-only knob of the fake;
  calsync itself registers only https addresses.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.fakes import google_calendar, microsoft_graph
from tests.servers import _serve_wsgi

Route = Callable[[str], str]
GRAPH_MAX_MINUTES = 10_080


@dataclass
class Delivery:
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    answer: bytes = b""
    content_type: str = ""


@dataclass
class Deliverer:
    """Sends notifications one after another on a thread of its own, as a provider does (never
    inside the request that caused the change); `settle()` waits until all were answered."""

    route: Route = field(default=lambda url: url)
    sent: list[Delivery] = field(default_factory=list)
    _queue: queue.Queue[Delivery | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def post(self, url: str, headers: dict[str, str], body: bytes = b"") -> None:
        self._queue.put(Delivery(url, headers, body))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                send(item, self.route, timeout=10)
            finally:
                self.sent.append(item)
                self._queue.task_done()

    def settle(self) -> list[Delivery]:
        self._queue.join()
        return self.sent

    def close(self) -> None:
        self._queue.put(None)


def send(item: Delivery, route: Route, timeout: float) -> Delivery:
    """POST one delivery (or validation request); the status 0 means no answer in time."""
    call = urllib.request.Request(route(item.url), data=item.body, method="POST",  # noqa: S310 - loopback
                                  headers=item.headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:  # noqa: S310
            item.status, item.answer = answer.status, answer.read()
            item.content_type = answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        item.status, item.answer = exc.code, exc.read()
    except (OSError, TimeoutError):
        item.status = 0
    return item


# --- Google -----------------------------------------------------------------------------------


class PushingGoogleFake(google_calendar.GoogleCalendarFake):
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.numbers: dict[str, int] = {}
        super().__init__()

    def _store(self, cal: google_calendar.FakeCalendar, event: dict[str, Any]) -> dict[str, Any]:
        stored = super()._store(cal, event)
        for channel_id, channel in list(getattr(self, "channels", {}).items()):
            if channel["calendar"] == cal.id:
                self.notify(channel_id, "exists")
        return stored

    def notify(self, channel_id: str, state: str, *, token: str | None = None,
               number: int | None = None) -> None:
        """Send one message on a channel (a live one, unless the test crafts it)."""
        with self.lock:
            channel = self.channels.get(channel_id)
            if channel is None or int(channel["expiration"]) / 1000 <= self.now():
                return
            if number is None:
                number = self.numbers[channel_id] = self.numbers.get(channel_id, 0) + 1
            expiry = datetime.fromtimestamp(int(channel["expiration"]) / 1000, UTC)
            headers = {"X-Goog-Channel-ID": channel_id, "X-Goog-Message-Number": str(number),
                       "X-Goog-Resource-ID": channel["resourceId"],
                       "X-Goog-Resource-URI": channel["resourceUri"],
                       "X-Goog-Resource-State": state,
                       "X-Goog-Channel-Expiration": format_datetime(expiry, usegmt=True),
                       "Content-Length": "0"}
            sent_token = channel.get("token") if token is None else token
            if sent_token:
                headers["X-Goog-Channel-Token"] = sent_token
        self.deliverer.post(channel["address"], headers)

    def live_channels(self) -> list[str]:
        with self.lock:
            return [i for i, c in self.channels.items() if int(c["expiration"]) / 1000 > self.now()]


@contextmanager
def serve_pushing_google(route: Route) -> Iterator[google_calendar.ServedFake]:
    deliverer = Deliverer(route)
    fake = PushingGoogleFake(deliverer)
    app = google_calendar.create_app(fake)

    @app.after_request
    def opened(response: Response) -> Response:
        # events.watch: Google sends the `sync` message once the channel is open.
        if request.path.endswith("/events/watch") and response.status_code == 200:
            fake.notify(str((request.get_json(silent=True) or {}).get("id")), "sync")
        return response

    server, url = _serve_wsgi(app)
    try:
        yield google_calendar.ServedFake(fake, url)
    finally:
        deliverer.close()
        server.close()


# --- Microsoft Graph --------------------------------------------------------------------------


def _graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class PushingGraphFake(microsoft_graph.MicrosoftGraphFake):
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.validation_timeout = 10.0  # Graph waits 10 seconds for the echo
        self.validations: list[Delivery] = []
        self._held: list[tuple[str, dict[str, Any]]] | None = None
        super().__init__()

    # --- notifications of writes --------------------------------------------------------------

    def _store(self, event: dict[str, Any]) -> dict[str, Any]:
        new = event["id"] not in self.mailbox.events
        stored = super()._store(event)
        self._changed(stored["id"], "created" if new else "updated", stored.get("@odata.etag"))
        return stored

    def _remove(self, event_id: str) -> None:
        super()._remove(event_id)
        self._changed(event_id, "deleted", None)

    def _changed(self, event_id: str, change: str, etag: str | None) -> None:
        for sub_id, sub in list(getattr(self, "subscriptions", {}).items()):
            if change not in sub["changeType"].split(",") or self._expired(sub):
                continue
            data = {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": f"Users/zoe/Events/{event_id}",
                    "id": event_id}
            if etag:
                data["@odata.etag"] = etag
            self._post(sub["notificationUrl"], {
                "subscriptionId": sub_id, "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "changeType": change, "resource": f"Users/zoe/Events/{event_id}", "resourceData": data,
                "clientState": sub.get("clientState"), "tenantId": self.TENANT_ID})

    def _post(self, url: str, notification: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append((url, notification))
        else:
            self.send_graph(url, [notification])

    def send_graph(self, url: str, notifications: list[dict[str, Any]]) -> None:
        self.deliverer.post(url, {"Content-Type": "application/json"},
                            json.dumps({"value": notifications}).encode())

    @contextmanager
    def batching(self) -> Iterator[None]:
        """Writes inside are notified together, one POST per address, as Graph batches."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for url in dict.fromkeys(u for u, _n in held):
                self.send_graph(url, [n for u, n in held if u == url])

    def lifecycle(self, sub_id: str, event: str) -> None:
        """A lifecycle notification; subscriptionRemoved removes the subscription first."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            if event == "subscriptionRemoved":
                del self.subscriptions[sub_id]
            if event == "reauthorizationRequired":
                sub["reauthorize"] = True
        self.send_graph(sub["lifecycleNotificationUrl"], [{
            "subscriptionId": sub_id, "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "tenantId": self.TENANT_ID, "clientState": sub.get("clientState"), "lifecycleEvent": event}])

    def _expired(self, sub: dict[str, Any]) -> bool:
        return _parse(sub["expirationDateTime"]) <= datetime.fromtimestamp(self.now(), UTC)


def _parse(text: str) -> datetime:
    stamp = text.replace("Z", "")[:26]
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_subscription_routes(app: Flask, fake: PushingGraphFake) -> None:
    def error(status: int, code: str, message: str) -> Response:
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = status
        return response

    def found(sub_id: str) -> dict[str, Any] | None:
        sub = fake.subscriptions.get(sub_id)
        if sub is not None and fake._expired(sub):
            del fake.subscriptions[sub_id]  # Graph deletes expired subscriptions
            return None
        return sub

    def too_far(expiry: str) -> bool:
        limit = datetime.fromtimestamp(fake.now(), UTC) + timedelta(minutes=GRAPH_MAX_MINUTES)
        return _parse(expiry) > limit

    def validates(url: str) -> bool:
        token = "Validation: Testing client application reachability for subscription Request-Id: " \
                + secrets.token_hex(8)
        started = time.monotonic()
        check = send(Delivery(url + "?" + urllib.parse.urlencode({"validationToken": token}),
                              {"Content-Type": "text/plain; charset=utf-8"}, b""),
                     fake.deliverer.route, timeout=fake.validation_timeout)
        fake.validations.append(check)
        in_time = time.monotonic() - started <= fake.validation_timeout
        return in_time and check.status == 200 and check.content_type.startswith("text/plain") \
            and check.answer.decode("utf-8", "replace") == token

    @app.post("/v1.0/subscriptions")
    def subscription_create() -> Any:
        body = request.get_json(silent=True) or {}
        missing = [k for k in ("changeType", "notificationUrl", "resource", "expirationDateTime")
                   if not body.get(k)]
        if missing:
            return error(400, "InvalidRequest", f"Missing {', '.join(missing)}.")
        if not str(body["notificationUrl"]).startswith("https://"):
            return error(400, "InvalidRequest", "The notification URL must use https.")
        if too_far(body["expirationDateTime"]):
            return error(400, "InvalidRequest", "Subscription expiration can only be 10070 minutes "
                                                "in the future.")
        if len(str(body.get("clientState") or "")) > 128:
            return error(400, "InvalidRequest", "clientState is longer than 128 characters.")
        urls = [body["notificationUrl"], *([body["lifecycleNotificationUrl"]]
                                           if body.get("lifecycleNotificationUrl") else [])]
        if not all(validates(u) for u in urls):  # outside the lock: calsync answers meanwhile
            return error(400, "ValidationError", "Subscription validation request failed. Notification "
                         "endpoint must respond with 200 OK to validation request.")
        sub_id = str(secrets.token_hex(4)) + "-" + secrets.token_hex(2) + "-4" + secrets.token_hex(2)[1:] \
            + "-a" + secrets.token_hex(2)[1:] + "-" + secrets.token_hex(6)
        sub = {"id": sub_id, "resource": body["resource"], "applicationId": fake.CLIENT_ID,
               "changeType": body["changeType"], "clientState": body.get("clientState"),
               "notificationUrl": body["notificationUrl"],
               "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
               "expirationDateTime": body["expirationDateTime"], "creatorId": "zoe",
               "latestSupportedTlsVersion": body.get("latestSupportedTlsVersion", "v1_2")}
        with fake.lock:
            fake.subscriptions[sub_id] = sub
        response = jsonify({"@odata.context": "fake#subscriptions/$entity", **sub})
        response.status_code = 201
        return response

    @app.patch("/v1.0/subscriptions/<sub_id>")
    def subscription_extend(sub_id: str) -> Any:
        body = request.get_json(silent=True) or {}
        with fake.lock:
            sub = found(sub_id)
            if sub is None:
                return error(404, "ResourceNotFound", "The object was not found.")
            if not body.get("expirationDateTime") or too_far(body["expirationDateTime"]):
                return error(400, "InvalidRequest", "Subscription expiration can only be 10070 minutes "
                                                    "in the future.")
            sub["expirationDateTime"] = body["expirationDateTime"]
            return jsonify({"@odata.context": "fake#subscriptions/$entity", **sub})

    @app.post("/v1.0/subscriptions/<sub_id>/reauthorize")
    def subscription_reauthorize(sub_id: str) -> Any:
        with fake.lock:
            sub = found(sub_id)
            if sub is None:
                return error(404, "ResourceNotFound", "The object was not found.")
            sub.pop("reauthorize", None)
            return "", 204

    @app.delete("/v1.0/subscriptions/<sub_id>")
    def subscription_delete(sub_id: str) -> Any:
        with fake.lock:
            if found(sub_id) is None:
                return error(404, "ResourceNotFound", "The object was not found.")
            del fake.subscriptions[sub_id]
            return "", 204


@contextmanager
def serve_pushing_graph(route: Route) -> Iterator[microsoft_graph.ServedGraph]:
    deliverer = Deliverer(route)
    fake = PushingGraphFake(deliverer)
    app = microsoft_graph.create_app(fake)
    add_subscription_routes(app, fake)
    try:
        with microsoft_graph.serve_graph_fake(fake, app) as served:  # over TLS, as the plain fake
            yield served
    finally:
        deliverer.close()
