"""busy timelines: each connection's busy blocks merged and packed in one row (issue 17)

Availability read every busy_block row of the range (5,000 for a busy calendar over 60 days);
it now reads one busy_timeline row per connection (feeds.scheduling.busy_timeline). The rows are
built here from the blocks already stored, so availability is the same before and after the
upgrade; from then on every write of a connection's blocks rebuilds its timeline.

The packing is repeated here rather than imported: a migration must keep doing what it did when
it was written, whatever the application code becomes. Format: sorted, disjoint [start, end)
spans as little-endian int64 pairs of UTC epoch seconds, start rounded down and end up.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 21:30:00.000000
"""

import math
import sys
from array import array
from datetime import UTC

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "busy_timeline",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("spans", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connection.id"],
            name=op.f("fk_busy_timeline_connection_id_connection"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_busy_timeline_staff_id_staff"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_busy_timeline")),
    )
    with op.batch_alter_table("busy_timeline", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_busy_timeline_staff_id"), ["staff_id"], unique=False)
    _build_existing()


def _build_existing() -> None:
    bind = op.get_bind()
    blocks = sa.table(
        "busy_block",
        sa.column("connection_id", sa.Integer()),
        sa.column("start_at", sa.DateTime(timezone=True)),
        sa.column("end_at", sa.DateTime(timezone=True)),
    )
    connections = sa.table("connection", sa.column("id", sa.Integer()), sa.column("staff_id", sa.Integer()))
    timelines = sa.table(
        "busy_timeline",
        sa.column("connection_id", sa.Integer()),
        sa.column("staff_id", sa.Integer()),
        sa.column("spans", sa.LargeBinary()),
    )
    for connection_id, staff_id in bind.execute(sa.select(connections.c.id, connections.c.staff_id)).all():
        spans: list[list[int]] = []
        rows = bind.execute(
            sa.select(blocks.c.start_at, blocks.c.end_at).where(blocks.c.connection_id == connection_id)
        ).all()
        for a, b in sorted(rows):
            if b <= a:
                continue
            # SQLite gives naive UTC values back, PostgreSQL aware ones.
            start = math.floor((a if a.tzinfo else a.replace(tzinfo=UTC)).timestamp())
            end = math.ceil((b if b.tzinfo else b.replace(tzinfo=UTC)).timestamp())
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        flat = array("q", [v for span in spans for v in span])
        if sys.byteorder == "big":
            flat.byteswap()
        bind.execute(
            sa.insert(timelines).values(connection_id=connection_id, staff_id=staff_id, spans=flat.tobytes())
        )


def downgrade() -> None:
    with op.batch_alter_table("busy_timeline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_busy_timeline_staff_id"))
    op.drop_table("busy_timeline")
