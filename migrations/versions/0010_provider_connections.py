"""provider connections (OAuth state, sealed tokens) — issues 11/12

- oauth_state: one row per consent screen opened ("Connect Google Calendar", "Connect
  Outlook"), so a callback is accepted once across every worker (models.oauth_state).
- connection: the sealed OAuth tokens, the account that consented, the calendar's id at the
  provider, its colour and access role.
- appointment_change.source: `google` and `microsoft`, for moves and deletions made there.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

OLD_SOURCES = ('api', 'admin', 'calendar', 'conflict', 'demo')
NEW_SOURCES = (*OLD_SOURCES, 'google', 'microsoft')


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        'oauth_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('company_id', sa.Integer(), nullable=False),
        sa.Column('staff_id', sa.Integer(), nullable=False),
        sa.Column('provider', sa.String(length=16), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['company_id'], ['company.id'],
                                name=op.f('fk_oauth_state_company_id_company'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'],
                                name=op.f('fk_oauth_state_staff_id_staff'), ondelete='CASCADE'),
        sa.CheckConstraint(_in('provider', ('google', 'microsoft')), name=op.f('ck_oauth_state_provider')),
        sa.CheckConstraint(_in('purpose', ('self_service', 'admin')), name=op.f('ck_oauth_state_purpose')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_state')),
        sa.UniqueConstraint('nonce', name=op.f('uq_oauth_state_nonce')),
    )
    with op.batch_alter_table('oauth_state', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_state_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_state_staff_id'), ['staff_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_state_expires_at'), ['expires_at'], unique=False)
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokens_sealed', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('account_email', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('remote_calendar_id', sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column('colour', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('access_role', sa.String(length=32), nullable=True))
    with op.batch_alter_table('appointment_change', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_appointment_change_source'), type_='check')
        batch_op.create_check_constraint(op.f('ck_appointment_change_source'), _in('source', NEW_SOURCES))


def downgrade() -> None:
    # History written by a provider's move reads as a calendar change after the downgrade.
    op.execute("UPDATE appointment_change SET source = 'calendar' WHERE source IN ('google', 'microsoft')")
    with op.batch_alter_table('appointment_change', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_appointment_change_source'), type_='check')
        batch_op.create_check_constraint(op.f('ck_appointment_change_source'), _in('source', OLD_SOURCES))
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.drop_column('access_role')
        batch_op.drop_column('colour')
        batch_op.drop_column('remote_calendar_id')
        batch_op.drop_column('account_email')
        batch_op.drop_column('tokens_sealed')
    with op.batch_alter_table('oauth_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_state_expires_at'))
        batch_op.drop_index(batch_op.f('ix_oauth_state_staff_id'))
        batch_op.drop_index(batch_op.f('ix_oauth_state_company_id'))
    op.drop_table('oauth_state')
