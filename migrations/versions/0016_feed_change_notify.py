"""feed change notifications: triggers that NOTIFY when a feed's version may have changed (issue 17)

PostgreSQL only (SQLite has no NOTIFY; nothing is done there). Each change to company, staff,
feed_token or group_member sends the company id (a TRUNCATE: "") on the channel
calsync_feed_changes_<the schema's OID>, so processes that LISTEN can keep feed versions in memory
(feeds/publishing/feed_changes.py). models/feed_changes.py attaches the same DDL to the
metadata for create_all; the text is repeated here so this migration keeps doing what it did
when it was written.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 00:30:00.000000
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("company", "staff", "feed_token", "group_member")

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION calsync_feed_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    channel text;
    company text;
    old_company text;
BEGIN
    channel := 'calsync_feed_changes_' || quote_ident(TG_TABLE_SCHEMA)::regnamespace::oid::text;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify(channel, '');
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'company' THEN
        IF TG_OP <> 'DELETE' THEN company := NEW.id::text; END IF;
        IF TG_OP <> 'INSERT' THEN old_company := OLD.id::text; END IF;
    ELSIF TG_TABLE_NAME = 'group_member' THEN
        IF TG_OP <> 'DELETE' THEN
            EXECUTE 'SELECT company_id::text FROM ' || quote_ident(TG_TABLE_SCHEMA) || '.staff WHERE id = $1'
                INTO company USING NEW.staff_id;
            company := coalesce(company, '');
        END IF;
        IF TG_OP <> 'INSERT' THEN
            EXECUTE 'SELECT company_id::text FROM ' || quote_ident(TG_TABLE_SCHEMA) || '.staff WHERE id = $1'
                INTO old_company USING OLD.staff_id;
            old_company := coalesce(old_company, '');
        END IF;
    ELSE
        IF TG_OP <> 'DELETE' THEN company := NEW.company_id::text; END IF;
        IF TG_OP <> 'INSERT' THEN old_company := OLD.company_id::text; END IF;
    END IF;
    IF company IS NOT NULL THEN
        PERFORM pg_notify(channel, company);
    END IF;
    IF old_company IS NOT NULL AND old_company IS DISTINCT FROM company THEN
        PERFORM pg_notify(channel, old_company);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql(FUNCTION_SQL)
    for table in TABLES:
        bind.exec_driver_sql(
            f"CREATE TRIGGER calsync_feed_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION calsync_feed_changed()"
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER calsync_feed_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION calsync_feed_changed()"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql("DROP FUNCTION IF EXISTS calsync_feed_changed() CASCADE")
