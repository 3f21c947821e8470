"""One database session per request, rolled back unless a view committed it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from calsync.web.app import Services


def services() -> Services:
    return current_app.extensions["calsync"]  # type: ignore[no-any-return]


def session() -> Session:
    if "db_session" not in g:
        g.db_session = services().sessions()
    return g.db_session  # type: ignore[no-any-return]


def _close(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.rollback()
        db_session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close)
