"""Change notifications at the providers (issues 11/12): one interface, `ChangeChannels`, over
Google's `events.watch` channels and Microsoft Graph's change-notification subscriptions, so
feeds/calendars/channels.py keeps their lifecycle provider-neutral.

- Google ("Push notifications"): a channel cannot be extended. Renewal is a new watch, then
  channels.stop of the old one (in that order: no gap without notifications). Google chooses
  the expiry (about a week for events); it echoes our `token` in X-Goog-Channel-Token.
- Graph ("Set up notifications for changes in resource data", "subscription-update",
  "Reduce missing subscriptions and change notifications"): POST /subscriptions makes Graph
  POST a `validationToken` to both the notification and the lifecycle URL, and it creates the
  subscription only if each answers the token in plain text within 10 seconds. An Outlook event
  subscription lives at most 10,080 minutes; PATCH expirationDateTime extends it, a 404 means
  Graph removed it (create a new one). `reauthorize` answers a reauthorizationRequired
  lifecycle notification. Graph echoes `clientState` (at most 128 characters) in every
  notification.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from calsync.feeds.calendars.providers.base import Channel, Tokens
from calsync.feeds.calendars.providers.google import GoogleProvider
from calsync.feeds.calendars.providers.microsoft_api import GraphApi, error_code, expect_ok, json_of
from calsync.feeds.calendars.store import StoreUnavailable

# Outlook event subscriptions: at most 10,080 minutes. A few minutes less, so that a clock a
# little ahead of Graph's is never refused with "expirationDateTime is too far in the future".
GRAPH_LIFETIME = timedelta(minutes=10_080 - 10)
GRAPH_CHANGE_TYPES = "created,updated,deleted"


class ChannelGone(StoreUnavailable):
    """The provider no longer has this channel/subscription (Graph 404): make a new one."""

    def __init__(self) -> None:
        super().__init__("channel_gone", "The provider no longer knows this change subscription.")


class ChangeChannels(Protocol):
    """One calendar's change notifications at its provider."""

    provider: str  # models.ChannelProvider value

    def subscribe(self, *, address: str, lifecycle_address: str, secret: str, now: datetime) -> Channel:
        """A new channel delivering to `address`, echoing `secret` in every message; `now`
        is calsync's clock, which a requested expiry counts from."""

    def extend(self, channel: Channel, now: datetime) -> Channel | None:
        """The same channel with a later expiry, or None where the provider cannot extend
        (Google): the caller subscribes anew and stops the old one. ChannelGone if it is gone."""

    def reauthorize(self, channel: Channel) -> None:
        """Answer a reauthorizationRequired lifecycle notification (Graph). ChannelGone if gone."""

    def stop(self, channel: Channel) -> None:
        """Stop or delete it; one that is gone already is not an error."""



class GoogleChannels:
    """events.watch on one calendar (GoogleProvider does the requests)."""

    provider = "google"

    def __init__(self, google: GoogleProvider, tokens: Tokens, calendar_id: str) -> None:
        self.google, self.tokens, self.calendar_id = google, tokens, calendar_id

    def subscribe(self, *, address: str, lifecycle_address: str, secret: str, now: datetime) -> Channel:
        return self.google.subscribe(self.tokens, self.calendar_id, address=address, channel_token=secret)

    def extend(self, channel: Channel, now: datetime) -> Channel | None:
        return None  # Google channels cannot be renewed: watch again, then stop the old one

    def reauthorize(self, channel: Channel) -> None:
        return None  # Google has no such step: a refreshed token keeps its channels alive

    def stop(self, channel: Channel) -> None:
        self.google.stop(self.tokens, channel)


class GraphChannels:
    """Graph change-notification subscriptions on one calendar's events."""

    provider = "microsoft"

    def __init__(self, api: GraphApi, calendar_id: str, *, user: str | None = None) -> None:
        self.api = api
        owner = "me" if user is None else f"users/{quote(user, safe='@')}"
        self.resource = f"{owner}/events" if calendar_id in ("", "primary") else \
            f"{owner}/calendars/{quote(calendar_id, safe='')}/events"

    def _expiry(self, now: datetime) -> str:
        return (now.astimezone(UTC) + GRAPH_LIFETIME).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")

    def subscribe(self, *, address: str, lifecycle_address: str, secret: str, now: datetime) -> Channel:
        response = self.api.call("POST", self.api.url("/subscriptions"), body={
            "changeType": GRAPH_CHANGE_TYPES, "notificationUrl": address,
            "lifecycleNotificationUrl": lifecycle_address, "resource": self.resource,
            "expirationDateTime": self._expiry(now), "clientState": secret,
            "latestSupportedTlsVersion": "v1_2"})
        error = json_of(response).get("error") if response.status_code == 400 else None
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if error_code(response) in ("ValidationError", "InvalidRequest") and "validation" in message.lower():
            # Graph could not validate our endpoint (wrong or slow echo of validationToken).
            raise StoreUnavailable("channel_refused", "Microsoft 365 could not reach calsync's webhook "
                                                      "address to confirm the subscription; the calendar "
                                                      "is polled instead.")
        expect_ok(response, 201)
        return _graph_channel(json_of(response), secret)

    def extend(self, channel: Channel, now: datetime) -> Channel | None:
        response = self.api.call("PATCH", self.api.url(f"/subscriptions/{quote(channel.id, safe='')}"),
                                 body={"expirationDateTime": self._expiry(now)})
        if response.status_code == 404:
            raise ChannelGone()
        expect_ok(response, 200)
        return _graph_channel(json_of(response), channel.token, channel.resource_id)

    def reauthorize(self, channel: Channel) -> None:
        response = self.api.call("POST", self.api.url(
            f"/subscriptions/{quote(channel.id, safe='')}/reauthorize"))
        if response.status_code == 404:
            raise ChannelGone()
        expect_ok(response, 200, 204)

    def stop(self, channel: Channel) -> None:
        response = self.api.call("DELETE", self.api.url(f"/subscriptions/{quote(channel.id, safe='')}"))
        expect_ok(response, 204, 404)  # 404: expired or removed already


def _graph_channel(answer: dict[str, Any], secret: str, resource: str | None = None) -> Channel:
    try:
        expires = datetime.fromisoformat(_trim(str(answer["expirationDateTime"])))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return Channel(str(answer["id"]), resource or str(answer.get("resource") or ""), secret,
                       expires.timestamp())
    except (KeyError, ValueError):
        raise StoreUnavailable("unreadable", "Microsoft 365 answered a subscription calsync could not "
                                             "read; the calendar is polled instead.") from None


def _trim(text: str) -> str:
    """Graph writes up to seven fractional digits ("2026-12-13T07:00:00.0000000Z"); Python
    reads at most six."""
    stamp, dot, rest = text.replace("Z", "+00:00").partition(".")
    if not dot:
        return stamp
    cut = next((i for i, c in enumerate(rest) if c in "+-"), len(rest))
    return f"{stamp}.{rest[:cut][:6].ljust(6, '0')}{rest[cut:]}"


def new_secret() -> str:
    """A channel token / clientState: 32 random bytes, URL-safe (Graph allows 128 characters,
    Google 256)."""
    return secrets.token_urlsafe(32)
