"""GET /emails, POST /emails/{id}/retry and GET /appointments/{id}/history: what the outbox and an
appointment's history look like through the JSON API, company by company."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from calsync.feeds.accounts.admins import create_api_key
from calsync.models import Company, OutboxEmail
from tests.conftest import Api
from tests.integration.test_openapi import response_schema, validator

MONDAY = "2030-01-07T{}:00+01:00"


def booked_moved_cancelled(api: Api) -> dict[str, Any]:
    staff = api.make_staff()
    appt = api.book(staff["id"], MONDAY.format("10:00"), MONDAY.format("10:30")).get_json()
    api.patch(f"/appointments/{appt['id']}", {"start": MONDAY.format("11:00"), "end": MONDAY.format("11:30")})
    api.post(f"/appointments/{appt['id']}/cancel")
    return appt  # type: ignore[no-any-return]


def set_status(app: Flask, email_id: int, status: str, error: str | None = None) -> None:
    with app.extensions["calsync"].sessions.begin() as s:
        row = s.get(OutboxEmail, email_id)
        row.status, row.last_error, row.attempts = status, error, 8 if status == "failed" else 0


def test_the_outbox_lists_each_email_newest_first(api: Api) -> None:
    appt = booked_moved_cancelled(api)
    emails = api.get("/emails").get_json()["emails"]
    assert [(e["kind"], e["method"], e["sequence"]) for e in emails] == [
        ("cancelled", "CANCEL", 2), ("rescheduled", "REQUEST", 1), ("booked", "REQUEST", 0)]
    first = emails[-1]
    assert first["to"] == "chloe@example.com"
    assert first["appointment_id"] == appt["id"]
    assert first["subject"] == "Confirmed: Haircut on Mon 7 Jan 2030, 10:00 CET"
    assert (first["status"], first["attempts"]) == ("pending", 0)
    assert first["sent_at"] is None and first["last_error"] is None
    assert first["created_at"]
    assert set(first) >= {"id", "to", "subject", "kind", "status", "attempts", "method", "appointment_id",
                          "sequence", "created_at", "sent_at", "last_error"}
    assert "message" not in first  # the body (and the customer's details in it) stays inside
    assert [e["kind"] for e in api.get("/emails?limit=1&offset=1").get_json()["emails"]] == ["rescheduled"]


def test_the_outbox_filters_by_status(app: Flask, api: Api) -> None:
    booked_moved_cancelled(api)
    ids = [e["id"] for e in api.get("/emails").get_json()["emails"]]
    set_status(app, ids[0], "failed", "The mail server refused the email (554 no).")
    set_status(app, ids[1], "sent")
    assert [e["id"] for e in api.get("/emails?status=failed").get_json()["emails"]] == [ids[0]]
    assert [e["id"] for e in api.get("/emails?status=sent").get_json()["emails"]] == [ids[1]]
    assert [e["id"] for e in api.get("/emails?status=pending").get_json()["emails"]] == [ids[2]]
    failed = api.get("/emails?status=failed").get_json()["emails"][0]
    assert failed["last_error"] == "The mail server refused the email (554 no)."
    for bad in ("/emails?status=lost", "/emails?limit=0", "/emails?limit=9999", "/emails?colour=red"):
        resp = api.get(bad)
        assert resp.status_code == 422, bad
        assert resp.is_json and resp.get_json()["error"]


def test_retry_makes_a_failed_email_due_and_refuses_a_sent_one(app: Flask, api: Api) -> None:
    booked_moved_cancelled(api)
    failed, sent, pending = (e["id"] for e in api.get("/emails").get_json()["emails"])
    set_status(app, failed, "failed", "gave up")
    set_status(app, sent, "sent")
    resp = api.post(f"/emails/{failed}/retry")
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["id"], body["status"], body["attempts"]) == (failed, "pending", 0)
    assert body["next_attempt_at"] is not None
    assert body["last_error"] == "gave up"  # kept until a delivery replaces it
    assert api.post(f"/emails/{pending}/retry").get_json()["status"] == "pending"
    refused = api.post(f"/emails/{sent}/retry")
    assert refused.status_code == 409
    assert "already sent" in refused.get_json()["error"]
    missing = api.post("/emails/424242/retry")
    assert missing.status_code == 404 and missing.get_json()["error"] == "There is no email with id 424242."


def test_history_lists_every_change_with_its_source(api: Api) -> None:
    appt = booked_moved_cancelled(api)
    history = api.get(f"/appointments/{appt['id']}/history").get_json()["history"]
    assert [(h["action"], h["source"], h["sequence"]) for h in history] == [
        ("booked", "api", 0), ("rescheduled", "api", 1), ("cancelled", "api", 2)]
    assert history[1]["detail"]["previous_start"].startswith("2030-01-07T09:00:00")
    assert history[1]["detail"]["start"].startswith("2030-01-07T10:00:00")
    assert all(h["created_at"] for h in history)
    missing = api.get("/appointments/424242/history")
    assert missing.status_code == 404 and missing.is_json


@pytest.fixture
def other_company(app: Flask, client: FlaskClient, api: Api) -> Api:
    with app.extensions["calsync"].sessions.begin() as s:
        company = Company(name="Other Salon", timezone="UTC", settings={})
        s.add(company)
        s.flush()
        _, key = create_api_key(s, company, "other")
    return Api(client, key)


def test_one_company_never_sees_anothers_emails_or_history(api: Api, other_company: Api) -> None:
    appt = booked_moved_cancelled(api)
    email_id = api.get("/emails").get_json()["emails"][0]["id"]
    assert other_company.get("/emails").get_json() == {"emails": []}
    assert other_company.post(f"/emails/{email_id}/retry").status_code == 404
    assert other_company.get(f"/appointments/{appt['id']}/history").status_code == 404


def test_responses_match_the_openapi_document(app: Flask, api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").get_json()

    def check(resp: Any, path: str, method: str) -> None:
        name = response_schema(doc, path, method, resp.status_code)
        errors = list(validator(doc, name).iter_errors(resp.get_json()))
        assert not errors, (path, method, resp.status_code, [e.message for e in errors])

    appt = booked_moved_cancelled(api)
    check(api.get("/emails"), "/emails", "get")
    check(api.get("/emails?status=nope"), "/emails", "get")
    email_id = api.get("/emails").get_json()["emails"][0]["id"]
    check(api.post(f"/emails/{email_id}/retry"), "/emails/{email_id}/retry", "post")
    set_status(app, email_id, "sent")
    check(api.post(f"/emails/{email_id}/retry"), "/emails/{email_id}/retry", "post")
    check(api.post("/emails/999/retry"), "/emails/{email_id}/retry", "post")
    check(api.get(f"/appointments/{appt['id']}/history"), "/appointments/{appointment_id}/history", "get")
    check(api.get("/appointments/999/history"), "/appointments/{appointment_id}/history", "get")
    listed = {p["name"] for p in doc["paths"]["/emails"]["get"]["parameters"]}
    assert listed == {"status", "limit", "offset"}
