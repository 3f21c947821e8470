"""The lifecycle of change-notification channels (issues 11/12): a google/microsoft connection
in realtime mode gets a channel (Google events.watch) or subscription (Graph) when calsync has
an https CALSYNC_BASE_URL; the providers deliver only to https. Without one, realtime mode
polls about every minute (feeds.calendars.health) and the connection's page says so.

- `ensure_channel` brings one connection to what it should have: subscribe, renew a channel
  that expires within RENEW_BEFORE, or stop channels of a connection that left realtime mode.
  The periodic job (feeds/jobs.py) runs it for every connection that has or wants a channel.
- Renewal: Google channels cannot be extended, so a new one is watched first and the old one
  stopped after (no gap); Graph subscriptions are extended (PATCH), re-created after a 404.
- Graph's lifecycle notifications (`handle_lifecycle`): reauthorizationRequired → reauthorise
  and extend; subscriptionRemoved → a new subscription; missed → the next sync lists in full.
- While a channel is live the poll slows to health.PUSHED_POLL_SECONDS: it only catches
  notifications that never came.

Secrets (Google's channel token, Graph's clientState) are random per channel and stored only as
SHA-256 hashes (models.channel); no network call happens while a write transaction is open.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.calendars.company_accounts import CompanyAccess, open_company_channels
from calsync.feeds.calendars.health import PUSH_UNTIL_KEY
from calsync.feeds.calendars.provider_access import PROVIDER_LABELS, ProviderSetup, open_tokens, save_tokens
from calsync.feeds.calendars.providers.base import Channel, ReconnectNeeded, Tokens
from calsync.feeds.calendars.providers.microsoft_api import graph_api
from calsync.feeds.calendars.providers.subscriptions import (
    ChangeChannels,
    ChannelGone,
    GoogleChannels,
    GraphChannels,
    new_secret,
)
from calsync.feeds.calendars.store import StoreUnavailable
from calsync.feeds.errors import CalsyncError
from calsync.feeds.scheduling.change_effects import request_job
from calsync.models import (
    ChannelProvider,
    Connection,
    ConnectionKind,
    ProviderChannel,
    SyncMode,
    utcnow,
)

log = logging.getLogger("calsync.channels")

PROVIDER_KINDS = (ConnectionKind.GOOGLE, ConnectionKind.MICROSOFT)
HOOK_PATHS = {ChannelProvider.GOOGLE: "/hooks/google", ChannelProvider.MICROSOFT: "/hooks/microsoft"}
LIFECYCLE_PATH = "/hooks/microsoft/lifecycle"
# Google's event channels live about a week, Graph's at most 10,080 minutes: a day ahead leaves
# many periodic runs to retry a renewal that failed.
RENEW_BEFORE = timedelta(hours=24)

# Opens the provider side of one connection's calendar (tokens read and refreshed by the
# caller's provider access); the network is used only inside the returned context.
ChannelsOpener = Callable[[Session, Connection], AbstractContextManager[ChangeChannels]]


@dataclass(frozen=True)
class ChannelContext:
    sessions: sessionmaker[Session]
    base_url: str  # CALSYNC_BASE_URL: the webhook addresses are built on it
    open_channels: ChannelsOpener
    renew_before: timedelta = RENEW_BEFORE


def provider_channels(sessions: sessionmaker[Session], vault: Vault, setup: ProviderSetup) -> ChannelsOpener:
    """The ChannelsOpener of the app: the connection's own tokens (sealed in the vault, as
    feeds.calendars.provider_access keeps them; refreshed ones are stored at once, since
    Microsoft rotates refresh tokens) and the operator's OAuth clients — or, for a connection
    made through a company-wide account, that account's credentials."""

    @contextmanager
    def open_channels(session: Session, conn: Connection) -> Iterator[ChangeChannels]:
        label = PROVIDER_LABELS.get(conn.kind, conn.kind)
        if conn.company_account_id is not None:
            # The company-wide connection: no tokens of its own; the account's credentials
            # reach the staff member's mailbox (feeds.calendars.company_accounts).
            with open_company_channels(session, vault, CompanyAccess.of_setup(setup), conn) as channels:
                yield channels
            return
        if not conn.tokens_sealed:
            raise ReconnectNeeded(label)
        tokens = open_tokens(vault, conn.tokens_sealed, label)
        calendar_id, connection_id = conn.remote_calendar_id or "primary", conn.id

        def keep(new: Tokens) -> None:
            save_tokens(sessions, vault, connection_id, new)

        if conn.kind == ConnectionKind.GOOGLE:
            yield GoogleChannels(setup.provider("google"), tokens, calendar_id)  # type: ignore[arg-type]
            return
        setup.provider("microsoft")  # ProviderNotConfigured when the operator removed the app
        assert setup.microsoft_client is not None
        with graph_api(setup.microsoft_endpoints, setup.microsoft_client, tokens,
                       mailbox=conn.account_email or f"connection-{connection_id}",
                       allow_private=setup.allow_private, limits=setup.limits, on_tokens=keep) as api:
            yield GraphChannels(api, calendar_id)

    return open_channels


