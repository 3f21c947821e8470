"""The OpenAPI document of /api/v1: valid 3.1, complete, generated from the validating schemas,
and every API route answers errors in JSON."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from werkzeug.routing import Rule

from calsync.feeds.company_settings import CompanySettings
from tests.conftest import Api

PREFIX = "/api/v1"
METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}


@pytest.fixture
def doc(client: Any) -> dict[str, Any]:
    resp = client.get(PREFIX + "/openapi.json")
    assert resp.status_code == 200
    assert resp.is_json
    return resp.get_json()  # type: ignore[no-any-return]


def api_rules(app: Flask) -> list[Rule]:
    return [
        r for r in app.url_map.iter_rules()
        if r.rule.startswith(PREFIX + "/") and r.endpoint != "api.openapi_document"
    ]


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.removeprefix(PREFIX))


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema validator for one component, with the document's components in reach."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return Draft202012Validator(schema)


# --- the document ----------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]


def test_document_lists_every_route_and_nothing_else(app: Flask, doc: dict[str, Any]) -> None:
    registered = {
        (openapi_path(r.rule), m.lower()) for r in api_rules(app) for m in (r.methods or ()) & METHODS
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert registered, "no API routes found"
    assert documented == registered
    # At least the operations of issue 2's JSON API.
    assert {
        ("/staff", "post"), ("/staff", "get"), ("/staff/{staff_id}", "get"),
        ("/staff/{staff_id}", "patch"), ("/staff/{staff_id}", "delete"),
        ("/groups", "post"), ("/groups", "get"), ("/groups/{group_id}", "get"),
        ("/groups/{group_id}", "patch"), ("/groups/{group_id}", "delete"),
        ("/appointments", "post"), ("/appointments", "get"), ("/appointments/{appointment_id}", "get"),
        ("/appointments/{appointment_id}", "patch"), ("/appointments/{appointment_id}/cancel", "post"),
        ("/staff/{staff_id}/availability", "get"), ("/feeds", "get"), ("/feeds", "post"),
        ("/feeds/{token_id}", "delete"), ("/settings", "get"), ("/settings", "patch"),
    } <= documented


def test_path_parameters_match_the_path(doc: dict[str, Any]) -> None:
    for path, ops in doc["paths"].items():
        names = re.findall(r"{(\w+)}", path)
        for method, op in ops.items():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert params == names, (path, method)
            assert all(p["schema"] == {"type": "integer"} for p in op.get("parameters", [])
                       if p["in"] == "path")


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    found = refs(doc)
    assert found
    for ref in found:
        assert isinstance(resolve(doc, ref), dict)


def test_request_bodies_reference_the_validating_schemas(doc: dict[str, Any]) -> None:
    bodies = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert op["requestBody"]["required"] is True
                bodies[(method, path)] = resolve(doc, schema["$ref"])
                for code in ("400", "415", "422"):
                    assert code in op["responses"], (method, path, code)
    assert set(bodies) == {
        ("post", "/staff"), ("patch", "/staff/{staff_id}"), ("post", "/groups"),
        ("patch", "/groups/{group_id}"), ("post", "/appointments"),
        ("patch", "/appointments/{appointment_id}"), ("post", "/feeds"), ("patch", "/settings"),
        ("post", "/caldav/discover"), ("post", "/staff/{staff_id}/connections"),
        ("patch", "/connections/{connection_id}"), ("post", "/conflicts/{conflict_id}/resolve"),
    }
    for key, schema in bodies.items():
        # Unknown fields are refused (422), so the document says so.
        assert schema.get("additionalProperties") is False, key
    staff_in = bodies[("post", "/staff")]
    assert sorted(staff_in["required"]) == ["email", "name"]
    assert staff_in["properties"]["email"]["format"] == "email"
    appointment_in = bodies[("post", "/appointments")]
    assert {"staff_id", "start", "end", "service", "customer"} <= set(appointment_in["required"])
    feed_in = bodies[("post", "/feeds")]
    assert feed_in["properties"]["privacy"]["enum"] == ["full", "limited", "busy"]


def test_settings_patch_documents_the_enforced_limits(doc: dict[str, Any]) -> None:
    patch = doc["components"]["schemas"]["SettingsPatch"]
    full = CompanySettings.model_json_schema()["properties"]
    assert set(patch["properties"]) == set(full)
    assert "required" not in patch
    for name, prop in patch["properties"].items():
        for key in ("type", "minimum", "maximum", "pattern", "description", "anyOf"):
            assert prop.get(key) == full[name].get(key), (name, key)
    assert patch["properties"]["feed_refresh_minutes"]["minimum"] == 5


def test_query_parameters_are_documented(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/staff/{staff_id}/availability"]["get"]
    params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    assert set(params) == {"start", "end", "duration", "step"}
    assert params["start"]["required"] and params["end"]["required"]
    assert not params["duration"]["required"]
    assert params["duration"]["schema"]["minimum"] == 1
    assert params["duration"]["schema"]["maximum"] == 1440
    listing = doc["paths"]["/appointments"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"staff_id", "start", "end", "limit", "offset"}


# --- the document states the constraints the validators enforce ------------------------------

NAMES = ["Front desk", "  padded  ", "Zoë", "a" * 200, " " * 20 + "a" * 200 + "\u3000", "a" * 201,
         "", " ", "\u3000", "two\nlines", "tab\there", "bell\x07", "\x85x", "line\u2028sep",
         "x\x7f", "\x1dx", "\u205f\u2028\u3000 \f\u2001x\u3000"]
MOMENTS = ["2030-01-07T10:00:00Z", "1900-06-01T00:00:00Z", "9998-06-01T00:00:00+01:00",
           "1899-12-31T00:00:00Z", "0294-06-14T07:42:30Z", "9999-06-01T00:00:00Z"]
URLS = ["https://cal.example.com/a.ics", "webcal://cal.example.com/a.ics", "http://[::1]:5232/x/",
        "HTTP://x/", "ftp://x/a.ics", "http://user:pw@x/a.ics", "http://x:99999/", "http://x/a b",
        "0", "http:///a.ics", "https://x:0443/?q=1#f"]


def schema_of(doc: dict[str, Any], component: str, field: str) -> Draft202012Validator:
    prop = doc["components"]["schemas"][component]["properties"][field]
    prop = next((s for s in prop.get("anyOf", [prop]) if s.get("type") == "string"), prop)
    return Draft202012Validator(prop, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_names_are_accepted_exactly_when_the_document_allows_them(api: Api, doc: dict[str, Any]) -> None:
    documented = schema_of(doc, "GroupIn", "name")
    for name in NAMES:
        resp = api.post("/groups", {"name": name})
        assert (resp.status_code == 201) == documented.is_valid(name), (name, resp.get_json())
    # The same type wherever a name is taken: a service, a customer.
    assert doc["components"]["schemas"]["AppointmentIn"]["properties"]["service"]["pattern"] == \
        documented.schema["pattern"]


def test_moments_are_accepted_exactly_when_the_document_allows_them(api: Api, doc: dict[str, Any]) -> None:
    """Years 1900 to 9998 (the offsets used here keep the moment inside them in UTC too)."""
    staff = api.make_staff()
    documented = schema_of(doc, "AppointmentIn", "start")
    for moment in MOMENTS:
        resp = api.get(f"/staff/{staff['id']}/availability",
                       query_string={"start": moment, "end": moment[:11] + "23:59:00" + moment[19:]})
        fields = error_fields(resp) if resp.status_code != 200 else []
        assert ("start" not in fields) == documented.is_valid(moment), (moment, resp.get_json())
    query = {p["name"]: p["schema"] for p in doc["paths"]["/staff/{staff_id}/busy"]["get"]["parameters"]
             if p["in"] == "query"}
    assert query["start"]["pattern"] == documented.schema["pattern"]
    assert "after start" in query["end"]["description"]


def test_addresses_the_document_allows_are_well_formed(doc: dict[str, Any]) -> None:
    """What the address pattern allows passes the address checks (whether the host resolves
    and answers only a request can tell), and what it refuses is refused there too. Not
    stated: a bracketed host that is no IPv6 address (http://[bc:.93:35], refused with 422)."""
    from calsync.feeds.errors import ValidationError
    from calsync.feeds.sources.addresses import normalise_calendar_url

    documented = schema_of(doc, "ConnectionIn", "url")
    for url in URLS:
        try:
            normalise_calendar_url(url)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == documented.is_valid(url), url
    rules = doc["components"]["schemas"]["ConnectionIn"]["allOf"]
    assert Draft202012Validator({"allOf": rules}).is_valid({"kind": "ics", "roles": ["conflict"]})
    assert not Draft202012Validator({"allOf": rules}).is_valid({"kind": "ics", "roles": ["linked"]})
    assert not Draft202012Validator({"allOf": rules}).is_valid({"kind": "caldav", "url": "https://x/"})


# --- links from the operations that create ids -----------------------------------------------

# Ids no API operation creates: conflicts come from two-way sync, emails from the outbox.
NOT_CREATED_BY_THE_API = {"conflict_id", "email_id"}
ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:b\r\n"
       b"DTSTAMP:20260101T000000Z\r\nDTSTART:20300101T090000Z\r\nDTEND:20300101T100000Z\r\n"
       b"END:VEVENT\r\nEND:VCALENDAR\r\n")


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (path, method, op) for path, ops in doc["paths"].items()
            for method, op in ops.items()}


