"""provider change channels (Google events.watch, Graph subscriptions) — issues 11/12

One row per change-notification channel of a google/microsoft connection in realtime mode:
the provider's channel/subscription id, what it watches, a SHA-256 hash of the secret the
provider echoes (channel token / clientState), its expiry, and the de-duplication state.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 07:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_channel',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('channel_id', sa.String(length=200), nullable=False),
    sa.Column('resource_id', sa.String(length=500), nullable=True),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_message_number', sa.BigInteger(), nullable=True),
    sa.Column('recent_keys', sa.JSON(), nullable=False),
    sa.Column('sync_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'],
                            name=op.f('fk_provider_channel_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'],
                            name=op.f('fk_provider_channel_connection_id_connection'), ondelete='CASCADE'),
    sa.CheckConstraint("provider IN ('google', 'microsoft')", name=op.f('ck_provider_channel_provider')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_channel')),
    sa.UniqueConstraint('channel_id', name=op.f('uq_provider_channel_channel_id')),
    )
    with op.batch_alter_table('provider_channel', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_channel_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_provider_channel_connection_id'), ['connection_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_provider_channel_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_channel', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_channel_expires_at'))
        batch_op.drop_index(batch_op.f('ix_provider_channel_connection_id'))
        batch_op.drop_index(batch_op.f('ix_provider_channel_company_id'))
    op.drop_table('provider_channel')
