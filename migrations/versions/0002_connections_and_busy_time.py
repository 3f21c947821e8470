"""connections and busy time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:27:40.425102
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('connection',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('url_sealed', sa.Text(), nullable=False),
    sa.Column('url_display', sa.String(length=300), nullable=False),
    sa.Column('username', sa.String(length=320), nullable=True),
    sa.Column('password_sealed', sa.Text(), nullable=True),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('sync_mode', sa.String(length=16), nullable=False),
    sa.Column('interval_minutes', sa.Integer(), nullable=False),
    sa.Column('all_day', sa.String(length=8), nullable=False),
    sa.Column('treat_all_busy', sa.Boolean(), nullable=False),
    sa.Column('writable', sa.Boolean(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_kind', sa.String(length=32), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('busy_count', sa.Integer(), nullable=False),
    sa.Column('http_etag', sa.String(length=300), nullable=True),
    sa.Column('http_last_modified', sa.String(length=100), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('sync_token', sa.Text(), nullable=True),
    sa.Column('ctag', sa.String(length=300), nullable=True),
    sa.Column('window_key', sa.String(length=32), nullable=True),
    sa.Column('next_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_connection_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_connection_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_connection'))
    )
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connection_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_connection_next_sync_at'), ['next_sync_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_connection_staff_id'), ['staff_id'], unique=False)

    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_alert_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], name=op.f('fk_alert_connection_id_connection'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert'))
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alert_connection_id'), ['connection_id'], unique=False)

    op.create_table('busy_block',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('item_href', sa.String(length=1000), nullable=True),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], name=op.f('fk_busy_block_connection_id_connection'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_busy_block_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_busy_block'))
    )
    with op.batch_alter_table('busy_block', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_busy_block_connection_id'), ['connection_id'], unique=False)
        batch_op.create_index('ix_busy_block_staff_start', ['staff_id', 'start_at'], unique=False)

    op.create_table('sync_item',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('href', sa.String(length=1000), nullable=False),
    sa.Column('etag', sa.String(length=300), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('uid', sa.String(length=500), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], name=op.f('fk_sync_item_connection_id_connection'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('connection_id', 'href', name=op.f('pk_sync_item'))
    )



def downgrade() -> None:

    op.drop_table('sync_item')
    with op.batch_alter_table('busy_block', schema=None) as batch_op:
        batch_op.drop_index('ix_busy_block_staff_start')
        batch_op.drop_index(batch_op.f('ix_busy_block_connection_id'))

    op.drop_table('busy_block')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_connection_id'))
        batch_op.drop_index(batch_op.f('ix_alert_company_id'))

    op.drop_table('alert')
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connection_staff_id'))
        batch_op.drop_index(batch_op.f('ix_connection_next_sync_at'))
        batch_op.drop_index(batch_op.f('ix_connection_company_id'))

    op.drop_table('connection')

