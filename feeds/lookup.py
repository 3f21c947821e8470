"""One company-scoped lookup: a row by id, only if it belongs to the caller's company.

Every "get X of this company" in feeds/ goes through get_owned, so no copy can forget the
company check and hand one company's row to another (issue 16). A row of another company is
answered exactly like a missing one: the caller learns nothing about other companies' ids.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from calsync.feeds.errors import NotFoundError
from calsync.models import Company


class Owned(Protocol):
    """A row of one company (staff, appointment, connection, feed token, ...)."""

    @property
    def company_id(self) -> int: ...


RowT = TypeVar("RowT", bound=Owned)


def get_owned(
    session: Session,
    model: type[RowT],
    row_id: int,
    company: Company,
    what: str,
    *,
    active_only: bool = False,
) -> RowT:
    """The `model` row with this id if it belongs to `company`, else NotFoundError("There is
    no <what> with id <row_id>."). With active_only, a revoked row (revoked_at set) counts as
    missing too: revoking twice, or using a revoked key, is a 404 like any unknown id."""
    row = session.get(model, row_id)
    if row is None or row.company_id != company.id or (
        active_only and getattr(row, "revoked_at", None) is not None
    ):
        raise NotFoundError(f"There is no {what} with id {row_id}.")
    return row