def test_every_id_in_a_path_is_reachable_by_a_link(doc: dict[str, Any]) -> None:
    """Each operation taking an id the API creates is the target of a link from the operation
    that creates it, mapping the path parameter from that operation's response."""
    ops = operations(doc)
    targets: dict[str, set[str]] = {}
    for path, method, op in ops.values():
        for status, response in op["responses"].items():
            for link in response.get("links", {}).values():
                assert status.startswith("2"), (method, path)
                target_path, _, target = ops[link["operationId"]]  # the operation exists
                names = re.findall(r"{(\w+)}", target_path)
                assert set(link["parameters"]) == set(names), (method, path, link)
                for name, expression in link["parameters"].items():
                    targets.setdefault(link["operationId"], set()).add(name)
                    field = expression.removeprefix("$response.body#/")
                    if field != expression:  # the response documents the field it points at
                        schema = resolve(doc, response["content"]["application/json"]["schema"]["$ref"])
                        assert field in schema["properties"] and field in schema["required"], link
                    else:
                        assert expression == f"$request.path.{name}", link
    for operation_id, (path, _method, _op) in ops.items():
        for name in set(re.findall(r"{(\w+)}", path)) - NOT_CREATED_BY_THE_API:
            assert name in targets.get(operation_id, set()), (operation_id, name)


