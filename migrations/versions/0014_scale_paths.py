"""performance indexes and caches (issue 17)

No schema change. The scan issue 17 found (a reschedule's overlap check read every later
appointment of the staff member) is closed by bounding the query on both sides of the existing
ix_appointment_staff_start (appointments last at most a day: start - 1 day < start_at < end),
not by a new index: tests/integration/test_indexes.py checks the plan on PostgreSQL, and
docs/scale.md has the flat curve at 10k and 1M. The caches of issue 17 (segment indexes, feed
headers) live in process memory. The revision stays, so the chain 0013 → 0014 is unchanged.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 07:30:00.000000
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
