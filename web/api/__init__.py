"""The JSON API at /api/v1, authenticated with `Authorization: Bearer <api key>`."""

from __future__ import annotations

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import MethodNotAllowed

from calsync.feeds.accounts.admins import find_api_key_company
from calsync.models import Company
from calsync.web import db
from calsync.web.api.errors import ApiError, register_error_handlers

bp = Blueprint("api", __name__, url_prefix="/api/v1")
register_error_handlers(bp)

PUBLIC_ENDPOINTS = {"api.openapi_document"}


@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Send your API key as 'Authorization: Bearer <key>' (calsync api-key create).")
    found = find_api_key_company(db.session(), key.strip())
    if found is None:
        raise ApiError(401, "That API key is unknown or revoked; create one with 'calsync api-key create'.")
    g.company = found[1]
    return None


@bp.after_request
def _www_authenticate(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="calsync"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.after_app_request
def _allow(response: Response) -> Response:
    """A 405 names the methods the path takes (RFC 9110 §15.5.6). The app-wide 405 handler
    answers /api/ paths before routing reaches this blueprint, so the header is added here."""
    exc = request.routing_exception
    if (response.status_code == 405 and request.path.startswith(bp.url_prefix or "/api/")
            and isinstance(exc, MethodNotAllowed) and exc.valid_methods):
        response.headers.setdefault("Allow", ", ".join(sorted(exc.valid_methods)))
    return response


def current_company() -> Company:
    return g.company  # type: ignore[no-any-return]


# Route modules register themselves on bp when imported.
from calsync.web.api import (  # noqa: E402,F401
    appointments,
    conflicts,
    connections,
    emails,
    feeds,
    openapi,
    settings,
    staff,
)
