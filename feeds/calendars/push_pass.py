"""One sync pass's writes into a linked or additional calendar (DESIGN.md "Push a booking"):
the pending copies, each a conditional PUT or DELETE, a 412 re-read and decided again, and what
the pass wrote remembered as the calendar's sync state.

Called by feeds.sync under the connection's lease, after the calendar-side changes were
reconciled and before the sync token moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from calsync.feeds.calendars.push import (
    PushJob,
    PushResult,
    content_hash,
    execute_push,
    job_for,
    plan_pushes,
    record_push,
)
from calsync.feeds.calendars.twoway import reconcile_item
from calsync.feeds.sources.caldav_source import dav_client
from calsync.models import Appointment, Connection, LinkedItem, SyncItem, utcnow

if TYPE_CHECKING:  # feeds.sync calls in here; only its types are needed
    from calsync.feeds.calendars.sync import SyncContext, _Job

log = logging.getLogger("calsync.sync")


@dataclass
class PushSummary:
    """What one pass wrote into the calendar."""

    written: int = 0
    failed: int = 0
    created: int = 0  # new items (If-None-Match: *), as opposed to updates and deletions
    # href → (ETag, content hash, UID) of our copies as we left them; None for a deleted copy.
    # The next listing then knows its own writes by their ETags and does not load them again.
    fresh: dict[str, tuple[str | None, str | None, str | None] | None] = field(default_factory=dict)


def push_pending(ctx: SyncContext, job: _Job) -> PushSummary:
    """Write pending booking copies into the calendar."""
    with ctx.sessions.begin() as session:
        conn = session.get(Connection, job.id)
        if conn is None:
            return PushSummary()
        plans = plan_pushes(session, conn)
        uids = {p.appointment_id: session.get(Appointment, p.appointment_id).uid  # type: ignore[union-attr]
                for p in plans}
    summary = PushSummary()
    if not plans:
        return summary
    with dav_client(job.url, job.username, job.password, allow_private=ctx.allow_private,
                    limits=ctx.limits) as (client, _resolver):
        for plan in plans:
            uid = uids[plan.appointment_id]
            was = plan.href
            result = _push_one(ctx, client, job, uid, plan)
            if not result.ok:
                summary.failed += 1
                continue
            summary.written += 1
            summary.created += was is None and result.href is not None
            if result.href is not None:
                summary.fresh[result.href] = (result.etag, result.body_hash, uid)
            elif was is not None:
                summary.fresh[was] = None
    return summary


def remember_pushes(session: Session, conn: Connection, summary: PushSummary) -> None:
    """Store our own writes as the calendar's sync state (after the listing's, which predate
    them): an incremental listing reports them as changed, and with their ETags known they are
    neither loaded again nor taken for a staff member's edit."""
    for href, state in summary.fresh.items():
        if state is None:
            session.execute(delete(SyncItem).where(SyncItem.connection_id == conn.id,
                                                   SyncItem.href == href))
        else:
            etag, digest, uid = state
            session.merge(SyncItem(connection_id=conn.id, href=href, etag=etag,
                                   content_hash=digest, uid=uid, last_seen_at=utcnow()))


def _push_one(ctx: SyncContext, client: Any, job: _Job, uid: str, plan: PushJob) -> PushResult:
    try:
        result = execute_push(client, job.url, uid, plan)
        if result.precondition_failed and plan.href is not None:
            # 412: the item changed since we last saw it. Re-read it and decide again —
            # never overwrite blindly (PROTOCOL.md "CalDAV").
            retry = _redecide(ctx, client, plan)
            if retry is not None:
                result = execute_push(client, job.url, uid, retry)
    except Exception as exc:  # the server went away mid-push: keep it pending, retry later
        log.info("push of appointment %s failed: %s", plan.appointment_id, type(exc).__name__)
        result = PushResult(plan, False, error="The calendar server could not be reached to store "
                            "the booking; it will be retried.")
    with ctx.sessions.begin() as session:
        record_push(session, result)
    return result


def _redecide(ctx: SyncContext, client: Any, plan: PushJob) -> PushJob | None:
    """After a 412: the plan to retry with the item's current ETag, or None when the calendar
    side's change was handed to two-way sync (which re-queues a push if one is still due)."""
    current = client.request(plan.href, "GET")
    if current.status in (404, 410):
        reconcile_item(ctx.sessions, plan.item_id, None)
        return None
    raw = current.raw
    body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    etag = current.headers.get("ETag")
    with ctx.sessions() as session:
        item = session.get(LinkedItem, plan.item_id)
        known_hash = item.content_hash if item else None
    if content_hash(body) == known_hash:
        plan.etag = etag  # only the version moved (the server rewrote it): write again
        return plan
    reconcile_item(ctx.sessions, plan.item_id, (body, etag))
    with ctx.sessions.begin() as session:
        item = session.get(LinkedItem, plan.item_id)
        if item is None or item.state != "pending":
            return None
        # Plan again from the appointment as it is now (the calendar's change may just have
        # moved it), with the ETag we have just read.
        return job_for(session, item)
