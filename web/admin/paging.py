"""Long lists a page at a time (the staff list, Calendar sync's staff members, Sync health, the
Outbox), so that no page grows to many thousand pixels on a phone, where each row is a block:
the page asked for, within range, and the addresses of the pages around it (the pager macro in
templates/admin/_macros.html)."""

from __future__ import annotations

from typing import Any

from flask import url_for

from calsync.web.admin import bp


def page_of(value: str | None, total: int, size: int) -> tuple[int, int]:
    """(page, pages): the page asked for as a number within 1..pages; anything else is page 1."""
    pages = max(1, -(-total // size))
    try:
        number = int(value or 1)
    except ValueError:
        number = 1
    return min(max(number, 1), pages), pages


def page_arg(value: str | None) -> str | None:
    """The page a form was sent from (a hidden field), for the address to go back to: None for
    the first page, or for anything that is not a page number."""
    return value if value and value.isdigit() and value not in ("0", "1") else None


@bp.app_template_global()
def page_url(endpoint: str, number: int, param: str = "page", anchor: str | None = None, **args: Any) -> str:
    """The address of page `number` of a list, its filters kept; page 1 has no page parameter."""
    values: dict[str, Any] = {**args, param: number if number > 1 else None}
    return url_for(endpoint, _anchor=anchor, **values)
