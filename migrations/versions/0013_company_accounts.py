"""company-wide provider accounts (issues 11/12)

A Google Workspace service account (domain-wide delegation) or a Microsoft 365 app registration
(application permissions) connected once per company and provider, its credentials sealed with
the credentials key; the last reachability check per staff member; and the connections made
through it (connection.company_account_id, removed with the account).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 07:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('company_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('credentials_sealed', sa.Text(), nullable=False),
    sa.Column('display', sa.String(length=400), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("provider IN ('google', 'microsoft')", name=op.f('ck_company_account_provider')),
    sa.CheckConstraint("status IN ('unchecked', 'ok', 'error')", name=op.f('ck_company_account_status')),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'],
                            name=op.f('fk_company_account_company_id_company'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_company_account')),
    sa.UniqueConstraint('company_id', 'provider', name=op.f('uq_company_account_company_id')),
    )
    with op.batch_alter_table('company_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_company_account_company_id'), ['company_id'], unique=False)

    op.create_table('company_account_member',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('problem', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['company_account.id'],
                            name=op.f('fk_company_account_member_account_id_company_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'],
                            name=op.f('fk_company_account_member_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'staff_id', name=op.f('pk_company_account_member')),
    )
    with op.batch_alter_table('company_account_member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_company_account_member_staff_id'), ['staff_id'], unique=False)

    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.add_column(sa.Column('company_account_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_connection_company_account_id'), ['company_account_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_connection_company_account_id_company_account'),
                                    'company_account', ['company_account_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_connection_company_account_id_company_account'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_connection_company_account_id'))
        batch_op.drop_column('company_account_id')
    with op.batch_alter_table('company_account_member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_company_account_member_staff_id'))
    op.drop_table('company_account_member')
    with op.batch_alter_table('company_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_company_account_company_id'))
    op.drop_table('company_account')
