"""The JSON API against its own OpenAPI document, with Schemathesis: for every operation,
generated valid and invalid requests (bodies, query strings, path ids, with the API key) must
get no 5xx, only documented status codes, the documented content type and bodies that match
the documented schemas — and invalid input must be refused.

The app runs in process (WSGI) on a database with one of everything, so that ids 1 exist and
requests reach the code behind the validation. Names do not resolve (a fake resolver): a
generated address never leaves the machine.

`CALSYNC_SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 25, about a minute
for the whole API).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import CHECKS, load_all_checks

from calsync.feeds.settings import Settings
from calsync.web.api.openapi import build_openapi
from tests.conftest import Api
from tests.servers import CalendarHTTPServer

EXAMPLES = int(os.environ.get("CALSYNC_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The connection below is served on loopback.
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def no_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Addresses resolve only when they are IP literals or localhost: generated host names must
    not reach a real resolver (or, through it, the internet)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name.strip("[]"))
        except (OSError, ValueError):
            if name != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _day(days: int, hour: int) -> str:
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (base + timedelta(days=days, hours=hour)).isoformat()


@pytest.fixture
def world(api: Api, calendar_http: CalendarHTTPServer, no_name_resolution: None) -> Iterator[Api]:
    """One of everything, so that generated ids (Schemathesis tries 1 among others) find rows:
    staff, a group, an appointment with its emails, a feed token and a calendar connection."""
    every_day = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    staff = api.make_staff(working_hours=every_day, timezone="UTC")
    assert api.post("/groups", {"name": "Front desk", "staff_ids": [staff["id"]]}).status_code == 201
    assert api.book(staff["id"], _day(3, 10), _day(3, 11)).status_code == 201
    calendar = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:b\r\n"
        b"DTSTAMP:20260101T000000Z\r\nDTSTART:20300101T090000Z\r\nDTEND:20300101T100000Z\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    url = calendar_http.add("/private/basic.ics", calendar)
    created = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url})
    assert created.status_code == 201, created.get_json()
    yield api


# The document the app serves is generated from the routes alone (web.api.openapi), so it is
# loaded once here; each test binds it to its own app, so that every request Schemathesis sends
# — its own probes too (a request without the key, an undeclared method) — goes to that app.
schema = schemathesis.openapi.from_dict(build_openapi())
# JSON Schema cannot say "end after start", "an address that answers" or "a free slot": a
# request valid by the document can still be refused (422, 409) by design, so the check that
# every schema-valid request is accepted does not apply. The opposite check — every invalid
# request is refused — does.
NOT_APPLICABLE = ["positive_data_acceptance"]


def test_the_document_loaded_here_is_the_one_the_app_serves(client: Any) -> None:
    assert client.get("/api/v1/openapi.json").get_json() == schema.raw_schema


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_every_operation_keeps_to_its_schema(case: Any, app: Flask, world: Api) -> None:
    load_all_checks()
    case.operation.app = case.operation.schema.app = app
    case.call_and_validate(
        headers={"Authorization": f"Bearer {world.key}"}, excluded_checks=CHECKS.get_by_names(NOT_APPLICABLE)
    )


# Disagreements Schemathesis found, pinned (the fixes are in web/api/ and feeds/tokens.py).


def test_the_longest_allowed_name_gets_its_default_feed(api: Api) -> None:
    """A 200-character name is valid; its default feed token's name ("<name> (full)") was too
    long for the column, a 500 on PostgreSQL."""
    for path, body in (
        ("/staff", {"name": "S" * 200, "email": "s@example.com"}),
        ("/groups", {"name": "G" * 200}),
    ):
        resp = api.post(path, body)
        assert resp.status_code == 201, resp.get_json()
    names = [feed["name"] for feed in api.get("/feeds").get_json()["feeds"]]
    assert {len(n) for n in names if n.startswith(("S" * 50, "G" * 50))} == {200}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/staff/1/busy?start=0.5&end=2030-01-01T00:00:00Z", None),  # a number as a date-time
        ("/appointments?start=1700000000", None),
        ("/settings", {"bidirectional_sync": 0}),  # a number as a boolean
        ("/settings", {"feed_refresh_minutes": "60"}),  # a string as an integer
        ("/staff", {"name": 5, "email": "a@example.com"}),  # a number as a string
    ],
)
def test_values_of_another_type_than_documented_are_refused(api: Api, path: str, body: Any) -> None:
    api.make_staff()
    resp = (
        api.get(path)
        if body is None
        else api.patch(path, body)
        if path == "/settings"
        else api.post(path, body)
    )
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["errors"]


def test_a_405_names_the_allowed_methods(api: Api) -> None:
    resp = api.client.put("/api/v1/staff", headers={"Authorization": f"Bearer {api.key}"})
    assert resp.status_code == 405 and set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
