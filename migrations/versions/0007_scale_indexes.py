"""scale indexes

Indexes found missing by reviewing the feed, availability, booking and sync queries with
EXPLAIN on PostgreSQL with a million appointments (issue 6):

- appointment (staff_id, end_at): availability and the booking check ask for a staff member's
  appointments with end_at after a moment; without it they read the staff member's whole history
  before that moment.
- customer (company_id, name): booking reuses a matching customer; without it every booking
  reads all of the company's customers.
- feed_token (scope, scope_id): deleting a staff member or group revokes its tokens; without it
  that reads every token of every company.
- sync_conflict (connection_id): deleting a connection sets it to NULL; without it that reads
  every conflict.

CREATE INDEX holds writes to its table while it builds (about a second per million rows); run
`calsync init` in the deploy step, before the new code takes traffic.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 07:00:00.000000
"""

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('appointment', schema=None) as batch_op:
        batch_op.create_index('ix_appointment_staff_end', ['staff_id', 'end_at'], unique=False)

    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.create_index('ix_customer_company_name', ['company_id', 'name'], unique=False)

    with op.batch_alter_table('feed_token', schema=None) as batch_op:
        batch_op.create_index('ix_feed_token_scope', ['scope', 'scope_id'], unique=False)

    with op.batch_alter_table('sync_conflict', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_conflict_connection_id'), ['connection_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sync_conflict', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_conflict_connection_id'))

    with op.batch_alter_table('feed_token', schema=None) as batch_op:
        batch_op.drop_index('ix_feed_token_scope')

    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_company_name')

    with op.batch_alter_table('appointment', schema=None) as batch_op:
        batch_op.drop_index('ix_appointment_staff_end')
