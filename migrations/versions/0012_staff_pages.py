"""admin and staff pages (issue 15)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 07:30:00.000000
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # When a staff member opted out of two-way sync (from their self-service page), so the admin
    # sees since when their calendar's moves no longer change bookings. NULL: not opted out, or
    # opted out before this column existed (bidirectional_opt_out, from 0004, is the switch).
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bidirectional_opt_out_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('bidirectional_opt_out_at')
