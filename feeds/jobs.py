"""Background work on a Huey queue: find due connections every minute, sync each in its own job;
deliver the email outbox.

Storage: SQLite in the data dir for the embedded default (the consumer runs inside
`calsync serve`), Redis with CALSYNC_QUEUE_URL=redis://... where `calsync worker` processes on
any number of machines share the work. Tasks are registered on the Huey instance built here,
so nothing is created at import time.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from huey import Huey, RedisHuey, SqliteHuey, crontab
from sqlalchemy import func, or_, select

from calsync.feeds.calendars.channel_messages import claim_channel_sync
from calsync.feeds.calendars.channels import (
    ChannelContext,
    connections_to_check,
    ensure_channel,
    handle_lifecycle,
)
from calsync.feeds.calendars.health import mark_stale
from calsync.feeds.calendars.lease import FairShare, process_owner_prefix
from calsync.feeds.calendars.sync import SyncContext, SyncOutcome, sync_connection
from calsync.feeds.mail.delivery import DeliveryReport, MailContext, deliver_due, due_email_ids
from calsync.feeds.private_files import private_dir, private_file
from calsync.models import Connection, utcnow

log = logging.getLogger("calsync.jobs")
# Seconds after which a notified sync that found the connection held by another sync tries
# again: a sync takes well under a second, so the first retry usually finds it free.
CHANNEL_SYNC_RETRIES = (1.0, 2.0, 4.0, 8.0)
QUEUE_NAME = "calsync"


def make_huey(queue_url: str | None, data_dir: Path, *, immediate: bool = False) -> Huey:
    if queue_url and queue_url.startswith(("redis://", "rediss://", "unix://")):
        name, url = split_queue_name(queue_url)
        return RedisHuey(name, url=url, results=False, immediate=immediate)
    path = Path(queue_url[len("sqlite:///"):]) if queue_url else data_dir / "queue.sqlite3"
    if queue_url:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        private_dir(data_dir)
    # Created 0600 before SQLite opens it; its -wal and -shm files inherit that (settings.py).
    private_file(path)
    return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, immediate=immediate)


def split_queue_name(queue_url: str) -> tuple[str, str]:
    """The queue name from `?queue=NAME` (default "calsync") and the URL without it, so that
    several deployments (staging and production, parallel test runs) can share one Redis.
    redis-py would refuse the unknown parameter, hence it is taken off here."""
    parts = urlsplit(queue_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [value for key, value in query if key == "queue" and value]
    rest = urlencode([(key, value) for key, value in query if key != "queue"])
    return (names[-1] if names else QUEUE_NAME), urlunsplit(parts._replace(query=rest))


def due_connection_ids(ctx: SyncContext, now: datetime, limit: int = 1000) -> list[int]:
    """Due connections whose lease is free, taking companies in turn (each company's longest
    waiting first): a company with hundreds of due calendars does not queue them all ahead of
    another company's one."""
    turn = func.row_number().over(partition_by=Connection.company_id,
                                  order_by=(Connection.next_sync_at, Connection.id)).label("turn")
    due = (select(Connection.id, Connection.next_sync_at, turn)
           .where(Connection.next_sync_at.is_not(None), Connection.next_sync_at <= now)
           .where(or_(Connection.lease_until.is_(None), Connection.lease_until < now))
           .subquery())
    with ctx.sessions() as session:
        return list(session.scalars(
            select(due.c.id).order_by(due.c.turn, due.c.next_sync_at, due.c.id).limit(limit)))


