"""Alembic migrations: an empty database reaches head, repeating is a no-op, the migrated schema
is exactly the models' metadata, and downgrade/upgrade round-trips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Connection, Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from calsync.feeds.mail.drafts import compose
from calsync.migrations import alembic_config, current_revision, upgrade_database
from calsync.models import Base, Company, make_engine, make_session_factory
from tests.mail_helpers import sample_draft


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrations.sqlite3'}")
    yield engine
    engine.dispose()


def head(engine: Engine) -> str:
    heads = ScriptDirectory.from_config(alembic_config(engine)).get_heads()
    assert len(heads) == 1, f"migrations have several heads, merge them: {heads}"
    return heads[0]


def schema_differences(engine: Engine) -> list[object]:
    """What autogenerate would write to bring the database to the models (nothing, ideally)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def schema_sql(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"))
        return [(row[0], row[1]) for row in rows]


def model_tables() -> set[str]:
    return set(Base.metadata.tables)


def test_upgrade_of_an_empty_database_reaches_head(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade_database(engine)
    assert current_revision(engine) == head(engine)
    assert set(inspect(engine).get_table_names()) == model_tables() | {"alembic_version"}


def test_upgrading_again_is_a_no_op(engine: Engine) -> None:
    upgrade_database(engine)
    before = schema_sql(engine)
    upgrade_database(engine)
    assert current_revision(engine) == head(engine)
    assert schema_sql(engine) == before


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    upgrade_database(engine)
    assert schema_differences(engine) == []


def test_the_comparison_would_notice_a_missing_table(engine: Engine) -> None:
    """compare_metadata must not pass vacuously: drop a table and it has to complain."""
    upgrade_database(engine)
    victim = sorted(model_tables())[0]
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        conn.execute(text(f'DROP TABLE "{victim}"'))
    diffs = schema_differences(engine)
    assert any(diff[0] == "add_table" and diff[1].name == victim for diff in diffs)  # type: ignore[index]


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    upgrade_database(engine)
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_database(engine)
    assert current_revision(engine) == head(engine)
    assert schema_differences(engine) == []


def test_every_revision_steps_down_and_up(engine: Engine) -> None:
    """Walk the chain one revision at a time, so a broken downgrade in the middle is found."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    revisions = [rev.revision for rev in script.walk_revisions("base", "heads")][::-1]
    cfg = alembic_config(engine)
    for revision in revisions:
        command.upgrade(cfg, revision)
        assert current_revision(engine) == revision
    for revision in reversed(revisions):
        command.downgrade(cfg, "-1")
        assert current_revision(engine) != revision
    assert current_revision(engine) is None


def test_data_survives_a_repeated_upgrade(engine: Engine) -> None:
    upgrade_database(engine)
    with make_session_factory(engine).begin() as session:
        session.add(Company(name="Café Zürich", timezone="Europe/Zurich", settings={}))
    upgrade_database(engine)
    with make_session_factory(engine)() as session:
        assert session.scalars(select(Company.name)).all() == ["Café Zürich"]


# --- state and kind checks (0008) --------------------------------------------------------------


@pytest.fixture
def any_engine(empty_database_url: str) -> Iterator[Engine]:
    """SQLite, or a fresh PostgreSQL schema with TEST_CALSYNC_DATABASE_URL; empty, to migrate."""
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def _insert_company(conn: Connection) -> int:
    return conn.execute(text(  # type: ignore[no-any-return]
        "INSERT INTO company (name, timezone, settings, feed_epoch, feed_epoch_changed_at, "
        "created_at) VALUES ('C', 'UTC', '{}', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) "
        "RETURNING id")).scalar_one()


def _insert_company_and_outbox_email(engine: Engine, status: str) -> None:
    """Raw SQL, so only the database (not the model's enum type) can refuse the value."""
    with engine.begin() as conn:
        company_id = _insert_company(conn)
        conn.execute(text(
            "INSERT INTO outbox_email (company_id, kind, dedupe_key, to_address, subject, message, "
            "status, attempts, created_at) VALUES (:company, 'booked', :key, 'a@example.test', 'S', "
            ":message, :status, 0, CURRENT_TIMESTAMP)"),
            {"company": company_id, "key": f"k-{status}", "message": b"m", "status": status})


def test_the_database_refuses_a_state_outside_the_enum(any_engine: Engine) -> None:
    upgrade_database(any_engine)
    _insert_company_and_outbox_email(any_engine, "sent")
    with pytest.raises(IntegrityError, match="ck_outbox_email_status"):
        _insert_company_and_outbox_email(any_engine, "snet")


def test_every_state_column_has_its_named_check(any_engine: Engine) -> None:
    """Migrated and model schemas agree on the CHECKs too (autogenerate does not compare them)."""
    upgrade_database(any_engine)
    inspector = inspect(any_engine)
    for table in Base.metadata.tables.values():
        expected = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        found = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert expected <= found, (table.name, expected - found)


def test_the_checks_step_down_and_up(any_engine: Engine) -> None:
    upgrade_database(any_engine)
    cfg = alembic_config(any_engine)
    command.downgrade(cfg, "0007")
    assert not inspect(any_engine).get_check_constraints("outbox_email")
    _insert_company_and_outbox_email(any_engine, "legacy")  # no check before 0008
    with any_engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox_email WHERE status = 'legacy'"))
    upgrade_database(any_engine)
    assert schema_differences(any_engine) == []
    with pytest.raises(IntegrityError, match="ck_outbox_email_status"):
        _insert_company_and_outbox_email(any_engine, "legacy")


# --- outbox drafts (0018) ----------------------------------------------------------------------


def test_a_waiting_draft_is_built_when_stepping_down_past_0018(any_engine: Engine) -> None:
    """0017's outbox needs a message in every row: a draft nobody was sent yet is built into
    the message delivery would have sent, not dropped."""
    cfg = alembic_config(any_engine)
    command.upgrade(cfg, "0018")
    draft = sample_draft()
    with any_engine.begin() as conn:
        company_id = _insert_company(conn)
        conn.execute(text(
            "INSERT INTO outbox_email (company_id, kind, dedupe_key, to_address, subject, draft, "
            "status, attempts, created_at) VALUES (:company, 'rescheduled', 'k', 'chloe@example.com', "
            "'S', :draft, 'pending', 0, CURRENT_TIMESTAMP)"),
            {"company": company_id, "draft": json.dumps(draft)})
    command.downgrade(cfg, "0017")
    with any_engine.connect() as conn:
        [message] = conn.execute(text("SELECT message FROM outbox_email")).scalars().all()
    assert bytes(message) == compose(draft)
    command.upgrade(cfg, "head")
