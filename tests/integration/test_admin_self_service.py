"""The staff self-service page (/connect/) and its connect links (feeds.connect_links): one staff
member, no admin login, nothing of anyone else."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.onboarding.connect_links import (
    LINK_DAYS,
    ConnectLinkError,
    connect_sealer,
    connect_url,
    make_connect_token,
    read_connect_token,
    revoke_connect_links,
)
from calsync.feeds.settings import Settings
from calsync.models import Connection, FeedToken, Staff, utcnow
from tests.admin_helpers import ADMIN_PASSWORD, Browser, busy_ics, csrf_of, log_in, make_admin, text_of
from tests.conftest import Api
from tests.servers import CalDAVServer, CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def zoe(api: Api) -> dict[str, Any]:
    return api.make_staff()


@pytest.fixture
def ana(api: Api) -> dict[str, Any]:
    return api.make_staff(name="Ana Ortega", email="ana@example.com")


def link_for(app: Flask, staff_id: int, **kw: Any) -> str:
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        staff = session.get(Staff, staff_id)
        assert staff is not None
        token = make_connect_token(session, staff, connect_sealer(services.settings.secret_key), **kw)
    return connect_url("", token)


@pytest.fixture
def visitor(app: Flask, zoe: dict[str, Any]) -> Browser:
    """Zoë's browser after opening her connect link."""
    client = app.test_client()
    resp = client.get(link_for(app, zoe["id"]))
    assert resp.status_code == 302 and resp.headers["Location"] == "/connect/"
    return Browser(client)


def connections(app: Flask) -> list[Connection]:
    with app.extensions["calsync"].sessions() as session:
        return list(session.scalars(select(Connection).order_by(Connection.id)))


def add_ics(visitor: Browser, url: str, name: str = "Private") -> Any:
    return visitor.post("/connect/calendars/ics", {"url": url, "name": name}, page="/connect/")


# --- the links --------------------------------------------------------------------------------


def test_a_link_names_one_staff_member(app: Flask, zoe: dict[str, Any]) -> None:
    services = app.extensions["calsync"]
    sealer = connect_sealer(services.settings.secret_key)
    with services.sessions.begin() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        token = make_connect_token(session, staff, sealer)
        assert staff.connect_nonce and staff.connect_nonce not in token
        assert read_connect_token(session, sealer, token).id == zoe["id"]
        assert connect_url("https://cal.example.test", token) == f"https://cal.example.test/connect/{token}"
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", token)  # safe in a URL path and an email


def test_expired_tampered_foreign_and_revoked_links_fail(app: Flask, zoe: dict[str, Any]) -> None:
    services = app.extensions["calsync"]
    sealer = connect_sealer(services.settings.secret_key)
    with services.sessions.begin() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        old = make_connect_token(session, staff, sealer, now=utcnow() - timedelta(days=LINK_DAYS, minutes=1))
        with pytest.raises(ConnectLinkError, match="expired"):
            read_connect_token(session, sealer, old)
        assert read_connect_token(session, sealer, old, max_age=timedelta(days=LINK_DAYS + 1)).id == staff.id
        token = make_connect_token(session, staff, sealer)
        for bad in (token[:-3] + "abc", "", "x" * 2000, token.upper()):
            with pytest.raises(ConnectLinkError, match="not valid"):
                read_connect_token(session, sealer, bad)
        # Another key (another install, or the feed-token key) does not open it.
        with pytest.raises(ConnectLinkError):
            read_connect_token(session, connect_sealer("another-secret-key-" + "y" * 30), token)
        revoke_connect_links(session, staff)
        with pytest.raises(ConnectLinkError, match="not valid"):
            read_connect_token(session, sealer, token)
        fresh = make_connect_token(session, staff, sealer)
        assert read_connect_token(session, sealer, fresh).id == staff.id


def test_a_deleted_staff_members_link_fails(app: Flask, api: Api, zoe: dict[str, Any]) -> None:
    link = link_for(app, zoe["id"])
    api.delete(f"/staff/{zoe['id']}")
    resp = app.test_client().get(link)
    assert resp.status_code == 403 and "not valid" in text_of(resp)


# --- the page ---------------------------------------------------------------------------------


def test_opening_the_link_shows_her_page_without_the_token_in_the_address(
    app: Flask, visitor: Browser, zoe: dict[str, Any]
) -> None:
    resp = visitor.get("/connect/")
    html = text_of(resp)
    assert resp.status_code == 200 and "Hello, Zoë Müller" in html and "Test Salon" in html
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    # Her feed with the subscribe buttons.
    assert re.search(r'value="https://cal\.example\.test/feeds/[^"]+\.ics"', html)
    assert "webcal://cal.example.test/feeds/" in html and "calendar.google.com" in html
    assert "Outlook.com" in html and "Microsoft 365" in html
    # No admin navigation, no admin email.
    assert "Calendar sync</a>" not in html and "Log out" not in html


