"""One sync pass's writes into a linked or additional calendar (docs/architecture.md "Push a booking"):
the pending copies, each a conditional PUT or DELETE, a 412 re-read and decided again, and what
the pass wrote remembered as the calendar's sync state.

Called by feeds.sync under the connection's lease, after the calendar-side changes were
reconciled and before the sync token moves on. Each write first checks that the lease is still
this sync's: once another worker has taken the connection over, the rest stays pending for it
(two writers racing on one calendar would each see the other's change as a staff member's edit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.orm import Session

from calsync.feeds.calendars.health import record_failure
from calsync.feeds.calendars.lease import holds_lease
from calsync.feeds.calendars.push import (
    PushJob,
    PushResult,
    content_hash,
    execute_push,
    job_for,
    plan_pushes,
    record_push,
)
from calsync.feeds.calendars.store import CalendarStore, ItemNotFound
from calsync.feeds.calendars.twoway import reconcile_item
from calsync.models import Appointment, Connection, LinkedItem, LinkedItemState, SyncItem, utcnow

if TYPE_CHECKING:  # feeds.sync calls in here; only its types are needed
    from calsync.feeds.calendars.sync import SyncContext, _Job

log = logging.getLogger("calsync.sync")


@dataclass
class PushSummary:
    """What one pass wrote into the calendar."""

    written: int = 0
    failed: int = 0
    created: int = 0  # new items (If-None-Match: *), as opposed to updates and deletions
    lost: bool = False  # the lease was lost: the pass stopped, the rest is left pending
    # href → (ETag, content hash, UID) of our copies as we left them; None for a deleted copy.
    # The next listing then knows its own writes by their ETags and does not load them again.
    fresh: dict[str, tuple[str | None, str | None, str | None] | None] = field(default_factory=dict)


def push_pending(ctx: SyncContext, job: _Job) -> PushSummary:
    """Write pending booking copies into the calendar, while the sync holds its lease."""
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
    with ctx.open_store(job) as store:
        for plan in plans:
            if not holds_lease(ctx.sessions, job.id, job.lease):
                log.warning("push pass of connection %s stopped: its lease was lost", job.id)
                summary.lost = True
                break
            uid = uids[plan.appointment_id]
            was = plan.href
            result = _push_one(ctx, store, uid, plan)
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


def finish_pushes(session: Session, conn: Connection, pushes: PushSummary) -> str | None:
    """In the sync's final (fenced) transaction: remember this pass's writes; if some failed,
    the connection's health says so (and it retries) and the sentence is returned."""
    remember_pushes(session, conn, pushes)
    if pushes.written:
        # Our writes changed the calendar after its CTag and sync token were read. The CTag is
        # no safe baseline any more: servers such as Radicale derive it from the content (a
        # staff member undoing our write brings back the CTag we stored: ABA). The sync token
        # stays one for updates and deletions — the next REPORT lists those items, and their
        # ETags are known (remember_pushes) — but not after a create: from a token older than
        # the item, an item we created and the staff member then deleted may not be reported
        # at all (Xandikos). Then the next sync lists by ETag, where a vanished booking shows
        # by its absence.
        conn.ctag = None
        if pushes.created:
            conn.sync_token = None
    if not pushes.failed:
        return None
    message = (f"{pushes.failed} booking(s) could not be written to this calendar yet; they will "
               "be retried.")
    record_failure(session, conn, "push", message, utcnow())
    return message


def _push_one(ctx: SyncContext, store: CalendarStore, uid: str, plan: PushJob) -> PushResult:
    try:
        result = execute_push(store, uid, plan)
        if result.precondition_failed and plan.href is None and result.href:
            # 412 on a create: our copy is already there (an earlier push whose answer we never
            # recorded, or a calendar linked again). We hold no version of it, so no change made
            # there can be told from ours: the appointment is the truth, written over it.
            retry = _adopt(store, uid, plan, result.href)
            if retry is not None:
                result = execute_push(store, uid, retry)
        elif result.precondition_failed and plan.href is not None:
            # 412: the item changed since we last saw it. Re-read it and decide again —
            # never overwrite blindly (docs/protocol.md "CalDAV").
            retry = _redecide(ctx, store, plan)
            if retry is not None:
                result = execute_push(store, uid, retry)
    except Exception as exc:  # the server went away mid-push: keep it pending, retry later
        log.info("push of appointment %s failed: %s", plan.appointment_id, type(exc).__name__)
        result = PushResult(plan, False, error="The calendar server could not be reached to store "
                            "the booking; it will be retried.")
    with ctx.sessions.begin() as session:
        record_push(session, result)
    return result


def _adopt(store: CalendarStore, uid: str, plan: PushJob, href: str) -> PushJob | None:
    """The plan to overwrite the item a create ran into, when it carries our UID (its name is
    made from the UID, so anything else there is not ours and is left alone)."""
    try:
        current = store.get(href)
    except ItemNotFound:
        return None  # gone since: the next pass creates it
    if f"UID:{uid}".encode() not in current.body.replace(b"\r\n ", b""):
        return None
    plan.href, plan.etag = href, current.etag
    return plan


def _redecide(ctx: SyncContext, store: CalendarStore, plan: PushJob) -> PushJob | None:
    """After a 412: the plan to retry with the item's current ETag, or None when the calendar
    side's change was handed to two-way sync (which re-queues a push if one is still due)."""
    assert plan.href is not None
    try:
        current = store.get(plan.href)
    except ItemNotFound:
        reconcile_item(ctx.sessions, plan.item_id, None)
        return None
    with ctx.sessions() as session:
        item = session.get(LinkedItem, plan.item_id)
        known_hash = item.content_hash if item else None
    if content_hash(current.body) == known_hash:
        plan.etag = current.etag  # only the version moved (the server rewrote it): write again
        return plan
    reconcile_item(ctx.sessions, plan.item_id, (current.body, current.etag))
    with ctx.sessions.begin() as session:
        item = session.get(LinkedItem, plan.item_id)
        if item is None or item.state != LinkedItemState.PENDING:
            return None
        # Plan again from the appointment as it is now (the calendar's change may just have
        # moved it), with the ETag we have just read.
        return job_for(session, item)
