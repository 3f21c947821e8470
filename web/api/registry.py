"""The API's route decorator: validates input with pydantic models and records each route so
the OpenAPI document is generated from the very schemas that validate requests."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel

from calsync.web.api.errors import ApiError
from calsync.web.api.schemas import MAX_ID


@dataclass
class Route:
    path: str  # Flask rule, e.g. /staff/<int:staff_id>
    method: str
    summary: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    tag: str
    endpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)

    @property
    def path_params(self) -> list[tuple[str, str]]:
        return re.findall(r"<(?:(\w+):)?(\w+)>", self.path)


ROUTES: list[Route] = []


def _parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "Send a JSON object in the request body.")
    if not (request.mimetype or "").endswith("json"):
        raise ApiError(415, "Send the body as JSON with Content-Type: application/json.")
    try:
        request.get_json(force=True)
    except Exception as exc:  # werkzeug raises BadRequest with a parser message
        raise ApiError(400, "The request body is not valid JSON.") from exc
    # Strict, from the JSON itself: a field the document calls boolean takes true or false, not
    # 0 or "yes"; an integer is not 5.0 or "5"; a string is not a number — what the OpenAPI
    # document promises is what is accepted (checked by tests/system/test_schemathesis.py).
    return model.model_validate_json(raw, strict=True)


def api_route(
    bp: Blueprint,
    path: str,
    method: str,
    *,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    route = Route(path, method, summary, body, query, response, status, errors, tag)
    ROUTES.append(route)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            for name, value in kwargs.items():
                # Flask's int converter takes any length; the database keys are 64-bit.
                if isinstance(value, int) and value > MAX_ID:
                    raise ApiError(404, f"There is no {name.removesuffix('_id')} with id {value}.")
            if body is not None:
                kwargs["body"] = _parse_body(body)
            if query is not None:
                kwargs["query"] = query.model_validate(request.args.to_dict())
            result = view(**kwargs)
            if isinstance(result, Response):
                return result
            if result is None:
                return Response(status=status)
            payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            resp = jsonify(payload)
            resp.status_code = status
            return resp

        endpoint = f"{method.lower()}_{view.__name__}"
        route.endpoint = endpoint
        bp.add_url_rule(path, endpoint=endpoint, view_func=wrapper, methods=[method])
        return wrapper

    return decorate
