"""Alembic migrations of the calsync schema, and the function that applies them."""

from __future__ import annotations

from functools import cache
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    # The scripts are package data of calsync.migrations, wherever it is installed.
    cfg.set_main_option("script_location", str(resources.files("calsync.migrations")))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision`; safe to run on every start."""
    if revision == "head" and current_revision(engine) == head_revision():
        # Up to date, as on almost every start: alembic would load and compile every script
        # and run env.py only to find nothing to do (15 ms, paid by each app a test makes).
        return
    command.upgrade(alembic_config(engine), revision)


@cache
def head_revision() -> str | None:
    """The newest revision of the scripts shipped with this install (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
