"""The calendar-sync page: feed links of staff, groups and the company (new, revoke, rotate) and
the company toggles rendered from CompanySettings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from pydantic import Field
from sqlalchemy import select

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.company_settings import CompanySettings
from calsync.feeds.publishing.tokens import issue_feed_token
from calsync.models import Company, FeedToken
from calsync.web.admin.settings_form import HELP
from tests.admin_helpers import Browser, text_of
from tests.conftest import Api


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()


def tokens_of(app: Flask, scope: str | None = None) -> list[FeedToken]:
    with app.extensions["calsync"].sessions() as session:
        query = select(FeedToken).order_by(FeedToken.id)
        if scope:
            query = query.where(FeedToken.scope == scope)
        return list(session.scalars(query))


def feed_paths(html: str) -> list[str]:
    return re.findall(r'value="https://cal\.example\.test(/feeds/[^"]+\.ics)"', html)


def path_of_token(html: str, token_id: int) -> str:
    found = re.search(rf'id="token-{token_id}".*?value="https://cal\.example\.test(/feeds/[^"]+\.ics)"',
                      html, re.S)
    assert found, token_id
    return found.group(1)


def test_the_page_shows_the_three_tables_with_links(admin: Browser, api: Api, staff: dict[str, Any]) -> None:
    api.post("/groups", {"name": "Colour team", "staff_ids": [staff["id"]]})
    resp = admin.get("/")
    html = text_of(resp)
    assert resp.status_code == 200
    for title in ("Staff members", "Groups of staff", "Company", "Colour team", "Zoë Müller"):
        assert title in html
    paths = feed_paths(html)
    assert len(paths) == 3  # one default link each: staff member, group, company
    for path in paths:
        assert api.client.get(path).status_code == 200
    # Subscribe buttons of every client (docs/protocol.md "Subscribe links").
    token = paths[0].removeprefix("/feeds/").removesuffix(".ics")
    assert f"webcal://cal.example.test/feeds/{token}.ics" in html
    assert "https://calendar.google.com/calendar/render?cid=webcal%3A%2F%2Fcal.example.test" in html
    assert "https://outlook.live.com/calendar/0/addfromweb?url=https%3A%2F%2Fcal.example.test" in html
    assert "https://outlook.office.com/calendar/0/addfromweb?url=https%3A%2F%2F" in html
    assert f'href="/staff/{staff["id"]}"' in html


def test_pages_with_feed_urls_send_no_referrer(admin: Browser, staff: dict[str, Any]) -> None:
    for path in ("/", f"/staff/{staff['id']}"):
        resp = admin.get(path)
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert '<meta name="referrer" content="no-referrer">' in text_of(resp)
        # External subscribe links open without a referrer either.
        assert 'target="_blank" rel="noreferrer noopener"' in text_of(resp)


def test_no_token_hash_or_ciphertext_is_rendered(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    html = text_of(admin.get("/")) + text_of(admin.get(f"/staff/{staff['id']}"))
    rows = tokens_of(app)
    assert rows
    for row in rows:
        assert row.token_hash not in html
        assert row.token_encrypted not in html
        assert row.token_encrypted[:40] not in html


def test_pages_have_no_inline_script_or_style(admin: Browser, staff: dict[str, Any]) -> None:
    """The CSP allows only scripts and styles from files; inline ones would silently not run."""
    for path in ("/", f"/staff/{staff['id']}", "/health", "/appointments", "/appointments/new"):
        html = text_of(admin.get(path))
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert "<style" not in html and " style=" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path


def test_new_links_default_to_limited_with_a_note_on_full(admin: Browser, staff: dict[str, Any]) -> None:
    html = text_of(admin.get("/"))
    form = html.split('action="/tokens"', 1)[1].split("</form>", 1)[0]
    assert re.findall(r'<option value="(\w+)" selected>', form) == ["limited"]
    assert "Full also shows customers’ names, email addresses, phone numbers and notes" in form
    assert ">Limited: service only</option>" in form  # capitalised and short: whole on a phone
    # A public base URL (https://cal.example.test in the tests): no warning about reachability.
    assert 'data-field="base-url-warning"' not in html


def test_a_form_without_privacy_makes_a_limited_link(app: Flask, admin: Browser,
                                                     staff: dict[str, Any]) -> None:
    assert admin.post("/tokens", {"scope": "staff", "scope_id": staff["id"]}).status_code == 302
    assert tokens_of(app, "staff")[-1].privacy == "limited"


def test_new_token_with_privacy_and_name(app: Flask, admin: Browser, api: Api, staff: dict[str, Any]) -> None:
    resp = admin.post("/tokens", {"scope": "staff", "scope_id": staff["id"], "privacy": "busy",
                                  "name": "Front desk"})
    assert resp.status_code == 302
    row = tokens_of(app, "staff")[-1]
    assert (row.name, row.privacy, row.scope_id) == ("Front desk", "busy", staff["id"])
    assert resp.headers["Location"] == f"/#token-{row.id}"
    html = text_of(admin.get("/"))
    assert "Front desk" in html and "created" in html
    assert len(feed_paths(html)) == 3


def test_new_token_refuses_bad_input(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    before = len(tokens_of(app))
    for form in ({"scope": "staff", "scope_id": staff["id"], "privacy": "everything"},
                 {"scope": "staff", "scope_id": 999, "privacy": "full"},
                 {"scope": "planet", "scope_id": 1, "privacy": "full"},
                 {"scope": "staff", "scope_id": "x", "privacy": "full"}):
        resp = admin.post("/tokens", form)
        assert resp.status_code == 302
        assert 'class="flash flash-error"' in text_of(admin.get("/")), form
    assert len(tokens_of(app)) == before


def test_revoke_cuts_the_link_off(app: Flask, admin: Browser, api: Api, staff: dict[str, Any]) -> None:
    row = tokens_of(app, "staff")[0]
    path = feed_paths(text_of(admin.get("/")))[0]
    assert api.client.get(path).status_code == 200
    assert admin.post(f"/tokens/{row.id}/revoke").status_code == 302
    assert api.client.get(path).status_code == 404
    html = text_of(admin.get("/"))
    assert path not in html and "revoked" in html
    # Twice is a sentence, not an error page.
    admin.post(f"/tokens/{row.id}/revoke")
    assert "There is no active feed token" in text_of(admin.get("/"))


def test_rotate_issues_the_same_kind_of_link_and_revokes_the_old(app: Flask, admin: Browser, api: Api,
                                                                 staff: dict[str, Any]) -> None:
    admin.post("/tokens", {"scope": "staff", "scope_id": staff["id"], "privacy": "limited", "name": "Team"})
    old = tokens_of(app, "staff")[-1]
    old_path = path_of_token(text_of(admin.get("/")), old.id)
    assert api.client.get(old_path).status_code == 200
    resp = admin.post(f"/tokens/{old.id}/rotate")
    rows = tokens_of(app, "staff")
    new = rows[-1]
    assert resp.headers["Location"] == f"/#token-{new.id}"
    assert (new.name, new.privacy, new.scope_id) == ("Team", "limited", staff["id"])
    assert next(r for r in rows if r.id == old.id).revoked_at is not None
    html = text_of(admin.get("/"))
    assert "replaced" in html
    assert api.client.get(old_path).status_code == 404
    new_path = path_of_token(html, new.id)
    assert new_path != old_path and api.client.get(new_path).status_code == 200
    assert old_path not in html


def test_another_companys_tokens_are_out_of_reach(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        get_or_create_company(session)
        other = Company(name="Other", timezone="UTC", settings={})
        session.add(other)
        session.flush()
        row, _ = issue_feed_token(session, other, services.sealer, scope="company", scope_id=other.id)
        other_id = row.id
    html = text_of(admin.get("/"))
    assert "Other" not in html
    for action in ("revoke", "rotate"):
        admin.post(f"/tokens/{other_id}/{action}")
    assert next(r for r in tokens_of(app) if r.id == other_id).revoked_at is None


POSTS = ["/tokens", "/tokens/1/revoke", "/tokens/1/rotate", "/settings"]


@pytest.mark.parametrize("path", POSTS)
def test_forms_without_csrf_token_are_refused(app: Flask, admin: Browser, staff: dict[str, Any],
                                              path: str) -> None:
    before = [(r.id, r.revoked_at) for r in tokens_of(app)]
    form = {"scope": "staff", "scope_id": staff["id"], "privacy": "full", "fields": "show_cancelled",
            "show_cancelled": "on"}
    resp = admin.client.post(path, data=form)
    assert resp.status_code == 400
    assert [(r.id, r.revoked_at) for r in tokens_of(app)] == before
    with app.extensions["calsync"].sessions() as session:
        company = session.scalars(select(Company)).first()
        assert company is not None and not (company.settings or {}).get("show_cancelled")


# --- settings ---------------------------------------------------------------------------------


def settings_of(app: Flask) -> CompanySettings:
    with app.extensions["calsync"].sessions() as session:
        company = session.scalars(select(Company)).first()
        assert company is not None
        return CompanySettings.model_validate(company.settings or {})


def settings_form(html: str) -> dict[str, Any]:
    """The settings form as a browser would submit it unchanged."""
    part = html.split('action="/settings"', 1)[1].split("</form>", 1)[0]
    form: dict[str, Any] = {"fields": re.findall(r'name="fields" value="([^"]+)"', part)}
    for name, checked in re.findall(r'type="checkbox" class="switch" role="switch" id="[^"]+" '
                                    r'name="([^"]+)" value="on" (checked)?', part):
        if checked:
            form[name] = "on"
    for name, value in re.findall(r'type="number" id="[^"]+" name="([^"]+)" value="([^"]*)"', part):
        form[name] = value
    for name, value in re.findall(r'type="text" id="[^"]+" name="([^"]+)" value="([^"]*)"', part):
        form[name] = value
    for name, options in re.findall(r'<select id="[^"]+" name="([^"]+)"[^>]*>(.*?)</select>', part, re.S):
        form[name] = re.search(r'value="([^"]*)" selected', options).group(1)  # type: ignore[union-attr]
    return form


def test_every_setting_is_on_the_page_with_its_description(admin: Browser) -> None:
    html = text_of(admin.get("/settings"))
    for name, field in CompanySettings.model_fields.items():
        assert f'name="fields" value="{name}"' in html, name
        assert f'id="set-{name}"' in html, name
        shown = HELP.get(name, field.description)  # plain words where the model names an RFC property
        assert shown and shown.replace("'", "&#39;") in html, name


def test_settings_speak_plainly(admin: Browser) -> None:
    """No RFC property names or raw option values on the page, units agree with their number,
    and an option that needs two-way sync is disabled while it is off."""
    html = text_of(admin.get("/settings"))
    settings_part = html[html.index('id="settings"'):]
    for jargon in ("REFRESH-INTERVAL", "X-PUBLISHED-TTL", "STATUS:CANCELLED", "RFC 7986", ">realtime<",
                   ">interval<", ">manual<", ">keep<", ">block<", ">cancel<", ">restore<"):
        assert jargon not in settings_part, jargon
    assert '<option value="block" >Stop bookings until it syncs again</option>' in settings_part
    assert re.search(r'name="sync_window_past_days" value="1".*?<span class="unit"[^>]*>day</span>',
                     settings_part, re.S)
    assert re.search(r'<select id="set-calendar_delete_action"[^>]*data-depends-on="set-bidirectional_sync" '
                     r'disabled>', settings_part)


def test_limits_come_from_the_model(admin: Browser) -> None:
    html = text_of(admin.get("/settings"))
    assert re.search(r'name="feed_refresh_minutes" value="60" required\s+min="5" max="10080"', html)
    assert re.search(r'<select id="set-stale_policy" name="stale_policy".*?<option value="keep" selected>',
                     html, re.S)


def test_submitting_the_form_unchanged_changes_nothing(app: Flask, admin: Browser) -> None:
    before = settings_of(app)
    form = settings_form(text_of(admin.get("/settings")))
    assert set(form["fields"]) == set(CompanySettings.model_fields)
    assert admin.post("/settings", form).status_code == 302
    assert settings_of(app) == before


def test_flip_a_toggle_and_change_numbers(app: Flask, admin: Browser) -> None:
    form = settings_form(text_of(admin.get("/settings")))
    form["show_cancelled"] = "on"
    form.pop("ics_subscriptions")  # an unticked checkbox is not sent
    form["feed_refresh_minutes"] = "120"
    form["default_sync_mode"] = "manual"
    form["feed_color"] = "MidnightBlue"
    resp = admin.post("/settings", form)
    assert resp.headers["Location"] == "/settings#settings-saved"
    saved = settings_of(app)
    assert saved.show_cancelled and not saved.ics_subscriptions
    changed = (saved.feed_refresh_minutes, saved.default_sync_mode, saved.feed_color)
    assert changed == (120, "manual", "midnightblue")
    html = text_of(admin.get("/settings"))
    assert "Settings saved" in html
    assert re.search(r'name="show_cancelled" value="on" checked', html)
    assert not re.search(r'name="ics_subscriptions" value="on" checked', html)
    form = settings_form(html)
    form["feed_color"] = ""  # optional: empty is none
    admin.post("/settings", form)
    assert settings_of(app).feed_color is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("feed_refresh_minutes", "1", "Feed refresh interval: Enter 5 or more."),
    ("feed_refresh_minutes", "often", "Feed refresh interval: Enter a number."),
    ("default_sync_mode", "sometimes", "Default sync mode: Choose one of the options in the list."),
    ("feed_color", "not a colour!", "Feed colour: Give the feed colour as a CSS3 colour name"),
    ("feed_color", "#112233", "Feed colour: Give the feed colour as a CSS3 colour name"),
])
def test_invalid_settings_say_what_to_fix_and_change_nothing(app: Flask, admin: Browser, field: str,
                                                            value: str, message: str) -> None:
    before = settings_of(app)
    form = settings_form(text_of(admin.get("/settings")))
    form["show_cancelled"] = "on"
    form[field] = value
    resp = admin.post("/settings", form)
    # Shown again at once with what was typed, the error beside the field; nothing saved.
    assert resp.status_code == 422
    html = text_of(resp)
    assert message in html
    if f'<select id="set-{field}"' not in html:  # a list can only show its own options
        assert f'name="{field}" value="{value}"' in html
    assert f'id="error-{field}"' in html and 'aria-invalid="true"' in html
    assert re.search(r'name="show_cancelled" value="on" checked', html)  # the other change is kept too
    assert settings_of(app) == before


def test_settings_not_on_the_submitted_page_are_kept(app: Flask, admin: Browser) -> None:
    """A checkbox of a setting the page did not show is not read as 'off'."""
    admin.post("/settings", {"fields": ["show_cancelled"], "show_cancelled": "on"})
    saved = settings_of(app)
    assert saved.show_cancelled and saved.ics_subscriptions and saved.caldav_connections


def test_a_new_setting_appears_by_itself(admin: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are rendered from the model: a field added there needs no template change."""

    class Extended(CompanySettings):
        reminder_minutes: int = Field(default=15, ge=0, le=600,
                                      description="Minutes before an appointment that staff are reminded.")
        weekend_mode: bool = Field(default=False, description="Open on weekends.")

    from calsync.web.admin import settings_form as settings_form_module

    monkeypatch.setattr(settings_form_module, "CompanySettings", Extended)
    html = text_of(admin.get("/settings"))
    assert 'id="set-reminder_minutes"' in html and "Minutes before an appointment" in html
    assert re.search(r'name="reminder_minutes" value="15" required\s+min="0" max="600"', html)
    assert ">Reminder</label>" in html and re.search(r'<span class="unit"[^>]*>minutes</span>', html)
    assert 'id="set-weekend_mode"' in html and "Open on weekends." in html