def test_following_the_links_reaches_what_was_created(
    app: Flask, api: Api, doc: dict[str, Any], calendar_http: Any
) -> None:
    services = app.extensions["calsync"]
    services.settings = services.settings.model_copy(update={"allow_private_networks": True})
    staff = api.make_staff(timezone="UTC", working_hours={"mon": [["00:00", "24:00"]]})
    created = {
        "post_create_staff": api.post("/staff", {"name": "S", "email": "s@example.com"}),
        "post_create_group": api.post("/groups", {"name": "G"}),
        "post_create_appointment": api.book(staff["id"], "2030-01-07T10:00:00Z", "2030-01-07T10:30:00Z"),
        "post_issue_feed": api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "name": "Mine"}),
        "post_create": api.post(f"/staff/{staff['id']}/connections",
                                {"kind": "ics", "url": calendar_http.add("/l.ics", ICS)}),
    }
    ops = operations(doc)
    followed = 0
    for operation_id, resp in created.items():
        path, method, op = ops[operation_id]
        assert resp.status_code == 201, (operation_id, resp.get_json())
        for link in op["responses"]["201"]["links"].values():
            target_path, target_method, _ = ops[link["operationId"]]
            values = {name: resp.get_json()[expr.removeprefix("$response.body#/")]
                      for name, expr in link["parameters"].items()}
            url = target_path.format(**values)
            # Read-only ones first, so that a DELETE follows what it would remove.
            if target_method == "get":
                got = api.client.get(PREFIX + url, headers={"Authorization": f"Bearer {api.key}"},
                                     query_string={"start": "2030-01-07T00:00:00Z",
                                                   "end": "2030-01-08T00:00:00Z"}
                                     if url.endswith(("/availability", "/busy")) else None)
                assert got.status_code == 200, (link, got.get_json())
                followed += 1
        deleting = [ops[link["operationId"]][0].format(**{
            name: resp.get_json()[expr.removeprefix("$response.body#/")]
            for name, expr in link["parameters"].items()})
            for link in op["responses"]["201"]["links"].values()
            if ops[link["operationId"]][1] == "delete"]
        for url in deleting:
            assert api.delete(url).status_code == 204, (operation_id, url)
            followed += 1
    assert followed >= 12


