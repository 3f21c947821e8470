"""Sync health: every connection with status, last success, failures and alerts; filters for
failing, stale and pending ones; "Sync all now" queues a sync of each."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.health import mark_stale
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.settings import Settings
from calsync.models import Alert, Connection, utcnow
from tests.admin_helpers import Browser, busy_ics, text_of
from tests.conftest import Api
from tests.servers import CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def three(app: Flask, api: Api, calendar_http: CalendarHTTPServer) -> dict[str, int]:
    """Three connections: one syncing fine, one failing with an alert, one never synced."""
    zoe = api.make_staff()
    ana = api.make_staff(name="Ana Ortega", email="ana@example.com")
    ok = calendar_http.add("/ok.ics", busy_ics(2))
    ids = {}
    gone = calendar_http.base_url + "/gone.ics"
    for name, staff_id, url in (("Fine", zoe["id"], ok), ("Broken", zoe["id"], gone),
                                ("Waiting", ana["id"], ok)):
        resp = api.post(f"/staff/{staff_id}/connections", {"kind": "ics", "url": url, "name": name})
        ids[name] = resp.get_json()["id"]
    ctx = app.extensions["calsync"].sync
    sync_connection(ctx, ids["Fine"])
    for _ in range(3):  # the default alert threshold
        sync_connection(ctx, ids["Broken"])
    return ids


def test_every_connection_with_its_health(admin: Browser, three: dict[str, int]) -> None:
    html = text_of(admin.get("/health"))
    for name in ("Fine", "Broken", "Waiting", "Zoë Müller", "Ana Ortega"):
        assert name in html
    # Failing first, with its failures and the alert sentence.
    assert html.index("Broken") < html.index("Waiting") < html.index("Fine")
    assert "has failed to sync 3 times in a row" in html
    # Broken never synced: "Not yet reachable", as on its card and the staff list.
    assert re.search(r'badge-error" data-field="status">Not yet reachable<', html)
    assert re.search(r'badge-ok" data-field="status">OK<', html)
    assert re.search(r'badge-pending" data-field="status">Not synced yet<', html)
    assert re.search(r'data-label="Failures" class="inline-cell">3<', html)
    assert "just now" in html
    assert re.search(r'All <span class="count">3</span>', html)
    assert re.search(r'Failing <span class="count">1</span>', html)


@pytest.mark.parametrize(("show", "present", "absent"), [
    ("errors", ["Broken"], ["Fine", "Waiting"]),
    ("pending", ["Waiting", "Broken"], ["Fine"]),  # never synced, failing or not
    ("stale", [], ["Fine", "Broken", "Waiting"]),
    ("all", ["Fine", "Broken", "Waiting"], []),
    ("nonsense", ["Fine", "Broken", "Waiting"], []),
])
def test_filters(admin: Browser, three: dict[str, int], show: str, present: list[str],
                 absent: list[str]) -> None:
    html = text_of(admin.get(f"/health?show={show}"))
    table = html.split('aria-label="Calendars"', 1)[1]
    for name in present:
        assert f'<span class="cell-title">{name}</span>' in table
    for name in absent:
        assert f'<span class="cell-title">{name}</span>' not in table
    if show == "stale":
        assert "no calendar is stale" in html


def test_stale_connections_show_up_under_stale_with_their_alert(app: Flask, admin: Browser,
                                                                three: dict[str, int]) -> None:
    with app.extensions["calsync"].sessions.begin() as session:
        conn = session.get(Connection, three["Fine"])
        assert conn is not None
        conn.last_success_at = utcnow() - timedelta(days=3)
        assert mark_stale(session, utcnow()) == 1
    html = text_of(admin.get("/health?show=stale"))
    assert '<span class="cell-title">Fine</span>' in html and "has not synced since" in html
    assert re.search(r'badge-stale" data-field="status">Stale<', html)
    assert "3 days ago" in html


def test_sync_all_now_queues_every_connection(app: Flask, admin: Browser, three: dict[str, int]) -> None:
    huey = app.extensions["calsync"].jobs.huey
    before = huey.pending_count()
    resp = admin.post("/health/sync-all", {"show": "errors"}, page="/health")
    assert resp.headers["Location"] == "/health?show=errors"
    assert huey.pending_count() - before == 3
    queued = sorted(task.args[0] for task in huey.pending())
    assert queued == sorted(three.values())
    assert "3 calendars queued" in text_of(admin.get("/health"))


def test_sync_all_with_nothing_to_sync(admin: Browser) -> None:
    admin.post("/health/sync-all", page="/health")
    assert "no calendars to sync" in text_of(admin.get("/health"))
    assert "No staff calendars are connected yet" in text_of(admin.get("/health"))


def test_sync_now_from_the_health_page_comes_back_to_it(app: Flask, admin: Browser,
                                                        three: dict[str, int],
                                                        calendar_http: CalendarHTTPServer) -> None:
    calendar_http.add("/gone.ics", busy_ics(1))
    resp = admin.post(f"/connections/{three['Broken']}/sync", {"back": "health"}, page="/health")
    assert resp.headers["Location"] == f"/health#connection-{three['Broken']}"  # to its row
    html = text_of(admin.get("/health"))
    row = html.split(f'id="connection-{three["Broken"]}"', 1)[1].split("</tr>", 1)[0]
    assert "&#39;Broken&#39; synced: 1 busy time read." in row
    with app.extensions["calsync"].sessions() as session:
        # The success closed the alert episode.
        assert session.scalars(select(Alert.resolved_at)).all()[0] is not None


def test_sync_all_needs_the_csrf_token(app: Flask, admin: Browser, three: dict[str, int]) -> None:
    huey = app.extensions["calsync"].jobs.huey
    before = huey.pending_count()
    assert admin.client.post("/health/sync-all").status_code == 400
    assert huey.pending_count() == before


def test_errors_are_sentences_and_no_secret_is_shown(admin: Browser, app: Flask, three: dict[str, int],
                                                     api: Api) -> None:
    html = text_of(admin.get("/health"))
    with app.extensions["calsync"].sessions() as session:
        for conn in session.scalars(select(Connection)):
            assert conn.url_sealed not in html
    assert "Traceback" not in html and "Exception" not in html


def test_connections_of_all_staff_but_only_of_this_company(admin: Browser, three: dict[str, Any]) -> None:
    html = text_of(admin.get("/health"))
    assert len(re.findall(r'<span class="cell-title">', html)) == 3
