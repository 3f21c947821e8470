"""JSON API: authentication, staff members (CRUD, validation, junk input) and tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from calsync.feeds.accounts.admins import create_api_key, revoke_api_key
from calsync.models import ApiKey, Company
from tests.conftest import Api

MON_FRI = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
STAFF = {"name": "Ana Ruiz", "email": "ana@example.com"}


def error_fields(resp: Any) -> list[str]:
    """The `errors[].field` names of a 422, after checking the error shape."""
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.is_json
    body = resp.get_json()
    assert isinstance(body["error"], str) and body["error"]
    return [e["field"] for e in body["errors"]]


def raw(api: Api, method: str, path: str, data: Any, content_type: str | None) -> Any:
    headers = {"Authorization": f"Bearer {api.key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return api.client.open("/api/v1" + path, method=method, data=data, headers=headers)


# --- authentication ---------------------------------------------------------------------------


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer    "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Token csk_something"},
    {"Authorization": "Bearer csk_not-a-real-key"},
    {"Authorization": "Bearer " + "x" * 5000},
]


def test_requests_without_a_valid_key_get_401_json(api: Api) -> None:
    for headers in BAD_AUTH:
        resp = api.client.get("/api/v1/staff", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.is_json
        assert resp.get_json()["error"]
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_401_does_not_run_the_view(api: Api) -> None:
    resp = api.client.post("/api/v1/staff", json=STAFF)
    assert resp.status_code == 401
    assert api.get("/staff").get_json() == {"staff": []}


def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    resp = api.client.get("/api/v1/staff", headers={"Authorization": f"bearer {api.key}"})
    assert resp.status_code == 200


def test_a_revoked_key_gets_401(api: Api, app: Flask) -> None:
    assert api.get("/staff").status_code == 200
    with app.extensions["calsync"].sessions.begin() as session:
        row = session.query(ApiKey).one()
        revoke_api_key(session, session.get(Company, row.company_id), row.id)
    resp = api.get("/staff")
    assert resp.status_code == 401
    assert "WWW-Authenticate" in resp.headers


def test_openapi_document_needs_no_key(client: Any) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json()["openapi"] == "3.1.0"


def test_api_responses_are_not_cached(api: Api) -> None:
    assert api.get("/staff").headers["Cache-Control"] == "no-store"


# --- create, read ----------------------------------------------------------------------------


def test_create_staff_with_defaults(api: Api) -> None:
    resp = api.post("/staff", STAFF)
    assert resp.status_code == 201
    body = resp.get_json()
    assert isinstance(body["id"], int)
    assert body["name"] == "Ana Ruiz"
    assert body["email"] == "ana@example.com"
    assert body["timezone"] == "Europe/Berlin"  # the company's (conftest: Test Salon, Berlin)
    assert body["working_hours"] == MON_FRI
    assert body["group_ids"] == []


def test_default_timezone_follows_the_company(api: Api, app: Flask) -> None:
    with app.extensions["calsync"].sessions.begin() as session:
        session.query(Company).one().timezone = "America/New_York"
    assert api.post("/staff", STAFF).get_json()["timezone"] == "America/New_York"


def test_create_staff_with_everything(api: Api) -> None:
    hours = {"sat": [["10:00", "14:00"]], "mon": [["13:00", "18:00"], ["08:00", "12:00"]]}
    body = api.make_staff(name="  Ögünç Şahin  ", timezone="Asia/Kolkata", working_hours=hours)
    assert body["name"] == "Ögünç Şahin"  # surrounding whitespace stripped
    assert body["timezone"] == "Asia/Kolkata"
    # Intervals come back sorted; only the days given are working days.
    assert body["working_hours"] == {
        "mon": [["08:00", "12:00"], ["13:00", "18:00"]],
        "sat": [["10:00", "14:00"]],
    }


def test_working_hours_may_end_at_midnight_and_touch(api: Api) -> None:
    hours = {"fri": [["18:00", "24:00"], ["09:00", "18:00"]]}
    body = api.make_staff(working_hours=hours)
    assert body["working_hours"] == {"fri": [["09:00", "18:00"], ["18:00", "24:00"]]}


def test_list_and_get_staff(api: Api) -> None:
    assert api.get("/staff").get_json() == {"staff": []}
    a = api.make_staff(name="A", email="a@example.com")
    b = api.make_staff(name="B", email="b@example.com")
    listed = api.get("/staff").get_json()["staff"]
    assert listed == [a, b]
    resp = api.get(f"/staff/{b['id']}")
    assert resp.status_code == 200
    assert resp.get_json() == b


# --- patch -----------------------------------------------------------------------------------


def test_patch_name_timezone_and_working_hours(api: Api) -> None:
    staff = api.make_staff()
    sid = staff["id"]
    resp = api.patch(f"/staff/{sid}", {"name": "Zoë Schmidt"})
    assert resp.status_code == 200
    assert resp.get_json()["name"] == "Zoë Schmidt"
    assert resp.get_json()["timezone"] == staff["timezone"]  # untouched fields stay

    resp = api.patch(f"/staff/{sid}", {"timezone": "America/Sao_Paulo"})
    assert resp.get_json()["timezone"] == "America/Sao_Paulo"

    hours = {"sun": [["10:00", "12:00"]]}
    resp = api.patch(f"/staff/{sid}", {"working_hours": hours})
    assert resp.get_json()["working_hours"] == hours

    resp = api.patch(f"/staff/{sid}", {"email": "new@example.com"})
    assert resp.get_json()["email"] == "new@example.com"

    # All of it persisted, not only echoed.
    assert api.get(f"/staff/{sid}").get_json() == {
        "id": sid,
        "name": "Zoë Schmidt",
        "email": "new@example.com",
        "timezone": "America/Sao_Paulo",
        "working_hours": hours,
        "group_ids": [],
    }


def test_patch_with_nothing_changes_nothing(api: Api) -> None:
    staff = api.make_staff()
    resp = api.patch(f"/staff/{staff['id']}", {})
    assert resp.status_code == 200
    assert resp.get_json() == staff


def test_invalid_patch_changes_nothing(api: Api) -> None:
    staff = api.make_staff()
    resp = api.patch(f"/staff/{staff['id']}", {"name": "New", "timezone": "Nowhere/Land"})
    assert error_fields(resp) == ["timezone"]
    assert api.get(f"/staff/{staff['id']}").get_json() == staff


# --- delete ----------------------------------------------------------------------------------


def test_delete_staff(api: Api) -> None:
    staff = api.make_staff()
    resp = api.delete(f"/staff/{staff['id']}")
    assert resp.status_code == 204
    assert resp.get_data() == b""
    assert api.get(f"/staff/{staff['id']}").status_code == 404
    assert api.get("/staff").get_json() == {"staff": []}
    assert api.delete(f"/staff/{staff['id']}").status_code == 404


def test_delete_is_refused_while_upcoming_appointments_exist(api: Api) -> None:
    staff = api.make_staff()
    booked = api.book(staff["id"], "2030-01-07T10:00:00+01:00", "2030-01-07T10:30:00+01:00")
    assert booked.status_code == 201
    resp = api.delete(f"/staff/{staff['id']}")
    assert resp.status_code == 409
    assert resp.is_json
    assert "upcoming" in resp.get_json()["error"]
    assert api.get(f"/staff/{staff['id']}").status_code == 200

    # Once the appointment is cancelled, nothing stands in the way.
    cancel = api.post(f"/appointments/{booked.get_json()['id']}/cancel")
    assert cancel.status_code == 200
    assert api.delete(f"/staff/{staff['id']}").status_code == 204


def test_past_appointments_do_not_block_delete(api: Api) -> None:
    staff = api.make_staff()
    # Monday 2020-01-06, inside working hours, long past.
    past = api.book(staff["id"], "2020-01-06T10:00:00+01:00", "2020-01-06T10:30:00+01:00")
    assert past.status_code == 201
    assert api.delete(f"/staff/{staff['id']}").status_code == 204
    assert api.get(f"/appointments/{past.get_json()['id']}").status_code == 404


def test_delete_revokes_the_staff_feeds(api: Api) -> None:
    staff = api.make_staff()
    url = api.feed_url("staff", staff["id"])
    assert api.client.get(url).status_code == 200
    assert api.delete(f"/staff/{staff['id']}").status_code == 204
    assert api.client.get(url).status_code == 404
    scopes = {(f["scope"], f["scope_id"]) for f in api.get("/feeds").get_json()["feeds"]}
    assert ("staff", staff["id"]) not in scopes


# --- unknown ids -----------------------------------------------------------------------------


def test_unknown_staff_is_404_json(api: Api) -> None:
    api.make_staff()
    for staff_id in (999, 2**31, 2**63 - 1, 2**63, 10**30):  # beyond 32 bits must not overflow the driver
        for method in ("GET", "PATCH", "DELETE"):
            resp = api.client.open(
                f"/api/v1/staff/{staff_id}", method=method,
                json={"name": "X"} if method == "PATCH" else None,
                headers={"Authorization": f"Bearer {api.key}"},
            )
            assert resp.status_code == 404, (method, staff_id)
            assert resp.is_json
            assert resp.get_json()["error"]


def test_non_numeric_staff_id_is_404_json(api: Api) -> None:
    for path in ("/staff/abc", "/staff/-1", "/staff/1.5"):
        resp = api.get(path)
        assert resp.status_code == 404, path
        assert resp.is_json


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b.com\r\nBcc: x@example.com"}, "email"),
        ({"email": ""}, "email"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),  # a folder of the zone database, not a zone
        ({"timezone": "../../../etc/passwd"}, "timezone"),
        ({"timezone": "europe/berlin"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"working_hours": {"mon": [["25:00", "26:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00", "17:60"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["9:00", "17:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["17:00", "09:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00", "09:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["24:00", "24:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00", "12:00"], ["11:30", "14:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00", "17:00"], ["09:00", "17:00"]]}}, "working_hours"),
        ({"working_hours": {"funday": [["09:00", "17:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": [["09:00", "12:00", "13:00"]]}}, "working_hours"),
        ({"working_hours": {"mon": "09:00-17:00"}}, "working_hours"),
        ({"working_hours": [["09:00", "17:00"]]}, "working_hours"),
        ({"working_hours": {"mon": [[9, 17]]}}, "working_hours"),
    ],
)
def test_invalid_staff_fields_are_422_naming_the_field(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    created = api.post("/staff", {**STAFF, **changes})
    fields = error_fields(created)
    assert fields and all(f.split(".")[0] == field for f in fields), fields
    assert api.get("/staff").get_json() == {"staff": []}

    staff = api.make_staff()
    patched = api.patch(f"/staff/{staff['id']}", changes)
    fields = error_fields(patched)
    assert fields and all(f.split(".")[0] == field for f in fields), fields
    assert api.get(f"/staff/{staff['id']}").get_json() == staff


def test_null_in_a_patch_is_422_not_ignored(api: Api) -> None:
    staff = api.make_staff()
    for field in ("name", "email", "timezone", "working_hours"):
        assert error_fields(api.patch(f"/staff/{staff['id']}", {field: None})) == [field]
    assert api.get(f"/staff/{staff['id']}").get_json() == staff


def test_missing_required_fields_are_named(api: Api) -> None:
    assert sorted(error_fields(api.post("/staff", {}))) == ["email", "name"]
    assert error_fields(api.post("/staff", {"name": "A"})) == ["email"]


def test_unknown_fields_are_422(api: Api) -> None:
    assert error_fields(api.post("/staff", {**STAFF, "role": "admin"})) == ["role"]
    staff = api.make_staff()
    assert error_fields(api.patch(f"/staff/{staff['id']}", {"id": 77})) == ["id"]
    assert error_fields(api.patch(f"/staff/{staff['id']}", {"feed_revision": 0})) == ["feed_revision"]


def test_malformed_json_is_400(api: Api) -> None:
    for data in ('{"name": "A",', "{'name': 'A'}", "\xff\xfe", "[" * 100_000):
        resp = raw(api, "POST", "/staff", data, "application/json")
        assert resp.status_code == 400, data[:20]
        assert resp.is_json and resp.get_json()["error"]


def test_empty_body_is_400(api: Api) -> None:
    resp = raw(api, "POST", "/staff", b"", "application/json")
    assert resp.status_code == 400
    assert resp.is_json


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_type_is_415(api: Api, content_type: str | None) -> None:
    resp = raw(api, "POST", "/staff", '{"name": "A", "email": "a@example.com"}', content_type)
    assert resp.status_code == 415
    assert resp.is_json
    assert api.get("/staff").get_json() == {"staff": []}


def test_body_over_the_size_limit_is_413_json(api: Api) -> None:
    resp = raw(api, "POST", "/staff", '"' + "x" * (2 * 1024 * 1024) + '"', "application/json")
    assert resp.status_code == 413
    assert resp.is_json


JUNK: list[Any] = [
    None,
    [],
    [STAFF],
    "a string",
    0,
    -1,
    3.5,
    True,
    {"name": None, "email": None},
    {"name": 123, "email": 456},
    {"name": ["A"], "email": {"x": 1}},
    {"name": {"first": "A"}, "email": "a@example.com"},
    {"name": "A", "email": "a@example.com", "timezone": 5},
    {"name": "A", "email": "a@example.com", "timezone": ["Europe/Berlin"]},
    {"name": "A", "email": "a@example.com", "timezone": "x" * 100_000},
    {"name": "A" * 100_000, "email": "a@example.com"},
    {"name": "A", "email": "a" * 100_000 + "@example.com"},
    {"name": "A", "email": "a@example.com", "working_hours": "always"},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": None}},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": [None]}},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": [[None, None]]}},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": [{"start": "09:00"}]}},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": [["09:00", "17:00"]] * 10_000}},
    {"name": "A", "email": "a@example.com", "working_hours": {"": []}},
    {"name": "A\x00", "email": "a@example.com", "timezone": "UTC\x00"},
    {"name": "A", "email": "a@example.com", "timezone": "\ud800"},
    {"name": "A", "email": "a@example.com", "working_hours": {"mon": [["\u0660\u0669:00", "17:00"]]}},
]


def test_junk_is_refused_without_a_500(api: Api) -> None:
    staff = api.make_staff()
    for body in JUNK:
        for resp in (api.post("/staff", body), api.patch(f"/staff/{staff['id']}", body)):
            expected = 422 if isinstance(body, dict) else 400  # README: 400 malformed, 422 invalid field
            assert resp.status_code == expected, (repr(body)[:100], resp.get_data()[:300])
            assert resp.is_json and resp.get_json()["error"]
    assert api.get(f"/staff/{staff['id']}").get_json() == staff
    assert len(api.get("/staff").get_json()["staff"]) == 1


# --- tenants ---------------------------------------------------------------------------------


@pytest.fixture
def other_api(app: Flask, api: Api, db: Session) -> Api:
    """A second company on the same install, with its own key."""
    company = Company(name="Other Co", timezone="UTC", settings={})
    db.add(company)
    db.flush()
    _, key = create_api_key(db, company, "other")
    db.commit()
    return Api(api.client, key)


def test_companies_cannot_see_each_others_staff(api: Api, other_api: Api) -> None:
    mine = api.make_staff()
    theirs = other_api.post("/staff", {"name": "Other", "email": "o@example.com"}).get_json()
    assert theirs["timezone"] == "UTC"  # the other company's zone
    assert api.get("/staff").get_json()["staff"] == [mine]
    assert other_api.get("/staff").get_json()["staff"] == [theirs]
    sid = mine["id"]
    assert other_api.get(f"/staff/{sid}").status_code == 404
    assert other_api.patch(f"/staff/{sid}", {"name": "Stolen"}).status_code == 404
    assert other_api.delete(f"/staff/{sid}").status_code == 404
    assert other_api.get(f"/staff/{sid}/availability?start=2030-01-07T00:00:00Z"
                         "&end=2030-01-08T00:00:00Z").status_code == 404
    booked = other_api.book(sid, "2030-01-07T10:00:00+01:00", "2030-01-07T10:30:00+01:00")
    assert booked.status_code == 404
    assert other_api.post("/feeds", {"scope": "staff", "scope_id": sid}).status_code == 404
    assert other_api.post("/groups", {"name": "G", "staff_ids": [sid]}).status_code == 404
    assert api.get(f"/staff/{sid}").get_json() == mine

    appt = api.book(sid, "2030-01-07T10:00:00+01:00", "2030-01-07T10:30:00+01:00").get_json()
    assert other_api.get("/appointments").get_json() == {"appointments": []}
    assert other_api.get(f"/appointments/{appt['id']}").status_code == 404
    assert other_api.post(f"/appointments/{appt['id']}/cancel").status_code == 404
    mine_feeds = {f["token_id"] for f in api.get("/feeds").get_json()["feeds"]}
    theirs_feeds = {f["token_id"] for f in other_api.get("/feeds").get_json()["feeds"]}
    assert mine_feeds and theirs_feeds and not mine_feeds & theirs_feeds
    assert other_api.delete(f"/feeds/{min(mine_feeds)}").status_code == 404
