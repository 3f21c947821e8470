"""Work a person waits for on a web thread (web/interactive.py, issue 14): a few at a time,
each within the interactive budget and the operator's limits; beyond that "Sync now" is
queued and answered at once, and a discovery is refused with a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.settings import Settings
from calsync.feeds.sources.fetch import INTERACTIVE_SECONDS, interactive
from calsync.models import Connection
from calsync.web import interactive as web_interactive
from calsync.web.app import create_app
from tests.admin_helpers import Browser, busy_ics
from tests.conftest import Api
from tests.servers import CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@contextmanager
def every_slot_taken() -> Iterator[None]:
    """As when other requests are talking to slow calendar servers."""
    for _ in range(web_interactive.SLOTS):
        assert web_interactive._slots.acquire(blocking=False)
    try:
        yield
    finally:
        for _ in range(web_interactive.SLOTS):
            web_interactive._slots.release()


def _connection(app: Flask) -> Connection:
    with app.extensions["calsync"].sessions() as session:
        return session.scalars(select(Connection)).one()


def test_sync_now_with_every_slot_taken_is_queued_and_answered_at_once(
    app: Flask, api: Api, admin: Browser, calendar_http: CalendarHTTPServer,
) -> None:
    staff: dict[str, Any] = api.make_staff()
    url = calendar_http.add("/c.ics", busy_ics(2))
    assert api.post(f"/staff/{staff['id']}/connections", {"kind": "ics", "url": url}).status_code == 201
    conn = _connection(app)
    huey = app.extensions["calsync"].jobs.huey
    queued_before = huey.pending_count()
    with every_slot_taken():
        body = admin.post_json(f"/connections/{conn.id}/sync").get_json()
    assert body["queued"] is True and "in the background" in body["message"]
    assert body["status"] == "pending"  # unchanged: the web thread did not fetch
    assert calendar_http.hits.get("/c.ics") is None
    assert huey.pending_count() == queued_before + 1
    # With a slot free, the click syncs while the person waits, as before.
    body = admin.post_json(f"/connections/{conn.id}/sync").get_json()
    assert "queued" not in body and body["status"] == "ok" and body["busy_count"] == 2


def test_a_discovery_with_every_slot_taken_is_refused_with_a_sentence(api: Api) -> None:
    with every_slot_taken():
        resp = api.post("/caldav/discover", {"url": "http://127.0.0.1:1/dav/", "username": "a",
                                             "password": "b"})
    assert resp.status_code == 422
    assert resp.get_json()["error"] == web_interactive.BUSY


def test_the_operators_limits_reach_interactive_fetches(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"fetch_allowed_ports": (8443,),
                                                 "fetch_max_bytes": 2 * 1024 * 1024,
                                                 "fetch_timeout_seconds": 45.0}), migrate=False)
    limits = app.extensions["calsync"].sync.limits
    assert limits.ports == frozenset({80, 443, 8443}) and limits.total_seconds == 45.0
    cut = interactive(limits)
    assert cut.ports == limits.ports and cut.max_bytes == 2 * 1024 * 1024
    assert cut.total_seconds == INTERACTIVE_SECONDS and cut.deadline is not None
