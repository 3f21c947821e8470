"""The sync lease of a connection: who holds it, until when, and the checks that fence a sync's
writes (feeds/calendars/sync.py takes and releases it).

- A lease is `lease_owner` (a token unique to one sync: host, process, random part) and
  `lease_until` on the connection row, taken by one conditional UPDATE.
- A sync's work ends inside its lease: the network by NETWORK_SHARE of it, parsing and
  expansion by WORK_SHARE; the rest is for the final transaction.
- Fencing (Kleppmann, "How to do distributed locking"): a worker paused past its lease (a
  stopped VM, a long GC, a database that took minutes to answer) must not write over the
  results of the worker that took the connection over. Its final transaction opens with
  `fence`, a conditional UPDATE on owner and expiry, and writes nothing when that fails; its
  writes into a linked calendar check `holds_lease` before each PUT or DELETE.
- Fair share: a scheduled sync takes the lease only while its company holds fewer than its
  share of the worker process's leases, or no other company's connection is waiting.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from calsync.models import Connection

# Shares of the lease: the network (fetching, CalDAV reading and writing) ends by the first,
# parsing and expansion by the second; the rest is for the final transaction. So a live worker
# never outlasts its lease, and another worker never syncs the same calendar at the same time.
NETWORK_SHARE = 0.8
WORK_SHARE = 0.9
LOST_LEASE = ("This sync ran past its lease and another worker took the connection over; its "
              "results were discarded.")


@dataclass(frozen=True)
class Lease:
    """This sync's hold on a connection: the owner token written into the row and its clock."""

    owner: str
    taken_at: datetime  # the `now` the lease was taken at (lease_until = taken_at + seconds)
    started: float  # time.monotonic() then
    seconds: int

    def now(self) -> datetime:
        """The sync's clock, in the lease's time base (a caller may pass its own `now`)."""
        return self.taken_at + timedelta(seconds=time.monotonic() - self.started)

    @property
    def network_deadline(self) -> float:
        return self.started + NETWORK_SHARE * self.seconds

    @property
    def work_deadline(self) -> float:
        return self.started + WORK_SHARE * self.seconds


@dataclass(frozen=True)
class FairShare:
    """A scheduled sync's place among its worker process's threads: while connections of other
    companies are due and waiting, one company's syncs hold at most `per_company` of this
    process's leases. Counted from the lease rows (`lease_owner` starts with `process`), so
    the rule holds per process wherever its threads' jobs came from, and costs nothing when
    only one company is waiting (an install with one company is never held back)."""

    process: str  # the lease-owner prefix of this worker process (process_owner_prefix())
    per_company: int


def process_owner_prefix() -> str:
    # Host and process id say which worker holds a lease (and whether it still lives).
    return f"{socket.gethostname()[:40]}:{os.getpid()}:"


def within_share(share: FairShare, now: datetime) -> ColumnElement[bool]:
    """The connection's company holds fewer than its share of this process's live leases, or
    no other company's connection is due and waiting (then there is nobody to be fair to)."""
    mine, other = aliased(Connection), aliased(Connection)
    held = (select(func.count()).select_from(mine)
            .where(mine.company_id == Connection.company_id, mine.lease_until >= now,
                   mine.lease_owner.startswith(share.process, autoescape=True))
            .scalar_subquery())
    waiting = exists().where(
        other.company_id != Connection.company_id,
        other.next_sync_at.is_not(None), other.next_sync_at <= now,
        or_(other.lease_until.is_(None), other.lease_until < now))
    return or_(held < share.per_company, ~waiting)


def fence(session: Session, connection_id: int, lease: Lease) -> Connection | None:
    """Open the final transaction: the connection, if this sync still holds its lease (same
    owner token, not expired by the sync's clock), else None — then the caller discards its
    results. The check is a write (a no-op UPDATE) so that it also locks: the row on
    PostgreSQL, the database on SQLite; no other worker can take the lease over between the
    check and the commit."""
    held = session.execute(
        update(Connection)
        .where(Connection.id == connection_id, Connection.lease_owner == lease.owner,
               Connection.lease_until > lease.now())
        .values(lease_owner=lease.owner)
        .execution_options(synchronize_session=False)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Connection, connection_id)


def holds_lease(sessions: sessionmaker[Session], connection_id: int, lease: Lease) -> bool:
    """Whether this sync still holds its lease (a read, for stopping early: pushes, reconcile)."""
    with sessions() as session:
        return bool(session.scalar(select(func.count()).select_from(Connection).where(
            Connection.id == connection_id, Connection.lease_owner == lease.owner,
            Connection.lease_until > lease.now())))


def release(conn: Connection) -> None:
    """Inside a fenced transaction: the lease is this sync's."""
    conn.lease_until = None
    conn.lease_owner = None
