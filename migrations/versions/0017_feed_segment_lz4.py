"""feed_segment.body compressed with lz4 on PostgreSQL (issue 17)

A feed request stores the segment it rebuilt once its response is sent; PostgreSQL compressed
the ~300 kB value with pglz, ~4 ms of the server's CPU beside the next request, against ~1 ms
with lz4 for the same size on disk. PostgreSQL 14 and later, where the server was built with
lz4; elsewhere (and on SQLite) nothing changes. Rows already stored keep their compression
until rewritten; segments are caches and are replaced as feeds change. models/feed.py attaches
the same DDL to the metadata for create_all; the text is repeated here so this migration keeps
doing what it did when it was written.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 04:00:00.000000
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

def _compression(method: str) -> str:
    return f"""
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        EXECUTE 'ALTER TABLE feed_segment ALTER COLUMN body SET COMPRESSION {method}';
    END IF;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- a server built without lz4
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_compression("lz4"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_compression("pglz"))
