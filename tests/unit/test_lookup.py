"""get_owned, the one company-scoped lookup: a row of another company is not found, exactly as
a missing one (in-memory SQLite: no file, no server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from calsync.feeds.errors import NotFoundError
from calsync.feeds.lookup import get_owned
from calsync.models import ApiKey, Base, Company, Staff, make_engine, utcnow


@pytest.fixture
def session() -> Iterator[Session]:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _company(session: Session, name: str) -> Company:
    company = Company(name=name, settings={})
    session.add(company)
    session.flush()
    return company


def test_a_row_of_the_company_is_found(session: Session) -> None:
    ours = _company(session, "Ours")
    staff = Staff(company_id=ours.id, name="Ana", email="ana@example.test")
    session.add(staff)
    session.flush()
    assert get_owned(session, Staff, staff.id, ours, "staff member") is staff


def test_a_row_of_another_company_is_not_found_like_a_missing_one(session: Session) -> None:
    ours, theirs = _company(session, "Ours"), _company(session, "Theirs")
    their_staff = Staff(company_id=theirs.id, name="Bo", email="bo@example.test")
    session.add(their_staff)
    session.flush()
    with pytest.raises(NotFoundError) as other:
        get_owned(session, Staff, their_staff.id, ours, "staff member")
    with pytest.raises(NotFoundError) as missing:
        get_owned(session, Staff, their_staff.id + 1000, ours, "staff member")
    assert str(other.value) == f"There is no staff member with id {their_staff.id}."
    assert str(missing.value) == f"There is no staff member with id {their_staff.id + 1000}."


def test_active_only_treats_a_revoked_row_as_missing(session: Session) -> None:
    ours = _company(session, "Ours")
    key = ApiKey(company_id=ours.id, name="k", key_hash="0" * 64, prefix="csk_")
    session.add(key)
    session.flush()
    assert get_owned(session, ApiKey, key.id, ours, "active API key", active_only=True) is key
    key.revoked_at = utcnow()
    assert get_owned(session, ApiKey, key.id, ours, "API key") is key
    with pytest.raises(NotFoundError, match=f"There is no active API key with id {key.id}."):
        get_owned(session, ApiKey, key.id, ours, "active API key", active_only=True)
