"""outbox, history, conflicts, linked items

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 04:03:21.349091
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('appointment_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_appointment_change_appointment_id_appointment'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_appointment_change'))
    )
    with op.batch_alter_table('appointment_change', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_appointment_change_appointment_id'), ['appointment_id'], unique=False)

    op.create_table('linked_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('href', sa.String(length=1000), nullable=True),
    sa.Column('etag', sa.String(length=300), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('pushed_revision', sa.Integer(), nullable=False),
    sa.Column('pushed_sequence', sa.Integer(), nullable=False),
    sa.Column('synced_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('synced_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_linked_item_appointment_id_appointment'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], name=op.f('fk_linked_item_connection_id_connection'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_linked_item')),
    sa.UniqueConstraint('connection_id', 'appointment_id', name='uq_linked_item_conn_appt')
    )
    with op.batch_alter_table('linked_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_linked_item_appointment_id'), ['appointment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_linked_item_connection_id'), ['connection_id'], unique=False)

    op.create_table('outbox_email',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=True),
    sa.Column('uid', sa.String(length=255), nullable=True),
    sa.Column('sequence', sa.Integer(), nullable=True),
    sa.Column('dedupe_key', sa.String(length=400), nullable=False),
    sa.Column('to_address', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('message', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_outbox_email_appointment_id_appointment'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_outbox_email_company_id_company'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_email')),
    sa.UniqueConstraint('dedupe_key', name='uq_outbox_email_dedupe_key')
    )
    with op.batch_alter_table('outbox_email', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_email_appointment_id'), ['appointment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_email_company_id'), ['company_id'], unique=False)
        batch_op.create_index('ix_outbox_email_status_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('sync_conflict',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('calendar_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('calendar_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('calendar_deleted', sa.Boolean(), nullable=False),
    sa.Column('platform_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('platform_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_sync_conflict_appointment_id_appointment'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_sync_conflict_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], name=op.f('fk_sync_conflict_connection_id_connection'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_conflict'))
    )
    with op.batch_alter_table('sync_conflict', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_conflict_appointment_id'), ['appointment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_conflict_company_id'), ['company_id'], unique=False)

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bidirectional_opt_out', sa.Boolean(), server_default=sa.false(), nullable=False))




def downgrade() -> None:

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('bidirectional_opt_out')

    with op.batch_alter_table('sync_conflict', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_conflict_company_id'))
        batch_op.drop_index(batch_op.f('ix_sync_conflict_appointment_id'))

    op.drop_table('sync_conflict')
    with op.batch_alter_table('outbox_email', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_email_status_due')
        batch_op.drop_index(batch_op.f('ix_outbox_email_company_id'))
        batch_op.drop_index(batch_op.f('ix_outbox_email_appointment_id'))

    op.drop_table('outbox_email')
    with op.batch_alter_table('linked_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_linked_item_connection_id'))
        batch_op.drop_index(batch_op.f('ix_linked_item_appointment_id'))

    op.drop_table('linked_item')
    with op.batch_alter_table('appointment_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_appointment_change_appointment_id'))

    op.drop_table('appointment_change')

