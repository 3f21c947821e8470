"""The API's route decorator: validates input with pydantic models and records each route so
the OpenAPI document is generated from the very schemas that validate requests."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel

from calsync.web.api.errors import ApiError


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
    # The path parameter whose values this operation creates (POST /staff creates staff_id):
    # the document links its response to every operation that takes one (openapi.py).
    creates: str | None = None

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)

    @property
    def path_params(self) -> list[tuple[str, str]]:
        return re.findall(r"<(?:(\w+):)?(\w+)>", self.path)


ROUTES: list[Route] = []

def _json_number(text: str) -> float | int:
    number = float(text)
    if not math.isfinite(number):  # 1e400: beyond every field's range, and beyond JSON's floats
        raise ValueError(text)
    return int(number) if number.is_integer() else number


def _not_json(text: str) -> None:
    raise ValueError(f"{text} is not JSON (RFC 8259 §6)")


_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}


def _parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "Send a JSON object in the request body.")
    if not (request.mimetype or "").endswith("json"):
        raise ApiError(415, "Send the body as JSON with Content-Type: application/json.")
    try:
        parsed = json.loads(raw, parse_float=_json_number, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested beyond reason
        raise ApiError(400, "The request body is not valid JSON.") from exc
    # One rule (README, "JSON API"): a body that is not a JSON object is malformed (400); only
    # the fields of an object can be invalid (422, each named).
    if not isinstance(parsed, dict):
        raise ApiError(400, "Send a JSON object in the request body, not "
                            f"{_JSON_KIND.get(type(parsed), 'that')}.")
    # Strict, from the JSON itself: a field the document calls boolean takes true or false, not
    # 0 or "yes"; an integer is not 5.5 or "5"; a string is not a number — what the OpenAPI
    # document promises is what is accepted (checked by tests/system/test_schemathesis.py).
    # 5.0 is an integer in JSON Schema (2020-12 core §4.2.2), so it is re-encoded as 5 first.
    return model.model_validate_json(json.dumps(parsed), strict=True)


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
    creates: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    route = Route(path, method, summary, body, query, response, status, errors, tag, creates=creates)
    ROUTES.append(route)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            # Ids beyond the key range never get here: web/app.py answers 404 for every route.
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
