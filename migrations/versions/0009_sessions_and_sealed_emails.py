"""admin session versions and sealed outbox emails

- admin_user.session_version: part of every login session's id; bumping it (logout, password
  change, disabling) ends the admin's sessions, including copied cookies (issue 14).
- admin_user.disabled_at: a disabled admin cannot log in and has no session.
- outbox_email.message_sealed: the message is sealed with the credentials vault because it
  carries secret links (an invitation's connect link and feed URL); existing rows stay plain.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('admin_user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default=sa.text('0'),
                                      nullable=False))
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('outbox_email', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_sealed', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('outbox_email', schema=None) as batch_op:
        batch_op.drop_column('message_sealed')
    with op.batch_alter_table('admin_user', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('session_version')
