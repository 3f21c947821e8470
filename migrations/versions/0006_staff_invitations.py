"""staff invitations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('staff_invitation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('outbox_email_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_staff_invitation_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['admin_user.id'], name=op.f('fk_staff_invitation_created_by_admin_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['outbox_email_id'], ['outbox_email.id'], name=op.f('fk_staff_invitation_outbox_email_id_outbox_email'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_staff_invitation_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_invitation'))
    )
    with op.batch_alter_table('staff_invitation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_invitation_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_staff_invitation_outbox_email_id'), ['outbox_email_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_staff_invitation_staff_id'), ['staff_id'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('staff_invitation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_invitation_staff_id'))
        batch_op.drop_index(batch_op.f('ix_staff_invitation_outbox_email_id'))
        batch_op.drop_index(batch_op.f('ix_staff_invitation_company_id'))

    op.drop_table('staff_invitation')
