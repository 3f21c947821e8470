"""Background work on a Huey queue: find due connections every minute, sync each in its own job.

Storage: SQLite in the data dir for the embedded default (the consumer runs inside
`calsync serve`), Redis with CALSYNC_QUEUE_URL=redis://... where `calsync worker` processes on
any number of machines share the work. Tasks are registered on the Huey instance built here,
so nothing is created at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey, crontab
from sqlalchemy import or_, select

from feeds.health import mark_stale
from feeds.sync import SyncContext, SyncOutcome, sync_connection
from models import Connection, utcnow

log = logging.getLogger("calsync.jobs")
QUEUE_NAME = "calsync"


def make_huey(queue_url: str | None, data_dir: Path, *, immediate: bool = False) -> Huey:
    if queue_url and queue_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=queue_url, results=False, immediate=immediate)
    path = Path(queue_url[len("sqlite:///"):]) if queue_url else data_dir / "queue.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, immediate=immediate)


def due_connection_ids(ctx: SyncContext, now: datetime, limit: int = 1000) -> list[int]:
    with ctx.sessions() as session:
        return list(
            session.scalars(
                select(Connection.id)
                .where(Connection.next_sync_at.is_not(None), Connection.next_sync_at <= now)
                .where(or_(Connection.lease_until.is_(None), Connection.lease_until < now))
                .order_by(Connection.next_sync_at)
                .limit(limit)
            )
        )


class Jobs:
    """The queue and its tasks, bound to one SyncContext."""

    def __init__(self, huey: Huey, context: Callable[[], SyncContext]) -> None:
        self.huey = huey
        self._context = context
        # Retries are the sync's own business (backoff recorded in the connection's health);
        # a job that fails outright is simply picked up again by the next schedule run.
        self.sync_task = huey.task(name="sync_connection")(self._sync)
        self.schedule_task = huey.periodic_task(crontab(minute="*"), name="schedule_due")(
            self._schedule_due
        )

    def _sync(self, connection_id: int) -> dict[str, Any]:
        outcome: SyncOutcome = sync_connection(self._context(), connection_id)
        return asdict(outcome)

    def _schedule_due(self) -> int:
        ctx = self._context()
        now = utcnow()
        with ctx.sessions.begin() as session:
            mark_stale(session, now)
        due = due_connection_ids(ctx, now)
        for connection_id in due:
            self.sync_task(connection_id)
        if due:
            log.info("queued %d due connection syncs", len(due))
        return len(due)

    def enqueue_sync(self, connection_id: int) -> None:
        self.sync_task(connection_id)

    def consumer(self, workers: int = 2, periodic: bool = True) -> Any:
        return self.huey.create_consumer(
            workers=workers, worker_type="thread", periodic=periodic, check_worker_health=True
        )
