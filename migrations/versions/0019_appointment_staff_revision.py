"""appointment.staff_revision: which feed revision of its staff member last changed it (issue 17)

The first GET of a feed after one appointment moved listed every appointment of the staff
member in the window (id, revision) to find the one that changed: most of the time that GET
spent in the database. Each change now writes the staff member's new feed revision into the
appointment it touches, and (staff_id, staff_revision) is indexed, so a segment made at
revision r is brought up to date from the appointments with staff_revision > r. Existing rows
get 0: a segment older than the migration is rebuilt the way it was before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appointment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staff_revision", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index("ix_appointment_staff_revision", ["staff_id", "staff_revision"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("appointment", schema=None) as batch_op:
        batch_op.drop_index("ix_appointment_staff_revision")
        batch_op.drop_column("staff_revision")