def push_possible(base_url: str) -> bool:
    """Google and Graph deliver notifications to https addresses only."""
    return base_url.startswith("https://")


def wants_channel(conn: Connection, base_url: str) -> bool:
    return conn.kind in PROVIDER_KINDS and conn.sync_mode == SyncMode.REALTIME and push_possible(base_url)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def live_channels(session: Session, connection_id: int) -> list[ProviderChannel]:
    return list(session.scalars(select(ProviderChannel).where(
        ProviderChannel.connection_id == connection_id, ProviderChannel.stopped_at.is_(None))
        .order_by(ProviderChannel.id)))


def connections_to_check(session: Session, base_url: str, now: datetime,
                         renew_before: timedelta = RENEW_BEFORE, limit: int = 500) -> list[int]:
    """Connections whose channels need work: realtime provider connections without a live
    channel (when push is possible), live channels expiring soon, and live channels of
    connections that should have none."""
    ids: set[int] = set()
    if push_possible(base_url):
        has_live = select(ProviderChannel.connection_id).where(ProviderChannel.stopped_at.is_(None))
        # Not while consent is gone (only a reconnection helps; the sync says so already).
        ids.update(session.scalars(select(Connection.id).where(
            Connection.kind.in_(PROVIDER_KINDS), Connection.sync_mode == SyncMode.REALTIME,
            Connection.id.not_in(has_live),
            or_(Connection.last_error_kind.is_(None), Connection.last_error_kind != "reconnect"),
        ).limit(limit)))
    unwanted = [ProviderChannel.expires_at <= now + renew_before, Connection.sync_mode != SyncMode.REALTIME]
    if not push_possible(base_url):  # the base URL changed to http: stop every channel
        unwanted.append(ProviderChannel.stopped_at.is_(None))
    ids.update(session.scalars(select(ProviderChannel.connection_id).join(Connection).where(
        ProviderChannel.stopped_at.is_(None), or_(*unwanted)).limit(limit)))
    return sorted(ids)


def _as_channel(row: ProviderChannel) -> Channel:
    # The secret itself is not kept (only its hash); stop/extend/reauthorise do not need it.
    return Channel(row.channel_id, row.resource_id or "", "", row.expires_at.timestamp())


def _expiry(channel: Channel) -> datetime:
    return datetime.fromtimestamp(channel.expires_at, UTC)


def _mark_push(conn: Connection, until: datetime | None) -> None:
    extra = dict(conn.extra or {})
    if until is None:
        extra.pop(PUSH_UNTIL_KEY, None)
    else:
        extra[PUSH_UNTIL_KEY] = until.isoformat()
    conn.extra = extra


def ensure_channel(ctx: ChannelContext, connection_id: int, *, now: datetime | None = None) -> str:
    """Bring one connection's channels to what its mode asks for. Returns what happened:
    "subscribed", "renewed", "kept", "stopped", "none" (no channel wanted, none live),
    "missing", or "failed" (logged; the next periodic run tries again, polling continues)."""
    now = now or utcnow()
    with ctx.sessions() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            return "missing"
        live = live_channels(session, connection_id)
        wanted = wants_channel(conn, ctx.base_url)
        if not wanted and not live:
            return "none"
        if wanted and len(live) == 1 and live[0].expires_at > now + ctx.renew_before:
            return "kept"
        try:
            with ctx.open_channels(session, conn) as provider:
                if not wanted:
                    _stop_all(provider, live, now)
                    _mark_push(conn, None)
                    session.commit()
                    return "stopped"
                outcome = _renew(ctx, session, conn, provider, live, now) if live else \
                    _subscribe(ctx, session, conn, provider, now)
                session.commit()
                return outcome
        except (StoreUnavailable, CalsyncError) as exc:
            session.rollback()
            log.warning("channel of connection %s: %s (%s)", connection_id, getattr(exc, "kind", "error"),
                        type(exc).__name__)
            return "failed"


def _subscribe(ctx: ChannelContext, session: Session, conn: Connection, provider: ChangeChannels,
               now: datetime) -> str:
    secret = new_secret()
    kind = ChannelProvider(provider.provider)
    channel = provider.subscribe(address=ctx.base_url + HOOK_PATHS[kind],
                                 lifecycle_address=ctx.base_url + LIFECYCLE_PATH, secret=secret, now=now)
    session.add(ProviderChannel(
        company_id=conn.company_id, connection_id=conn.id, provider=kind, channel_id=channel.id,
        resource_id=channel.resource_id or None, secret_hash=secret_hash(secret), expires_at=_expiry(channel),
        created_at=now, recent_keys=[], extra={}))
    _mark_push(conn, _expiry(channel))
    log.info("connection %s: %s channel up until %s", conn.id, kind.value, _expiry(channel).isoformat())
    return "subscribed"


