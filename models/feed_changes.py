"""PostgreSQL only: every change to a row a feed's version is read from is announced with NOTIFY.

A feed's version is read from its token, its company, its scope's staff and group members
(feeds/publishing/version.py). A process that LISTENs on its schema's channel can keep the versions it read
in memory and answer a 304 without asking the database again, until a change is announced
(feeds/publishing/feed_changes.py). Triggers rather than application code, so that a change
from anywhere counts: another process, a worker, a migration, an admin's psql session.

Channel: CHANNEL + "_" + the schema's OID, one per schema, so installations (or test schemas)
sharing a database never wake each other's listeners; an OID keeps the name short and plain
whatever the schema is called. Payload: the company id, or "" when the company is unknown (a
TRUNCATE, a group membership whose staff member is already gone): then every feed of the
schema counts as changed. Identical notifications in one transaction are delivered once, and only after its
commit; a rolled-back change announces nothing.

Attached to the metadata so `create_all` (the PostgreSQL test schemas) makes the same triggers
as migration 0016.
"""

from __future__ import annotations

from sqlalchemy import DDL, event

from calsync.models.base import Base

CHANNEL = "calsync_feed_changes"
FUNCTION = "calsync_feed_changed"
TABLES = ("company", "staff", "feed_token", "group_member")
ROW_TRIGGER = "calsync_feed_changed"


def channel_of(schema_oid: int) -> str:
    """The channel of the schema whose OID this is (what FUNCTION_SQL notifies on)."""
    return f"{CHANNEL}_{schema_oid}"

TRUNCATE_TRIGGER = "calsync_feed_truncated"

# The company of the changed row, per table; for UPDATE both the old and the new one (a row
# moved between companies changes both). TG_TABLE_SCHEMA, not current_schema(): the schema of
# the table, whatever the writer's search_path. The names are channel_of's and FUNCTION's.
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


def trigger_statements() -> list[str]:
    """The function and its triggers on every table, in order (also what migration 0016 ran)."""
    statements = [FUNCTION_SQL]
    for table in TABLES:
        statements += [
            f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {table}",
            f"CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()",
            f"DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table}",
            f"CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()",
        ]
    return statements


def _attach() -> None:
    for statement in trigger_statements():
        event.listen(Base.metadata, "after_create", DDL(statement).execute_if(dialect="postgresql"))
    event.listen(Base.metadata, "after_drop",
                 DDL(f"DROP FUNCTION IF EXISTS {FUNCTION}() CASCADE").execute_if(dialect="postgresql"))


_attach()
