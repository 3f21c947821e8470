"""The per-test database of tests/conftest.py: made from a template migrated once per session
(SQLite) or by create_all + stamp (PostgreSQL), it must be at the migrations' head, empty, and
the test's alone."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import func, select

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.migrations import alembic_config, current_revision
from calsync.models import Company, make_engine


def test_the_database_is_at_head_and_holds_no_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        assert current_revision(engine) == head
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Company)) == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("turn", [1, 2])
def test_what_a_test_writes_stays_in_its_own_database(app: Flask, turn: int) -> None:
    """Both turns find the database empty: the first one's company went with its copy."""
    with app.extensions["calsync"].sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Company)) == 0
        get_or_create_company(session, f"Turn {turn}")