def test_she_sees_nothing_of_other_staff(app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any],
                                         ana: dict[str, Any], calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/ana.ics", busy_ics(1))
    api.post(f"/staff/{ana['id']}/connections", {"kind": "ics", "url": url, "name": "Ana's diary"})
    api.post("/groups", {"name": "Everyone", "staff_ids": [zoe["id"], ana["id"]]})
    html = text_of(visitor.get("/connect/"))
    assert "Ana" not in html and "Everyone" not in html and "ana.ics" not in html
    with app.extensions["calsync"].sessions() as session:
        others = session.scalars(select(FeedToken).where(
            (FeedToken.scope != "staff") | (FeedToken.scope_id != zoe["id"]))).all()
        mine = session.scalars(select(FeedToken).where(FeedToken.scope == "staff",
                                                       FeedToken.scope_id == zoe["id"])).all()
    services = app.extensions["calsync"]
    for row in others:
        assert services.sealer.open(row.token_encrypted) not in html
    for row in mine:
        assert services.sealer.open(row.token_encrypted) in html
        assert row.token_hash not in html and row.token_encrypted not in html


def test_her_link_does_not_open_the_admin_pages(app: Flask, visitor: Browser, zoe: dict[str, Any]) -> None:
    make_admin(app)
    for path in ("/", f"/staff/{zoe['id']}", "/health", "/appointments", "/connections/1/edit"):
        resp = visitor.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), path
    token = visitor.token("/connect/")
    for path in ("/tokens/1/revoke", "/settings", f"/staff/{zoe['id']}/connect-link", "/health/sync-all"):
        resp = visitor.client.post(path, data={"csrf_token": token})
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), path


def test_add_an_ics_calendar_and_sync_it(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                         calendar_http: CalendarHTTPServer) -> None:
    resp = add_ics(visitor, calendar_http.add("/mine.ics", busy_ics(2)))
    [conn] = connections(app)
    assert resp.headers["Location"] == f"/connect/#connection-{conn.id}"
    assert conn.staff_id == zoe["id"] and conn.roles == ["conflict"]
    html = unescape(text_of(visitor.get("/connect/")))  # read once when added, then synced
    assert "Calendar 'Private' added. 'Private' synced: 2 busy times read." in html
    assert "Not synced yet" not in html
    body = visitor.post_json(f"/connect/connections/{conn.id}/sync", page="/connect/").get_json()
    assert body["status"] == "ok" and body["busy_count"] == 2 and body["last_sync"] == "just now"
    resp = visitor.post(f"/connect/connections/{conn.id}/sync", page="/connect/")
    assert resp.headers["Location"] == f"/connect/#connection-{conn.id}"
    assert "nothing changed since the last sync (2 busy times)" in text_of(visitor.get("/connect/"))
    visitor.post(f"/connect/connections/{conn.id}/delete", page="/connect/")
    assert connections(app) == []


def test_caldav_with_discovery(app: Flask, visitor: Browser, zoe: dict[str, Any],
                               radicale: CalDAVServer) -> None:
    radicale.calendar("work", "Work Zoë")
    resp = visitor.post("/connect/calendars/discover", {
        "caldav_url": radicale.base_url + "/", "username": radicale.username,
        "password": radicale.password}, page="/connect/")
    html = text_of(resp)
    assert resp.status_code == 200 and "Work Zoë" in html and radicale.password not in html
    assert 'action="/connect/calendars/caldav"' in html and "Log out" not in html
    token = re.search(r'name="discovery" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    resp = visitor.post("/connect/calendars/caldav", {"discovery": token, "roles-0": ["conflict", "linked"]},
                        page="/connect/")
    assert resp.headers["Location"] == "/connect/#connections"
    [conn] = connections(app)
    assert (conn.staff_id, conn.name, conn.roles, conn.writable) == (zoe["id"], "Work Zoë",
                                                                     ["conflict", "linked"], True)
    page = text_of(visitor.get("/connect/"))
    assert radicale.password not in page and conn.password_sealed not in page


def test_a_discovery_for_someone_else_cannot_be_used(app: Flask, visitor: Browser, ana: dict[str, Any],
                                                     radicale: CalDAVServer) -> None:
    """The sealed discovery state names its staff member: an admin's look-up for Ana cannot be
    replayed on Zoë's page, nor hers on Ana's."""
    radicale.calendar("work")
    make_admin(app)
    admin_client = app.test_client()
    log_in(admin_client)
    admin = Browser(admin_client)
    html = text_of(admin.post(f"/staff/{ana['id']}/calendars/discover", {
        "caldav_url": radicale.base_url + "/", "username": radicale.username,
        "password": radicale.password}))
    token = re.search(r'name="discovery" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    resp = visitor.post("/connect/calendars/caldav", {"discovery": token, "roles-0": "conflict"},
                        page="/connect/")
    assert resp.status_code == 422 and "look the calendars up again" in text_of(resp)
    assert connections(app) == []


