"""JSON errors of the API: every failure is {"error": sentence, ...} with the right status."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from pydantic import ValidationError as PydanticValidationError
from werkzeug.exceptions import HTTPException

from calsync.feeds.errors import ConfigurationError, NotFoundError, SchedulingError, ValidationError

log = logging.getLogger("calsync.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def _json(status: int, message: str, **extra: object) -> Response:
    resp = jsonify({"error": message, **extra})
    resp.status_code = status
    return resp


def _field_name(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def register_error_handlers(bp: Blueprint) -> None:
    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        if not exc.field:
            return _json(exc.status, str(exc))
        return _json(exc.status, str(exc), field=exc.field,
                     errors=[{"field": exc.field, "message": str(exc)}])

    @bp.errorhandler(PydanticValidationError)
    def _invalid(exc: PydanticValidationError) -> Response:
        errors = [
            {"field": _field_name(err["loc"]), "message": err["msg"]} for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _json(422, f"Invalid input — {summary}.", errors=errors)

    @bp.errorhandler(ValidationError)
    def _invalid_domain(exc: ValidationError) -> Response:
        field = exc.field or "body"
        return _json(422, str(exc), errors=[{"field": field, "message": str(exc)}])

    @bp.errorhandler(NotFoundError)
    def _not_found(exc: NotFoundError) -> Response:
        return _json(404, str(exc))

    @bp.errorhandler(SchedulingError)
    def _conflict(exc: SchedulingError) -> Response:
        return _json(409, str(exc))

    @bp.errorhandler(ConfigurationError)
    def _config(exc: ConfigurationError) -> Response:
        return _json(500, str(exc))

    @bp.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        messages = {
            404: "There is no such API endpoint; see /api/v1/openapi.json.",
            405: "This endpoint does not take that method; see /api/v1/openapi.json.",
            413: "The request body is too large.",
        }
        return _json(exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name))

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in API request")
        return _json(500, "Something went wrong on our side; the change was not applied. Try again.")
