"""GET /api/v1/openapi.json: OpenAPI 3.1, generated from the routes and their pydantic models."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from flask import Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from calsync.web.api import bp
from calsync.web.api.registry import ROUTES, Route
from calsync.web.api.schemas import ErrorOut

REF = "#/components/schemas/{model}"
STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Malformed: the body is not a JSON object",
    401: "No or bad API key",
    404: "Not found", 409: "Refused: the slot is taken, outside working hours, or not allowed",
    415: "Not JSON", 422: "Invalid input; `errors` names each field",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _plain_tuples(node: Any) -> Any:
    """A tuple whose members share one schema, `prefixItems: [A, A]` with min/maxItems 2, is
    written `items: A` with the same bounds: the same constraint, which tools made for OpenAPI
    3.0 read correctly too (Schemathesis' response validator misread prefixItems)."""
    if isinstance(node, list):
        return [_plain_tuples(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _plain_tuples(v) for k, v in node.items()}
    prefix = node.get("prefixItems")
    if (isinstance(prefix, list) and prefix and "items" not in node
            and all(p == prefix[0] for p in prefix) and node.get("maxItems") == len(prefix)):
        node["items"] = node.pop("prefixItems")[0]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].rpartition("/")[2]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(_refs(v) for v in node.values()))


def _referenced(components: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """Only the schemas the paths reach. Pydantic also emits a definition for each enum of
    models/enums.py, which schemas.py writes inline (WithJsonSchema) instead of referencing."""
    todo, kept = _refs(paths), set()
    while todo:
        name = todo.pop()
        if name not in kept and name in components:
            kept.add(name)
            todo |= _refs(components[name])
    return {name: schema for name, schema in components.items() if name in kept}


def _links(created_by: Route) -> dict[str, Any]:
    """OpenAPI links (3.1 §4.8.20) from an operation that creates an id to every operation that
    takes it in its path, so clients and fuzzers (Schemathesis' stateful phase) can follow
    POST /staff to GET /staff/{staff_id} with the id the response gave."""
    name = created_by.creates
    assert name is not None and created_by.response is not None
    # The id is the response's `id`, or a field of the parameter's own name (FeedOut.token_id).
    field = name if name in created_by.response.model_fields else "id"
    assert field in created_by.response.model_fields, (created_by.endpoint, field)
    links: dict[str, Any] = {}
    for route in ROUTES:
        params = [p for _, p in route.path_params]
        if route is created_by or name not in params:
            continue
        # Other path parameters of the target are the creator's own (POST /staff/{staff_id}/
        # connections → /connections/{connection_id} has none; a nested one reuses them).
        mapping = {p: f"$request.path.{p}" for p in params if p != name}
        if any(p not in {q for _, q in created_by.path_params} for p in mapping):
            continue
        links[route.endpoint] = {
            "operationId": route.endpoint,
            "parameters": {name: f"$response.body#/{field}", **mapping},
            "description": f"{route.summary}, with the {field} of the {created_by.response.__name__}.",
        }
    return links


def build_openapi() -> dict[str, Any]:
    """The document, a fresh copy on each call: a caller may change what it is given
    (schemathesis rewrites the links it follows), and a shared dict would then serve the
    change to every later request of the process."""
    loaded: dict[str, Any] = json.loads(_document_text())
    return loaded


@lru_cache(maxsize=1)
def _document_text() -> str:
    """Generated once per process (the routes do not change while it runs)."""
    return json.dumps(_generate())


def _generate() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for route in ROUTES:
        models.update(m for m in (route.body, route.response) if m is not None)
    _, schema = models_json_schema(
        [(m, "validation" if m is not ErrorOut else "serialization") for m in
         sorted(models, key=lambda m: m.__name__)],
        ref_template=REF,
    )
    components = _plain_tuples(schema.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "operationId": route.endpoint,
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": [],
            "responses": {},
        }
        for converter, name in route.path_params:
            op["parameters"].append({
                "name": name, "in": "path", "required": True,
                "schema": {"type": "integer"} if converter == "int" else {"type": "string"},
            })
        if route.query is not None:
            qschema = route.query.model_json_schema(ref_template=REF)
            required = set(qschema.get("required", []))
            for name, prop in qschema["properties"].items():
                param: dict[str, Any] = {
                    "name": name, "in": "query", "required": name in required, "schema": prop,
                }
                if "description" in prop:
                    param["description"] = prop["description"]
                op["parameters"].append(param)
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        ok: dict[str, Any] = {"description": STATUS_TEXT.get(route.status, "OK")}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": _ref(route.response)}}
        if route.creates is not None:
            ok["links"] = _links(route)
        op["responses"][str(route.status)] = ok
        errors = set(route.errors) | {401}
        if route.body is not None:
            errors |= {400, 415, 422}
        if route.query is not None:
            errors |= {422}
        for code in sorted(errors):
            op["responses"][str(code)] = {
                "description": STATUS_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": _ref(ErrorOut)}},
            }
        if not op["parameters"]:
            del op["parameters"]
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "calsync API",
            "version": "1",
            "description": "Staff, groups, appointments, availability and published calendar feeds. "
            "Errors: 400 for a body that is not a JSON object, 401 without a valid key, 404 for an "
            "unknown id, 409 for a slot that is taken or outside working hours, 422 for invalid "
            "fields (body or query), each named in `errors`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _referenced(components, paths),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    # The document itself needs no key. The cached text as it is: parsing it again only to
    # serialise it once more would be work on every request.
    return Response(_document_text(), mimetype="application/json")