# --- responses match the document ------------------------------------------------------------


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> str:
    content = doc["paths"][path][method]["responses"][str(status)]["content"]
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]  # type: ignore[no-any-return]


def test_responses_conform_to_the_document(api: Api, doc: dict[str, Any]) -> None:
    def check(resp: Any, path: str, method: str) -> Any:
        name = response_schema(doc, path, method, resp.status_code)
        errors = list(validator(doc, name).iter_errors(resp.get_json()))
        assert not errors, (path, method, resp.status_code, [e.message for e in errors])
        return resp.get_json()

    staff = check(api.post("/staff", {"name": "A", "email": "a@example.com"}), "/staff", "post")
    check(api.get("/staff"), "/staff", "get")
    check(api.get(f"/staff/{staff['id']}"), "/staff/{staff_id}", "get")
    check(api.patch(f"/staff/{staff['id']}", {"name": "B"}), "/staff/{staff_id}", "patch")
    group = check(api.post("/groups", {"name": "G", "staff_ids": [staff["id"]]}), "/groups", "post")
    check(api.get("/groups"), "/groups", "get")
    check(api.patch(f"/groups/{group['id']}", {"name": "H"}), "/groups/{group_id}", "patch")
    appt = check(api.book(staff["id"], "2030-01-07T10:00:00+01:00", "2030-01-07T10:30:00+01:00"),
                 "/appointments", "post")
    check(api.get("/appointments"), "/appointments", "get")
    check(api.get(f"/staff/{staff['id']}/availability?start=2030-01-07T00:00:00Z"
                  "&end=2030-01-08T00:00:00Z"), "/staff/{staff_id}/availability", "get")
    check(api.patch(f"/appointments/{appt['id']}", {"start": "2030-01-07T11:00:00+01:00",
                                                    "end": "2030-01-07T11:30:00+01:00"}),
          "/appointments/{appointment_id}", "patch")
    check(api.post(f"/appointments/{appt['id']}/cancel"), "/appointments/{appointment_id}/cancel", "post")
    check(api.get("/feeds"), "/feeds", "get")
    check(api.post("/feeds", {"scope": "staff", "scope_id": staff["id"]}), "/feeds", "post")
    check(api.get("/settings"), "/settings", "get")
    check(api.patch("/settings", {"show_cancelled": True}), "/settings", "patch")
    # Errors too.
    check(api.post("/staff", {"name": ""}), "/staff", "post")
    check(api.get("/staff/999"), "/staff/{staff_id}", "get")
    check(api.post(f"/appointments/{appt['id']}/cancel"), "/appointments/{appointment_id}/cancel", "post")
    check(api.client.get(PREFIX + "/staff"), "/staff", "get")


# --- every route answers errors in JSON ------------------------------------------------------


def concrete(rule: Rule, value: str) -> str:
    return re.sub(r"<(?:\w+:)?\w+>", value, rule.rule)


def assert_json_error(resp: Any, status: int, where: str) -> None:
    assert resp.status_code == status, (where, resp.status_code, resp.get_data()[:200])
    assert resp.is_json, where
    assert isinstance(resp.get_json()["error"], str) and resp.get_json()["error"], where


