"""What a change notification from Google or Microsoft Graph is worth (issues 11/12): checked
against its channel, de-duplicated, and turned into a queued sync of the connection — with no
network and one short transaction, so the webhook (web/webhooks.py) answers at once.

- Google ("Push notifications"): X-Goog-Channel-ID names the channel, X-Goog-Channel-Token
  carries our secret, X-Goog-Resource-State is `sync` for the handshake message sent when a
  channel opens (nothing changed: ignored), `exists`/`not_exists` for a change, and
  X-Goog-Message-Number rises per channel: a number not above the last one seen is a repeat.
- Graph ("Receive change notifications"): a POST holds a batch `value` of notifications, each
  with subscriptionId and clientState; the same change may come twice in a batch or again
  later (Graph retries what was not acknowledged in time), so the keys of recent ones are kept.
  Lifecycle notifications carry `lifecycleEvent` instead of a change.
- Every secret is compared in constant time against its stored SHA-256 hash.
- A burst of notifications queues one sync: `sync_requested_at` is set by the first and cleared
  when the sync starts; one older than REQUEST_STALE (a job lost with its worker) is re-queued.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from calsync.feeds.calendars.channels import LIFECYCLE_EVENTS, secret_hash
from calsync.feeds.scheduling.change_effects import request_job
from calsync.models import Connection, ProviderChannel, utcnow

log = logging.getLogger("calsync.channels")

REQUEST_STALE = timedelta(minutes=2)
RECENT_KEYS = 64  # Graph keys kept per channel: more than one batch's repeats
CHANNEL_SYNC_TASK = "channel_sync"
LIFECYCLE_TASKS = {"reauthorizationRequired": "channel_reauthorize",
                   "subscriptionRemoved": "channel_recreate", "missed": "channel_missed"}


def _secret_matches(given: str | None, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(given or ""), stored_hash)


def _request_sync(session: Session, row: ProviderChannel, now: datetime) -> bool:
    """Queue a sync of the channel's connection unless one is queued already."""
    taken = session.execute(update(ProviderChannel).where(
        ProviderChannel.id == row.id,
        or_(ProviderChannel.sync_requested_at.is_(None),
            ProviderChannel.sync_requested_at < now - REQUEST_STALE),
    ).values(sync_requested_at=now).execution_options(synchronize_session=False))
    if taken.rowcount:  # type: ignore[attr-defined]
        request_job(session, CHANNEL_SYNC_TASK, row.id)
        return True
    return False


# --- Google -----------------------------------------------------------------------------------


def accept_google(session: Session, *, channel_id: str | None, token: str | None, state: str | None,
                  number: str | None, now: datetime | None = None) -> str:
    """One Google notification. Returns "unknown" (answer 404: Google stops the channel),
    "forbidden" (wrong token), "ignored" (the sync message, a stopped channel, a repeat) or
    "queued"/"coalesced" (a sync is queued / was queued already). The caller commits."""
    now = now or utcnow()
    if state == "sync":
        # "The channel is open": nothing changed. It arrives as events.watch answers, before
        # the new channel's row is committed, so it must not be refused as unknown (a 404
        # would make Google drop the new channel).
        return "ignored"
    row = session.scalar(select(ProviderChannel).where(ProviderChannel.channel_id == (channel_id or "")[:200],
                                                       ProviderChannel.provider == "google"))
    if row is None:
        return "unknown"
    if not _secret_matches(token, row.secret_hash):
        log.warning("google notification for channel %s with a wrong token: ignored", row.id)
        return "forbidden"
    if row.stopped_at is not None:
        return "unknown"  # stopped by us (renewed): a 404 makes Google give it up too
    try:
        message = int(number or "")
    except ValueError:
        message = None
    if message is not None:
        fresh = session.execute(update(ProviderChannel).where(
            ProviderChannel.id == row.id,
            or_(ProviderChannel.last_message_number.is_(None), ProviderChannel.last_message_number < message),
        ).values(last_message_number=message, last_notified_at=now)
            .execution_options(synchronize_session=False))
        if not fresh.rowcount:  # type: ignore[attr-defined]
            return "ignored"  # a repeat (Google retries what it thinks was not delivered)
    return "queued" if _request_sync(session, row, now) else "coalesced"


# --- Microsoft Graph --------------------------------------------------------------------------


@dataclass
class GraphBatch:
    """What one POST of notifications came to (for the log line and the tests)."""

    changes: int = 0  # new change notifications accepted
    repeats: int = 0
    refused: int = 0  # wrong clientState
    unknown: int = 0
    lifecycle: list[str] = field(default_factory=list)
    queued: int = 0


def _key(item: dict[str, Any]) -> str:
    data = item.get("resourceData")
    data = data if isinstance(data, dict) else {}
    lifecycle = item.get("lifecycleEvent")
    parts = (item.get("subscriptionId"), lifecycle, item.get("changeType"), item.get("resource"),
             data.get("@odata.etag"), item.get("subscriptionExpirationDateTime") if lifecycle else "")
    return hashlib.sha256("|".join(str(p or "") for p in parts).encode("utf-8")).hexdigest()[:32]


def graph_items(payload: Any) -> list[dict[str, Any]] | None:
    """The notifications of a POST body, or None if it is not Graph's shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
        return None
    items = [item for item in payload["value"] if isinstance(item, dict)]
    return items if len(items) == len(payload["value"]) else None


def accept_graph(session: Session, items: list[dict[str, Any]], *, lifecycle: bool,
                 now: datetime | None = None) -> GraphBatch:
    """A batch of Graph notifications (change notifications, or lifecycle ones when
    `lifecycle`). Each is checked and de-duplicated on its own; the caller commits."""
    now = now or utcnow()
    batch = GraphBatch()
    ids = {str(item.get("subscriptionId") or "")[:200] for item in items}
    rows = {row.channel_id: row for row in session.scalars(select(ProviderChannel).where(
        ProviderChannel.channel_id.in_(ids), ProviderChannel.provider == "microsoft"))}
    wants_sync: set[int] = set()
    for item in items:
        row = rows.get(str(item.get("subscriptionId") or ""))
        if row is None or row.stopped_at is not None:
            batch.unknown += 1
            continue
        if not _secret_matches(str(item.get("clientState") or ""), row.secret_hash):
            batch.refused += 1
            log.warning("graph notification for channel %s with a wrong clientState: ignored", row.id)
            continue
        key = _key(item)
        if key in (row.recent_keys or []):
            batch.repeats += 1
            continue
        row.recent_keys = [*(row.recent_keys or []), key][-RECENT_KEYS:]
        row.last_notified_at = now
        event = item.get("lifecycleEvent")
        if event is not None or lifecycle:
            if event in LIFECYCLE_EVENTS:
                batch.lifecycle.append(str(event))
                request_job(session, LIFECYCLE_TASKS[str(event)], row.id)
            continue
        batch.changes += 1
        wants_sync.add(row.id)
    session.flush()
    for row_id in sorted(wants_sync):
        batch.queued += _request_sync(session, session.get(ProviderChannel, row_id), now)  # type: ignore[arg-type]
    return batch


# --- the job side -----------------------------------------------------------------------------


def claim_channel_sync(session: Session, channel_row_id: int) -> int | None:
    """The connection to sync for a queued notification, clearing its request (changes that
    arrive from now on queue a new sync). None if the channel or connection is gone."""
    row = session.get(ProviderChannel, channel_row_id)
    if row is None:
        return None
    row.sync_requested_at = None
    return row.connection_id if session.get(Connection, row.connection_id) is not None else None