def _renew(ctx: ChannelContext, session: Session, conn: Connection, provider: ChangeChannels,
           live: list[ProviderChannel], now: datetime) -> str:
    current, older = live[-1], live[:-1]
    _stop_all(provider, older, now)  # leftovers of an interrupted renewal
    try:
        extended = provider.extend(_as_channel(current), now)
    except ChannelGone:
        current.stopped_at = now
        _subscribe(ctx, session, conn, provider, now)
        return "renewed"
    if extended is not None:  # Graph: the same subscription, a later expiry
        current.expires_at, current.renewed_at = _expiry(extended), now
        _mark_push(conn, current.expires_at)
        return "renewed"
    # Google: a new channel first, then stop the old one, so no change falls between them.
    _subscribe(ctx, session, conn, provider, now)
    _stop_all(provider, [current], now)
    return "renewed"


def _stop_all(provider: ChangeChannels, rows: list[ProviderChannel], now: datetime) -> None:
    for row in rows:
        try:
            provider.stop(_as_channel(row))
        except (StoreUnavailable, CalsyncError) as exc:
            # It expires by itself; its late notifications meet a stopped row and are ignored.
            log.info("could not stop channel %s (%s); it expires by itself", row.id, type(exc).__name__)
        row.stopped_at = now


def stop_channels(ctx: ChannelContext, connection_id: int, *, now: datetime | None = None) -> int:
    """Stop every live channel of a connection at its provider, before the connection is
    deleted or disconnected (best effort). Returns how many were live."""
    now = now or utcnow()
    with ctx.sessions() as session:
        conn = session.get(Connection, connection_id)
        live = live_channels(session, connection_id)
        if conn is None or not live:
            return 0
        try:
            with ctx.open_channels(session, conn) as provider:
                _stop_all(provider, live, now)
        except (StoreUnavailable, CalsyncError) as exc:
            log.info("channels of connection %s not stopped at the provider (%s)", connection_id,
                     type(exc).__name__)
            for row in live:
                row.stopped_at = now
        _mark_push(conn, None)
        session.commit()
        return len(live)


def stop_channels_before_disconnect(sessions: sessionmaker[Session], vault: Vault, setup: ProviderSetup,
                                    connection_id: int) -> int:
    """stop_channels for the disconnect flow (feeds.calendars.provider_connect), which runs
    before the tokens are revoked: a channel can only be stopped with them."""
    context = ChannelContext(sessions, "", provider_channels(sessions, vault, setup))
    return stop_channels(context, connection_id)


LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def handle_lifecycle(ctx: ChannelContext, channel_row_id: int, event: str, *,
                     now: datetime | None = None) -> str:
    """What a Graph lifecycle notification asks for ("Reduce missing subscriptions and change
    notifications"). Returns the outcome, as ensure_channel does, or "missed"."""
    now = now or utcnow()
    with ctx.sessions() as session:
        row = session.get(ProviderChannel, channel_row_id)
        if row is None or row.stopped_at is not None:
            return "missing"
        connection_id = row.connection_id
        if event == "missed":
            # Some notifications were not delivered: the next sync lists the calendar in full
            # (as after a 410), which finds every change whatever was missed.
            conn = session.get(Connection, connection_id)
            if conn is not None:
                conn.sync_token = None
                conn.next_sync_at = now
                request_job(session, "sync_connection", conn.id)  # queued once this commits
            session.commit()
            return "missed"
        if event == "subscriptionRemoved":
            row.stopped_at = now  # Graph has dropped it; a new one is made below
            session.commit()
            return ensure_channel(ctx, connection_id, now=now)
        conn = session.get(Connection, connection_id)
        if conn is None:
            return "missing"
        try:
            with ctx.open_channels(session, conn) as provider:
                try:
                    provider.reauthorize(_as_channel(row))
                    extended = provider.extend(_as_channel(row), now)
                    if extended is not None:
                        row.expires_at, row.renewed_at = _expiry(extended), now
                        _mark_push(conn, row.expires_at)
                except ChannelGone:
                    row.stopped_at = now
                    _subscribe(ctx, session, conn, provider, now)
                session.commit()
                return "renewed"
        except (StoreUnavailable, CalsyncError) as exc:
            session.rollback()
            log.warning("reauthorising channel %s failed (%s); the periodic run retries", channel_row_id,
                        type(exc).__name__)
            return "failed"