def test_every_route_answers_401_in_json(app: Flask, client: Any) -> None:
    for rule in api_rules(app):
        for method in (rule.methods or set()) & METHODS:
            resp = client.open(concrete(rule, "1"), method=method)
            assert_json_error(resp, 401, f"{method} {rule.rule}")
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_route_answers_errors_in_json(app: Flask, api: Api, doc: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {api.key}"}
    methods_of: dict[str, set[str]] = {}
    for rule in api_rules(app):
        methods_of.setdefault(rule.rule, set()).update((rule.methods or set()) & METHODS)
        for method in (rule.methods or set()) & METHODS:
            where = f"{method} {rule.rule}"
            if rule.arguments:
                # An id that does not exist.
                resp = api.client.open(concrete(rule, "424242"), method=method, headers=auth,
                                       json={} if method in ("POST", "PATCH") else None)
                assert_json_error(resp, resp.status_code, where)
                assert resp.status_code in (404, 422), where
            takes_body = "requestBody" in doc["paths"][openapi_path(rule.rule)][method.lower()]
            if takes_body:
                path = concrete(rule, "1")
                resp = api.client.open(path, method=method, headers=auth, data="{nope",
                                       content_type="application/json")
                assert_json_error(resp, 400, where + " (malformed)")
                resp = api.client.open(path, method=method, headers=auth, data="a=b",
                                       content_type="application/x-www-form-urlencoded")
                assert_json_error(resp, 415, where + " (form)")
                resp = api.client.open(path, method=method, headers=auth, json=[])
                assert_json_error(resp, 400, where + " (array)")
    for rule_path, allowed in methods_of.items():
        for method in METHODS - allowed:
            resp = api.client.open(re.sub(r"<(?:\w+:)?\w+>", "1", rule_path), method=method,
                                   headers=auth)
            assert_json_error(resp, 405, f"{method} {rule_path}")


# Not an object: the body is malformed whatever the operation (README: "400 malformed").
NOT_AN_OBJECT = ["[]", "[{}]", '"text"', "7", "true", "null", "{", "{'a': 1}"]
# A value no documented field takes: not a string, number, boolean, object, or list of those.
NO_FIELD_TAKES: list[Any] = [[[]]]


def error_fields(resp: Any) -> list[str]:
    return [e["field"] for e in resp.get_json().get("errors") or []]


def test_one_error_rule_for_every_operation(api: Api, doc: dict[str, Any]) -> None:
    """Walks every operation of the document: a body that is not a JSON object is 400, an
    invalid field — in the body or the query — is 422 with that field named in `errors`."""
    auth = {"Authorization": f"Bearer {api.key}"}
    walked = 0
    for path, ops in doc["paths"].items():
        url = PREFIX + re.sub(r"{\w+}", "1", path)
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if "requestBody" in op:
                walked += 1
                for data in NOT_AN_OBJECT:
                    resp = api.client.open(url, method=method.upper(), headers=auth, data=data,
                                           content_type="application/json")
                    assert_json_error(resp, 400, f"{where} {data}")
                schema = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
                for name in schema["properties"]:
                    resp = api.client.open(url, method=method.upper(), headers=auth,
                                           json={name: NO_FIELD_TAKES})
                    assert_json_error(resp, 422, f"{where} {name}")
                    assert name in {f.split(".")[0] for f in error_fields(resp)}, (where, name)
                resp = api.client.open(url, method=method.upper(), headers=auth, json={"nope": 1})
                assert_json_error(resp, 422, f"{where} unknown field")
                assert "nope" in error_fields(resp), where
            for param in (p for p in op.get("parameters", []) if p["in"] == "query"):
                walked += 1
                resp = api.client.open(f"{url}?{param['name']}=%21", method=method.upper(),
                                       headers=auth)
                assert_json_error(resp, 422, f"{where} ?{param['name']}=!")
                assert param["name"] in error_fields(resp), (where, param["name"])
            if any(p["in"] == "query" for p in op.get("parameters", [])):
                resp = api.client.open(f"{url}?nope=1", method=method.upper(), headers=auth)
                assert_json_error(resp, 422, f"{where} ?nope=1")
                assert "nope" in error_fields(resp), where
    assert walked > 20


def test_unknown_endpoints_are_404_json(api: Api) -> None:
    for path in ("/nope", "/staff/1/nope", "/appointments/1/uncancel", "/"):
        assert_json_error(api.get(path), 404, path)


def test_query_routes_answer_422_in_json(api: Api) -> None:
    staff = api.make_staff()
    assert_json_error(api.get("/appointments?limit=lots"), 422, "list")
    assert_json_error(api.get(f"/staff/{staff['id']}/availability"), 422, "availability")