class Jobs:
    """The queue and its tasks, bound to one SyncContext."""

    def __init__(self, huey: Huey, context: Callable[[], SyncContext],
                 mail: Callable[[], MailContext] | None = None,
                 channels: Callable[[], ChannelContext | None] | None = None) -> None:
        self.huey = huey
        self._context = context
        self._mail = mail
        self._channels = channels
        self.threads = 0  # worker threads of this process's consumer (set by consumer())
        # Retries are the sync's own business (backoff recorded in the connection's health);
        # a job that fails outright is simply picked up again by the next schedule run. So is a
        # job lost with a killed worker: Huey has no acknowledgement, so the job is gone from
        # the queue, but the connection's next_sync_at was never moved on, and once its lease
        # has expired (CALSYNC_SYNC_LEASE_SECONDS) the scheduler finds it due and queues it again.
        self.sync_task = huey.task(name="sync_connection")(self._sync)
        self.schedule_task = huey.periodic_task(crontab(minute="*"), name="schedule_due")(
            self._schedule_due
        )
        # Also the feeds.mailer's business: leases keep two deliver jobs from sending the same
        # email, and failed attempts are rescheduled in the outbox row, found by the schedule.
        self.deliver_task = huey.task(name="deliver_outbox")(self._deliver)
        # Change channels of google/microsoft connections (feeds/calendars/channels.py): a
        # notification queues channel_sync; every minute the channels that are missing, expire
        # within a day or are no longer wanted are queued for ensure_channel; Graph's lifecycle
        # notifications each have a task.
        self.channel_sync_task = huey.task(name="channel_sync")(self._channel_sync)
        self.ensure_channel_task = huey.task(name="ensure_channel")(self._ensure_channel)
        self.channels_task = huey.periodic_task(crontab(minute="*"), name="check_channels")(
            self._check_channels)
        self.lifecycle_tasks = {
            name: huey.task(name=name)(lambda row_id, _event=event: self._lifecycle(row_id, _event))
            for name, event in (("channel_reauthorize", "reauthorizationRequired"),
                                ("channel_recreate", "subscriptionRemoved"), ("channel_missed", "missed"))}

    def _sync(self, connection_id: int, scheduled: bool = False) -> dict[str, Any]:
        outcome: SyncOutcome = sync_connection(self._context(), connection_id, due_only=scheduled,
                                               share=self.fair_share() if scheduled else None)
        return asdict(outcome)

    def fair_share(self) -> FairShare | None:
        """While other companies' connections wait, one company's scheduled syncs take at most
        half of this process's worker threads: its slow calendars (each held up to the
        deadline, CALSYNC_FETCH_TIMEOUT_SECONDS or 0.8 of the lease) leave the other half to
        everyone else. A deferred job is dropped; the connection stays due and the next
        schedule run queues it again. (A "Sync now" someone asked for is not held back.)"""
        if self.threads < 2:
            return None  # one thread cannot be shared
        return FairShare(process_owner_prefix(), self.threads // 2)

    def _schedule_due(self) -> int:
        ctx = self._context()
        now = utcnow()
        with ctx.sessions.begin() as session:
            mark_stale(session, now)
        due = due_connection_ids(ctx, now)
        for connection_id in due:
            # Scheduled: a copy that waited in the queue past the next scheduler run skips a
            # connection that has been synced meanwhile.
            self.sync_task(connection_id, True)
        if due:
            log.info("queued %d due connection syncs", len(due))
        self._schedule_delivery(now)
        return len(due)

    def _deliver(self) -> dict[str, Any]:
        report = deliver_due(self._mail()) if self._mail else DeliveryReport(not_configured=True)
        return asdict(report)

    def _schedule_delivery(self, now: datetime) -> None:
        """Queue a delivery run when emails are due: the outbox rows are the source of truth,
        so an email whose enqueue after commit was lost goes out within a minute."""
        mail = self._mail() if self._mail else None
        if mail is not None and mail.smtp is not None and due_email_ids(mail, now, limit=1):
            self.deliver_task()

    def _channel_sync(self, channel_row_id: int, attempt: int = 0) -> dict[str, Any]:
        """The sync a change notification asked for. When another sync holds the connection
        (its lease), the change may have come after that sync read the calendar: this sync is
        tried again a moment later (CHANNEL_SYNC_RETRIES), and the connection is made due, so
        the next schedule run reads it should every try find it held. Without the retries a
        change notified while the booking's own copy was being written waited up to a minute
        for the scheduler (and forever where no scheduler runs)."""
        ctx = self._context()
        with ctx.sessions.begin() as session:
            connection_id = claim_channel_sync(session, channel_row_id)
        if connection_id is None:
            return {"status": "missing"}
        outcome = sync_connection(ctx, connection_id)
        if outcome.status == "skipped":
            with ctx.sessions.begin() as session:
                conn = session.get(Connection, connection_id)
                if conn is not None:
                    conn.next_sync_at = utcnow()
            if attempt < len(CHANNEL_SYNC_RETRIES):
                self.channel_sync_task.schedule(args=(channel_row_id, attempt + 1),
                                                delay=CHANNEL_SYNC_RETRIES[attempt])
        return asdict(outcome)

    def _ensure_channel(self, connection_id: int) -> str:
        channels = self._channels() if self._channels else None
        return ensure_channel(channels, connection_id) if channels is not None else "none"

    def _check_channels(self) -> int:
        channels = self._channels() if self._channels else None
        if channels is None:
            return 0
        with channels.sessions() as session:
            ids = connections_to_check(session, channels.base_url, utcnow(), channels.renew_before)
        for connection_id in ids:
            self.ensure_channel_task(connection_id)
        return len(ids)

    def _lifecycle(self, channel_row_id: int, event: str) -> str:
        channels = self._channels() if self._channels else None
        return handle_lifecycle(channels, channel_row_id, event) if channels is not None else "none"

    def enqueue_delivery(self) -> None:
        self.deliver_task()

    def enqueue_sync(self, connection_id: int) -> None:
        self.sync_task(connection_id)

    def enqueue(self, task: str, argument: int) -> None:
        """Enqueue a task requested with change_effects.request_job."""
        tasks = {"sync_connection": self.sync_task, "channel_sync": self.channel_sync_task,
                 "ensure_channel": self.ensure_channel_task, **self.lifecycle_tasks}
        tasks[task](argument)

    def start_in_background(self, workers: int = 2, periodic: bool = True) -> Any:
        """Start a consumer in threads of this process and return it (stop it with .stop()).

        Huey's consumer takes over SIGINT/SIGTERM/SIGHUP as if it owned the process; here the
        process belongs to someone else (the web server, a test run), so their handlers are
        put back.
        """
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        consumer = self.consumer(workers=workers, periodic=periodic)
        consumer.start()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        return consumer

    def consumer(self, workers: int = 2, periodic: bool = True) -> Any:
        self.threads = workers
        # A queue that cannot block (the embedded SQLite one) is polled: Huey's default backoff
        # lets an idle worker sleep up to 10 s, so a change notification after a quiet minute
        # waited seconds before its sync (bench google --idle 30: p95 2.9 s). Half a second at
        # most costs two small SELECTs a second per idle worker. Redis blocks instead.
        return self.huey.create_consumer(
            workers=workers, worker_type="thread", periodic=periodic, check_worker_health=True,
            max_delay=0.5,
        )
