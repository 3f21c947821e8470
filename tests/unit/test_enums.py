"""States and kinds (models/enums.py): members are their strings, every state column checks its
values in the database, and the model refuses an unknown value before it reaches the database."""

from __future__ import annotations

import importlib.util
import re
from enum import StrEnum
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, Enum
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

import calsync.migrations
from calsync.models import (
    STATUS_CANCELLED,
    WRITE_ROLES,
    AppointmentStatus,
    Base,
    Company,
    Connection,
    ConnectionStatus,
    Role,
    make_engine,
)


def state_columns() -> list[tuple[str, str, type[StrEnum]]]:
    return [
        (table.name, column.name, column.type.enum_class)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Enum) and column.type.enum_class is not None
    ]


def test_members_are_their_strings() -> None:
    assert ConnectionStatus.OK == "ok" and f"{ConnectionStatus.OK}" == "ok"
    assert STATUS_CANCELLED == AppointmentStatus.CANCELLED == "cancelled"
    assert {"linked", "additional"} == WRITE_ROLES and Role.CONFLICT not in WRITE_ROLES


def test_every_state_column_has_a_named_check_listing_exactly_its_enum() -> None:
    columns = state_columns()
    # every status, kind, state, scope, privacy of the models: migration 0008's 16 and those
    # added since (each with its check: tests/integration/test_migrations.py compares them)
    assert len(columns) >= 16
    for table_name, column, enum in columns:
        table = Base.metadata.tables[table_name]
        checks = {c.name: str(c.sqltext.compile(compile_kwargs={"literal_binds": True}))
                  for c in table.constraints if isinstance(c, CheckConstraint)}
        name = f"ck_{table_name}_{column}"
        assert name in checks, name
        assert set(re.findall(r"'([^']*)'", checks[name])) == {m.value for m in enum}, name


def test_migration_0008_checks_the_same_values_as_the_models() -> None:
    """The migration writes its lists out (frozen at its revision); today they must agree, but
    for the values later migrations added (listed here with the migration that added them)."""
    path = Path(calsync.migrations.__file__).parent / "versions" / "0008_state_and_kind_checks.py"
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    in_migration = {(t, c): set(values) for t, cols in migration.CHECKS.items() for c, values in cols.items()}
    added_since = {("appointment_change", "source"): {"google", "microsoft"}}  # 0010
    in_models = {(t, c): {m.value for m in enum} - added_since.get((t, c), set())
                 for t, c, enum in state_columns() if (t, c) in in_migration}
    assert in_migration == in_models


def test_the_model_refuses_an_unknown_value_before_the_database() -> None:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        company = Company(name="C", settings={})
        session.add(company)
        session.flush()
        session.add(Connection(company_id=company.id, staff_id=1, kind="icss", name="n",
                               url_sealed="x", url_display="x"))
        with pytest.raises(StatementError, match="icss"):
            session.flush()
    engine.dispose()
