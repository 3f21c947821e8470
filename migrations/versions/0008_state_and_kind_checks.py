"""state and kind checks

Every state and kind column (models/enums.py) gets a CHECK constraint listing its allowed
values, so a typo in code or a hand-written UPDATE cannot store a state nothing understands
(issue 16). The columns stay VARCHAR; only the constraints are new.

The value lists are written out here, not imported from models.enums: a migration describes the
schema as it was at this revision, whatever the enums become later.

On PostgreSQL each ADD CONSTRAINT checks the existing rows (one scan of the table, holding
writes to it); a row with a value outside the list stops the upgrade, naming the constraint.
SQLite cannot add a constraint to a table, so batch mode rebuilds each table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:30:00.000000
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# table -> column -> allowed values
CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    'appointment': {
        'status': ('confirmed', 'cancelled'),
    },
    'connection': {
        'kind': ('ics', 'caldav', 'google', 'microsoft'),
        'sync_mode': ('realtime', 'interval', 'manual'),
        'all_day': ('busy', 'ignore'),
        'status': ('pending', 'ok', 'error', 'stale'),
    },
    'alert': {
        'kind': ('failing', 'stale'),
    },
    'feed_token': {
        'scope': ('staff', 'group', 'company'),
        'privacy': ('full', 'limited', 'busy'),
    },
    'outbox_email': {
        'kind': ('booked', 'rescheduled', 'cancelled', 'alert', 'conflict', 'invitation'),
        'method': ('REQUEST', 'CANCEL'),
        'status': ('pending', 'sent', 'failed'),
    },
    'appointment_change': {
        'action': ('booked', 'rescheduled', 'cancelled', 'restored'),
        'source': ('api', 'admin', 'calendar', 'conflict', 'demo'),
    },
    'linked_item': {
        'state': ('pending', 'synced', 'deleted', 'error', 'conflict'),
    },
    'sync_conflict': {
        'status': ('open', 'resolved'),
        'resolution': ('platform', 'calendar'),
    },
}


def _condition(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, values in columns.items():
                batch_op.create_check_constraint(op.f(f'ck_{table}_{column}'), _condition(column, values))


def downgrade() -> None:
    for table, columns in reversed(CHECKS.items()):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in reversed(columns):
                batch_op.drop_constraint(op.f(f'ck_{table}_{column}'), type_='check')
