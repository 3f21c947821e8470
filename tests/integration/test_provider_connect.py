""""Connect Google Calendar" and "Connect Outlook / Microsoft 365" (web.oauth,
feeds.calendars.provider_connect) over HTTP against the contract fakes: the consent round
trip with PKCE and a single-use state bound to the staff member, the calendar pick with the
roles of CalDAV, the refusals, and "not set up" without a client."""

from __future__ import annotations

import html
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from calsync.feeds.settings import Settings
from calsync.models import OAuthStateRecord
from tests.admin_helpers import (
    Browser,
    admin,  # noqa: F401 - fixture
)
from tests.admin_helpers import text_of as raw_text
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph
from tests.provider_helpers import (
    connect,
    connected,
    consent,
    self_service_browser,
    start,
    with_google,
    with_microsoft,
)


def text_of(resp: Any) -> str:
    return html.unescape(raw_text(resp))


@pytest.fixture
def settings(settings: Settings, google: ServedFake, graph: ServedGraph) -> Settings:
    return with_microsoft(with_google(settings, google), graph)


@pytest.fixture
def zoe(api: Api) -> dict[str, Any]:
    return api.make_staff()


@pytest.fixture
def ana(api: Api) -> dict[str, Any]:
    return api.make_staff(name="Ana Ortega", email="ana@example.com")


@pytest.fixture
def visitor(app: Flask, zoe: dict[str, Any]) -> Browser:
    return self_service_browser(app, zoe["id"])


def test_the_page_offers_both_providers(visitor: Browser) -> None:
    html = text_of(visitor.get("/connect/"))
    assert "Connect Google Calendar" in html and "Connect Outlook / Microsoft 365" in html
    assert "not set up" not in html


def test_connect_google_from_the_self_service_page(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                                   google: ServedFake) -> None:
    google.fake.add_calendar("team@group.calendar.google.com", "Team", access_role="reader")
    started = start(visitor, "google")
    consent_url = started.headers["Location"]
    # PKCE S256, offline access with a consent prompt, the least scopes, the fixed redirect URI.
    for part in ("code_challenge_method=S256", "access_type=offline", "prompt=consent",
                 "calendar.events",
                 "redirect_uri=https%3A%2F%2Fcal.example.test%2Foauth%2Fgoogle%2Fcallback"):
        assert part in consent_url
    # Not the full calendar scope.
    assert "auth%2Fcalendar+" not in consent_url and "auth%2Fcalendar&" not in consent_url
    pick = visitor.get(consent(started))
    html = text_of(pick)
    assert pick.status_code == 200 and "Zoe" in html and "Team" in html and "read-only" in html
    resp = connect(visitor, "google", pick, staff_id=zoe["id"], conflict=(0, 1), linked=0)
    assert resp.status_code == 303 and resp.headers["Location"] == "/connect/#connections"
    made = connected(app, zoe["id"])
    assert [(c.kind, c.name, c.roles, c.remote_calendar_id, c.writable) for c in made] == [
        ("google", "Zoe", ["conflict", "linked"], "primary", True),
        ("google", "Team", ["conflict"], "team@group.calendar.google.com", False)]
    # The tokens are sealed with the credentials key, never stored readable.
    with app.extensions["calsync"].engine.connect() as db:
        stored = db.execute(text("SELECT tokens_sealed FROM connection")).scalars().all()
    assert all(t and "ya29." not in t and "1//" not in t for t in stored)
    assert "Connect Google Calendar" in text_of(visitor.get("/connect/"))
    page = text_of(visitor.get("/connect/"))
    assert "Team" in page and "Google" in page


PROVIDERS = pytest.mark.parametrize("kind", ["google", "microsoft"])


@PROVIDERS
def test_a_callback_is_accepted_once(app: Flask, visitor: Browser, kind: str) -> None:
    callback = consent(start(visitor, kind))
    assert callback.startswith(f"/oauth/{kind}/callback?")
    assert visitor.get(callback).status_code == 200
    again = visitor.get(callback)
    assert again.status_code == 400 and "already used" in text_of(again)


@PROVIDERS
def test_an_expired_state_is_refused(app: Flask, visitor: Browser, zoe: dict[str, Any], kind: str) -> None:
    callback = consent(start(visitor, kind))
    app.extensions["calsync"].clock = lambda: time.time() + 11 * 60
    resp = visitor.get(callback)
    assert resp.status_code == 400 and "longer than ten minutes" in text_of(resp)
    assert connected(app, zoe["id"]) == []


@PROVIDERS
def test_another_persons_state_is_refused(app: Flask, visitor: Browser, ana: dict[str, Any],
                                          kind: str) -> None:
    callback = consent(start(visitor, kind))  # Zoë's consent
    anas_browser = self_service_browser(app, ana["id"])
    resp = anas_browser.get(callback)
    assert resp.status_code == 400 and "another person" in text_of(resp)
    assert connected(app, ana["id"]) == []
    # Nor without any page open: the callback alone connects nothing.
    stranger = app.test_client().get(callback)
    assert stranger.status_code == 403 and "start" in text_of(stranger)


def test_a_code_the_provider_refuses_is_a_sentence(app: Flask, visitor: Browser, google: ServedFake) -> None:
    callback = consent(start(visitor, "google"))
    google.fake.codes.clear()  # the code expired at Google before it was exchanged
    resp = visitor.get(callback)
    assert resp.status_code == 502 and "did not accept the sign-in" in text_of(resp)


