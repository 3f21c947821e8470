"""feed segments replace feed bodies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 03:41:21.263232
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('feed_segment',
    sa.Column('segment_key', sa.String(length=200), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('family', sa.String(length=150), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_feed_segment_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('segment_key', name=op.f('pk_feed_segment'))
    )
    with op.batch_alter_table('feed_segment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feed_segment_family'), ['family'], unique=False)
        batch_op.create_index(batch_op.f('ix_feed_segment_staff_id'), ['staff_id'], unique=False)

    with op.batch_alter_table('feed_body', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feed_body_scope_key'))

    op.drop_table('feed_body')



def downgrade() -> None:

    op.create_table('feed_body',
    sa.Column('cache_key', sa.VARCHAR(length=200), nullable=False),
    sa.Column('scope_key', sa.VARCHAR(length=100), nullable=False),
    sa.Column('body', sa.BLOB(), nullable=False),
    sa.Column('last_modified', sa.DATETIME(), nullable=False),
    sa.Column('created_at', sa.DATETIME(), nullable=False),
    sa.PrimaryKeyConstraint('cache_key', name=op.f('pk_feed_body'))
    )
    with op.batch_alter_table('feed_body', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feed_body_scope_key'), ['scope_key'], unique=False)

    with op.batch_alter_table('feed_segment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feed_segment_staff_id'))
        batch_op.drop_index(batch_op.f('ix_feed_segment_family'))

    op.drop_table('feed_segment')

