"""outbox_email.draft: customer emails stored as what they say, built at delivery (issue 17)

A booking, move or cancellation wrote its customer's email as finished MIME bytes, and
building them (the iTIP object, the MIME tree and its encodings) was about a third of a
reschedule PATCH. The row now holds the values the message shows (`draft`, JSON), and the
worker builds the bytes when it sends them (feeds/mail/drafts.py); `message` is empty until
then, so it becomes nullable.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 05:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_email", schema=None) as batch_op:
        batch_op.add_column(sa.Column("draft", sa.JSON(), nullable=True))
        batch_op.alter_column("message", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # The older schema cannot hold a draft without its message: each is built now (the code
    # the worker uses), so no email waiting to be sent is lost.
    from calsync.feeds.mail.drafts import compose

    bind = op.get_bind()
    outbox = sa.table("outbox_email", sa.column("id", sa.Integer()), sa.column("draft", sa.JSON()),
                      sa.column("message", sa.LargeBinary()))
    for row in bind.execute(sa.select(outbox.c.id, outbox.c.draft).where(outbox.c.message.is_(None))).all():
        bind.execute(outbox.update().where(outbox.c.id == row.id).values(message=compose(row.draft)))
    with op.batch_alter_table("outbox_email", schema=None) as batch_op:
        batch_op.alter_column("message", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("draft")