def test_a_forged_or_missing_state_is_a_page_not_an_error(visitor: Browser) -> None:
    for query in ("?code=x&state=forged", "?code=x", ""):
        resp = visitor.get("/oauth/google/callback" + query)
        assert resp.status_code == 400 and "not issued by this calsync" in text_of(resp)


def test_saying_no_on_the_consent_screen_connects_nothing(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                                          google: ServedFake) -> None:
    google.fake.consent_screen = True
    resp = visitor.get(consent(start(visitor, "google"), decision="cancel"))
    assert resp.status_code == 200 and "Nothing was connected" in text_of(resp)
    assert connected(app, zoe["id"]) == []


def test_a_read_only_calendar_cannot_be_linked(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                               google: ServedFake) -> None:
    google.fake.add_calendar("team@group.calendar.google.com", "Team", access_role="reader")
    pick = visitor.get(consent(start(visitor, "google")))
    for linked, additional in ((1, ()), (None, (1,))):
        resp = connect(visitor, "google", pick, staff_id=zoe["id"], conflict=(), linked=linked,
                       additional=additional)
        assert resp.status_code == 422
        assert "'Team' is shared with you read-only" in text_of(resp)
    assert connected(app, zoe["id"]) == []
    nothing = connect(visitor, "google", pick, staff_id=zoe["id"], conflict=())
    assert nothing.status_code == 422 and "Choose at least one calendar" in text_of(nothing)


def test_connect_outlook_lists_can_edit_and_the_account(app: Flask, visitor: Browser,
                                                        zoe: dict[str, Any]) -> None:
    started = start(visitor, "microsoft")
    assert "code_challenge_method=S256" in started.headers["Location"]
    assert "offline_access" in started.headers["Location"]
    pick = visitor.get(consent(started))
    html = text_of(pick)
    assert "zoe@contoso.example" in html and "Team holidays" in html
    refused = connect(visitor, "microsoft", pick, staff_id=zoe["id"], conflict=(), linked=1)
    assert refused.status_code == 422 and "'Team holidays' is shared with you read-only" in text_of(refused)
    resp = connect(visitor, "microsoft", pick, staff_id=zoe["id"], conflict=(0, 1), linked=0)
    assert resp.status_code == 303
    made = connected(app, zoe["id"])
    assert [(c.kind, c.account_email, c.roles, c.access_role) for c in made] == [
        ("microsoft", "zoe@contoso.example", ["conflict", "linked"], "writer"),
        ("microsoft", "zoe@contoso.example", ["conflict"], "reader")]


def test_the_admin_connects_for_a_staff_member(app: Flask, admin: Browser,  # noqa: F811
                                               zoe: dict[str, Any], google: ServedFake) -> None:
    admin_browser = admin
    page = f"/staff/{zoe['id']}"
    assert "Connect Google Calendar" in text_of(admin_browser.get(page))
    started = start(admin_browser, "google", purpose="admin", staff_id=zoe["id"])
    pick = admin_browser.get(consent(started))
    resp = connect(admin_browser, "google", pick, staff_id=zoe["id"], purpose="admin", page=page)
    assert resp.status_code == 303 and resp.headers["Location"] == f"/staff/{zoe['id']}#connections"
    [conn] = connected(app, zoe["id"])
    assert conn.kind == "google"
    # The connection's own pages work for the new kind: the admin's edit page, the API.
    assert admin_browser.get(f"/connections/{conn.id}/edit").status_code == 200
    changed = admin_browser.post(f"/connections/{conn.id}/edit", {"name": "Work", "roles": ["conflict"],
                                 "sync_mode": "interval", "interval_minutes": "15", "all_day": "busy"},
                                 page=f"/connections/{conn.id}/edit")
    assert changed.status_code == 302, text_of(changed)
    assert connected(app, zoe["id"])[0].roles == ["conflict"]
    removed = admin_browser.post(f"/connections/{conn.id}/delete", {}, page=page)
    assert removed.status_code == 302 and removed.headers["Location"] == f"/staff/{zoe['id']}#connections"
    assert connected(app, zoe["id"]) == []
    assert not any(google.fake.refresh_tokens.values())  # revoked at Google
    with app.extensions["calsync"].sessions() as s:
        rows = s.query(OAuthStateRecord).all()
        assert [(r.purpose, r.staff_id, r.used_at is not None) for r in rows] == [("admin", zoe["id"], True)]


def test_without_a_client_the_page_says_not_set_up(app: Flask, settings: Settings) -> None:
    from calsync.web import create_app

    bare = create_app(settings.model_copy(update={"google_client_id": None, "google_client_secret": None}),
                      migrate=False)
    bare.config["TESTING"] = True
    with bare.extensions["calsync"].sessions.begin() as s:
        from calsync.feeds.accounts.admins import get_or_create_company
        from calsync.feeds.scheduling.directory import create_staff

        company = get_or_create_company(s, "Salon", "UTC")
        staff_id = create_staff(s, company, name="Bo", email="bo@example.com").id
    browser = self_service_browser(bare, staff_id)
    html = text_of(browser.get("/connect/"))
    assert "Google Calendar: not set up." in html and "CALSYNC_GOOGLE_CLIENT_ID" in html
    assert "Connect Google Calendar" not in html and "Connect Outlook / Microsoft 365" in html
    refused = start(browser, "google")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/connect/")
    bare.extensions["calsync"].engine.dispose()