def test_other_staff_members_connections_are_out_of_reach(app: Flask, api: Api, visitor: Browser,
                                                          ana: dict[str, Any],
                                                          calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/ana.ics", busy_ics(1))
    conn_id = api.post(f"/staff/{ana['id']}/connections", {"kind": "ics", "url": url}).get_json()["id"]
    assert visitor.post_json(f"/connect/connections/{conn_id}/sync", page="/connect/").status_code == 404
    assert visitor.post(f"/connect/connections/{conn_id}/delete", page="/connect/").status_code == 404
    assert [c.id for c in connections(app)] == [conn_id]
    assert calendar_http.hits.get("/ana.ics") is None


def test_without_a_link_or_with_a_bad_one_the_page_refuses(app: Flask, zoe: dict[str, Any]) -> None:
    client = app.test_client()
    resp = client.get("/connect/")
    assert resp.status_code == 403 and "Open the link from your invitation email" in text_of(resp)
    resp = client.get("/connect/not-a-real-token")
    assert resp.status_code == 403 and "not valid" in text_of(resp)
    expired = link_for(app, zoe["id"], now=utcnow() - timedelta(days=LINK_DAYS + 1))
    resp = client.get(expired)
    assert resp.status_code == 403 and "expired" in text_of(resp) and "Zoë" not in text_of(resp)
    token = csrf_of(client.get("/login"))
    resp = client.post("/connect/calendars/ics", data={"csrf_token": token, "url": "http://x"})
    assert resp.status_code == 403


def test_the_session_cookie_keeps_no_link_token(app: Flask, zoe: dict[str, Any]) -> None:
    """Flask's session cookie is signed, not encrypted: whoever sees it reads it. It used to
    carry the connect token, which opens the page from anywhere for two weeks."""
    client = app.test_client()
    path = link_for(app, zoe["id"])
    token = path.rsplit("/", 1)[1]
    client.get(path)
    cookie = client.get_cookie("session")
    assert cookie is not None
    content = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    with app.extensions["calsync"].sessions() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None and staff.connect_nonce
        nonce = staff.connect_nonce
    assert token not in repr(content) and token not in cookie.value
    assert nonce not in repr(content)
    assert content["connect_link"]["s"] == zoe["id"]
    assert client.get("/connect/").status_code == 200
    # A forged claim (the cookie is signed, but a claim with a wrong digest must fail as well).
    with client.session_transaction() as sess:
        sess["connect_link"] = {**content["connect_link"], "n": "0" * 64}
    assert client.get("/connect/").status_code == 403


def test_an_open_session_ends_when_its_link_expires(app: Flask, zoe: dict[str, Any]) -> None:
    client = app.test_client()
    client.get(link_for(app, zoe["id"], now=utcnow() - timedelta(days=LINK_DAYS, minutes=-1)))
    assert client.get("/connect/").status_code == 200
    with client.session_transaction() as sess:
        sess["connect_link"] = {**sess["connect_link"], "t": sess["connect_link"]["t"] - 120}
    resp = client.get("/connect/")
    assert resp.status_code == 403 and "expired" in text_of(resp)


def test_revoking_ends_an_open_session(app: Flask, visitor: Browser, zoe: dict[str, Any]) -> None:
    assert visitor.get("/connect/").status_code == 200
    with app.extensions["calsync"].sessions.begin() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        revoke_connect_links(session, staff)
    resp = visitor.get("/connect/")
    assert resp.status_code == 403 and "not valid" in text_of(resp)
    assert visitor.get("/connect/").status_code == 403  # the session forgot the link


def test_her_link_and_an_admin_login_stay_apart(app: Flask, zoe: dict[str, Any]) -> None:
    """An admin who opens a staff link in the same browser stays an admin, and the staff page
    still shows only the staff member's own things."""
    make_admin(app)
    client = app.test_client()
    log_in(client)
    client.get(link_for(app, zoe["id"]))
    assert client.get("/").status_code == 200
    html = text_of(client.get("/connect/"))
    assert "Hello, Zoë Müller" in html and ADMIN_PASSWORD not in html


SELF_SERVICE_POSTS = ["/connect/calendars/ics", "/connect/calendars/discover", "/connect/calendars/caldav",
                      "/connect/connections/{c}/sync", "/connect/connections/{c}/delete"]


@pytest.mark.parametrize("path", SELF_SERVICE_POSTS)
def test_forms_without_csrf_token_are_refused(app: Flask, visitor: Browser, calendar_http: CalendarHTTPServer,
                                              path: str) -> None:
    add_ics(visitor, calendar_http.add("/mine.ics", busy_ics(1)))
    [conn] = connections(app)
    resp = visitor.client.post(path.format(c=conn.id), data={"url": "http://127.0.0.1:1/x.ics"})
    assert resp.status_code == 400
    # Read once when it was added, and not again by the refused form.
    assert [(c.id, c.last_attempt_at) for c in connections(app)] == [(conn.id, conn.last_attempt_at)]


def test_company_switches_apply_here_too(api: Api, visitor: Browser,
                                         calendar_http: CalendarHTTPServer) -> None:
    api.patch("/settings", {"ics_subscriptions": False, "caldav_connections": False})
    html = text_of(visitor.get("/connect/"))
    assert "Connecting calendars is switched off" in html
    resp = add_ics(visitor, calendar_http.add("/mine.ics", busy_ics(1)))
    assert resp.status_code == 422 and "switched off" in text_of(resp)
