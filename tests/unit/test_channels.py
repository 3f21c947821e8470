"""Pure rules of change channels (issues 11/12): when calsync may subscribe, how Graph's
answers and notification batches are read, and the poll rate while a channel is live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from calsync.feeds.calendars.channel_messages import _key, graph_items
from calsync.feeds.calendars.channels import push_possible, secret_hash, wants_channel
from calsync.feeds.calendars.health import PUSH_UNTIL_KEY, PUSHED_POLL_SECONDS, REALTIME_SECONDS, next_sync
from calsync.feeds.calendars.providers.subscriptions import _graph_channel, new_secret
from calsync.feeds.calendars.store import StoreUnavailable
from calsync.models import Connection

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def test_push_needs_an_https_base_url() -> None:
    assert push_possible("https://cal.example.com")
    assert not push_possible("http://cal.example.com")
    google = Connection(kind="google", sync_mode="realtime")
    assert wants_channel(google, "https://cal.example.com")
    assert not wants_channel(google, "http://127.0.0.1:8000")
    assert not wants_channel(Connection(kind="google", sync_mode="interval"), "https://cal.example.com")
    assert not wants_channel(Connection(kind="caldav", sync_mode="realtime"), "https://cal.example.com")


def test_secrets_are_random_and_fit_both_providers() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and len(first) <= 128  # Graph's clientState limit (Google: 256)
    assert secret_hash(first) != first and len(secret_hash(first)) == 64


@pytest.mark.parametrize("stamp", ["2026-12-13T07:00:00.0000000Z", "2026-12-13T07:00:00Z",
                                   "2026-12-13T07:00:00+00:00", "2026-12-13T07:00:00.1234567Z"])
def test_graph_expiry_times_with_seven_digits_are_read(stamp: str) -> None:
    channel = _graph_channel({"id": "sub", "expirationDateTime": stamp, "resource": "me/events"}, "s")
    assert datetime.fromtimestamp(channel.expires_at, UTC).replace(microsecond=0) == \
        datetime(2026, 12, 13, 7, 0, tzinfo=UTC)
    assert channel.resource_id == "me/events" and channel.token == "s"


def test_an_unreadable_subscription_is_a_sentence() -> None:
    with pytest.raises(StoreUnavailable, match="could not read"):
        _graph_channel({"id": "sub", "expirationDateTime": "soon"}, "s")


def test_only_graphs_shape_is_accepted() -> None:
    assert graph_items({"value": [{"subscriptionId": "a"}]}) == [{"subscriptionId": "a"}]
    for garbage in (None, [], "x", {"value": "x"}, {"value": [1, 2]}, {"other": []}):
        assert graph_items(garbage) is None


def test_notification_keys_tell_repeats_from_changes() -> None:
    one = {"subscriptionId": "s", "changeType": "updated", "resource": "Users/u/Events/e",
           "resourceData": {"@odata.etag": 'W/"1"'}}
    assert _key(one) == _key(dict(one))
    assert _key(one) != _key({**one, "resourceData": {"@odata.etag": 'W/"2"'}})
    assert _key(one) != _key({**one, "changeType": "deleted"})
    assert _key({"subscriptionId": "s", "resourceData": "garbage"})  # no crash on odd shapes


def test_a_live_channel_slows_the_realtime_poll() -> None:
    conn = Connection(kind="google", sync_mode="realtime", interval_minutes=30, extra={})
    assert next_sync(conn, NOW) == NOW + timedelta(seconds=REALTIME_SECONDS)
    conn.extra = {PUSH_UNTIL_KEY: (NOW + timedelta(days=3)).isoformat()}
    assert next_sync(conn, NOW) == NOW + timedelta(seconds=PUSHED_POLL_SECONDS)
    conn.extra = {PUSH_UNTIL_KEY: (NOW - timedelta(minutes=1)).isoformat()}  # expired: poll again
    assert next_sync(conn, NOW) == NOW + timedelta(seconds=REALTIME_SECONDS)
    conn.extra = {PUSH_UNTIL_KEY: "garbage"}
    assert next_sync(conn, NOW) == NOW + timedelta(seconds=REALTIME_SECONDS)
