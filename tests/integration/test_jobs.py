"""Sync jobs through the real task queue: Huey on SQLite (the embedded default) and on Redis
(the scale path; required on CI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.models import Connection
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY
from tests.redis_queue import private_queue_url
from tests.servers import CalendarHTTPServer
from tests.waiting import wait_until

ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:x\r\n"
       b"DTSTAMP:20260101T000000Z\r\nDTSTART:20300107T090000Z\r\nDTEND:20300107T100000Z\r\n"
       b"END:VEVENT\r\nEND:VCALENDAR\r\n")


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    yield from private_queue_url("jobs", "redis://127.0.0.1:6379/15")


@pytest.fixture
def settings(settings: Settings, queue_url: str | None) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True, "queue_url": queue_url})


@pytest.fixture
def consumer(app: Flask) -> Iterator[object]:
    worker = app.extensions["calsync"].jobs.start_in_background(workers=2, periodic=False)
    yield worker
    worker.stop(graceful=True)


def test_due_connections_are_synced_once_each_by_the_queue(
    app: Flask, api: Api, calendar_http: CalendarHTTPServer, consumer: object
) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    ids = []
    for i in range(8):
        url = calendar_http.add(f"/c{i}.ics", ICS)
        resp = api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url})
        ids.append(resp.get_json()["id"])
    services = app.extensions["calsync"]
    queued = services.jobs._schedule_due()  # what the periodic task does every minute
    assert queued == 8

    def states() -> dict[int, str]:
        with services.sessions() as s:
            return dict(s.execute(select(Connection.id, Connection.status)).all())

    wait_until(lambda: all(states()[i] == "ok" for i in ids), lambda: f"all eight synced: {states()}")
    assert all(calendar_http.hits[f"/c{i}.ics"] == 1 for i in range(8)), calendar_http.hits
    # Nothing is due any more: a second scheduler run queues nothing.
    assert services.jobs._schedule_due() == 0
