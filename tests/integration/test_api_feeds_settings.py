"""JSON API: feed tokens (list, issue, revoke) and company-wide settings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import icalendar
import pytest

from calsync.feeds.company_settings import CompanySettings
from calsync.feeds.publishing.tokens import MAX_TOKENS_PER_FEED
from tests.clock import day_at
from tests.conftest import Api

BASE = "https://cal.example.test"  # conftest's base_url
ALWAYS = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
# Feed settings of issue 2; other settings (sync, alerts) may sit beside them.
FEED_DEFAULTS = {
    "feed_window_past_days": 60,
    "feed_window_future_days": 365,
    "feed_refresh_minutes": 60,
    "show_cancelled": False,
    "feed_color": None,
}
DEFAULT_SETTINGS = CompanySettings().model_dump(mode="json")


def error_fields(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.is_json and resp.get_json()["error"]
    return [e["field"] for e in resp.get_json()["errors"]]


def path_of(url: str) -> str:
    assert url.startswith(BASE + "/feeds/") and url.endswith(".ics"), url
    return url[len(BASE):]


def feeds(api: Api) -> list[dict[str, Any]]:
    resp = api.get("/feeds")
    assert resp.status_code == 200
    return resp.get_json()["feeds"]  # type: ignore[no-any-return]


def soon(days: int, hour: int = 10) -> datetime:
    """A moment `days` from today (UTC), inside any feed window that reaches that far."""
    return day_at(days, hour)


def book_soon(api: Api, staff_id: int, days: int = 7) -> dict[str, Any]:
    start = soon(days)
    resp = api.book(staff_id, start.isoformat(), (start + timedelta(minutes=30)).isoformat())
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def event_uids(body: bytes) -> dict[str, str]:
    """UID -> STATUS of every VEVENT in a feed."""
    cal = icalendar.Calendar.from_ical(body)
    return {str(e["UID"]): str(e.get("STATUS", "")) for e in cal.walk("VEVENT")}


# --- listing ---------------------------------------------------------------------------------


def test_a_fresh_company_has_no_feeds_until_it_has_staff(api: Api) -> None:
    # The company token is issued by `calsync init`/demo, or with the first staff member or
    # group created through the API (ensure_default_tokens), not on its own.
    assert feeds(api) == []


def test_every_staff_member_group_and_the_company_get_a_feed(api: Api, company_id: int) -> None:
    a = api.make_staff(name="A", email="a@example.com")["id"]
    b = api.make_staff(name="B", email="b@example.com")["id"]
    g = api.post("/groups", {"name": "Team", "staff_ids": [a, b]}).get_json()["id"]
    listed = feeds(api)
    assert sorted((f["scope"], f["scope_id"]) for f in listed) == sorted(
        [("company", company_id), ("staff", a), ("staff", b), ("group", g)]
    )
    for f in listed:
        assert f["privacy"] == "full"
        assert isinstance(f["token_id"], int)
        assert f["name"]
        assert f["webcal_url"] == "webcal://" + f["url"].removeprefix("https://")
        resp = api.client.get(path_of(f["url"]))
        assert resp.status_code == 200, f
        assert resp.content_type == "text/calendar; charset=utf-8"
    names = {(f["scope"], f["name"]) for f in listed}
    assert ("company", "Test Salon (full)") in names
    assert ("group", "Team (full)") in names
    # Creating more staff never issues a second default token for a scope that has one.
    api.make_staff(name="C", email="c@example.com")
    assert [f["scope"] for f in feeds(api)].count("company") == 1
    assert len(feeds(api)) == 5


# --- issue -----------------------------------------------------------------------------------


def test_issue_another_token(api: Api) -> None:
    staff = api.make_staff()
    resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "privacy": "limited",
                               "name": "Front desk tablet"})
    assert resp.status_code == 201
    feed = resp.get_json()
    assert feed["scope"] == "staff" and feed["scope_id"] == staff["id"]
    assert feed["privacy"] == "limited"
    assert feed["name"] == "Front desk tablet"
    assert feed["last_used_at"] is None

    url = feed["url"]
    token = path_of(url).removeprefix("/feeds/").removesuffix(".ics")
    assert len(token) >= 22  # at least 128 bits, URL-safe
    assert all(c.isalnum() or c in "-_" for c in token)
    assert feed["webcal_url"] == "webcal://cal.example.test/feeds/" + token + ".ics"
    google = urlsplit(feed["google_url"])
    assert (google.scheme, google.netloc, google.path) == ("https", "calendar.google.com", "/calendar/render")
    assert parse_qs(google.query)["cid"] == [feed["webcal_url"]]
    assert quote(feed["webcal_url"], safe="") in feed["google_url"]
    assert parse_qs(urlsplit(feed["outlook_url"]).query)["url"] == [url]
    assert parse_qs(urlsplit(feed["office365_url"]).query)["url"] == [url]

    served = api.client.get(path_of(url))
    assert served.status_code == 200
    assert served.content_type == "text/calendar; charset=utf-8"
    assert served.get_data().startswith(b"BEGIN:VCALENDAR\r\n")

    # Both the default token and the new one are listed; the new URL is shown again.
    mine = [f for f in feeds(api) if f["scope"] == "staff"]
    assert len(mine) == 2
    assert feed["token_id"] in {f["token_id"] for f in mine}
    again = next(f for f in mine if f["token_id"] == feed["token_id"])
    assert again["url"] == url
    assert again["last_used_at"] is not None  # it was just fetched


def test_tokens_per_feed_are_capped(api: Api) -> None:
    """300 tokens in 1.2 s used to be accepted: a feed now has at most MAX_TOKENS_PER_FEED."""
    staff = api.make_staff()
    for n in range(MAX_TOKENS_PER_FEED - 1):  # plus the default token
        resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "name": f"Device {n}"})
        assert resp.status_code == 201, resp.get_json()
    resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "name": "One too many"})
    assert error_fields(resp) == ["scope_id"] and "revoke one" in resp.get_json()["error"]
    # Revoking one makes room again.
    victim = next(f for f in feeds(api) if f["name"] == "Device 0")
    assert api.delete(f"/feeds/{victim['token_id']}").status_code == 204
    again = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "name": "Device 0"})
    assert again.status_code == 201


def test_token_names_are_unique_per_feed_even_in_parallel(api: Api, app: Any) -> None:
    """20 parallel creates with one name used to give 20 tokens named alike."""
    staff = api.make_staff()
    other = api.make_staff(name="Ana Ortega", email="ana@example.com")

    def create(_n: int) -> int:
        client = Api(app.test_client(), api.key)
        return int(client.post("/feeds", {"scope": "staff", "scope_id": staff["id"],
                                          "name": "Phone"}).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(create, range(20)))
    assert codes == [201] + [422] * 19
    phones = [f for f in feeds(api) if f["name"] == "Phone"]
    assert len(phones) == 1
    # Another feed may use the name; default names get a number instead of repeating.
    assert api.post("/feeds", {"scope": "staff", "scope_id": other["id"], "name": "Phone"}).status_code == 201
    second = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"]}).get_json()
    assert second["name"] == "Zoë Müller (full) 2"


def test_issue_tokens_for_group_and_company(api: Api, company_id: int) -> None:
    group = api.post("/groups", {"name": "Team"}).get_json()
    for scope, scope_id in (("group", group["id"]), ("company", company_id)):
        resp = api.post("/feeds", {"scope": scope, "scope_id": scope_id, "privacy": "busy"})
        assert resp.status_code == 201, resp.get_json()
        body = resp.get_json()
        assert (body["scope"], body["scope_id"], body["privacy"]) == (scope, scope_id, "busy")
        assert body["name"].endswith("(busy)")
        assert api.client.get(path_of(body["url"])).status_code == 200


def test_privacy_of_a_token_is_applied(api: Api) -> None:
    staff = api.make_staff(timezone="UTC", working_hours=ALWAYS)
    appt = book_soon(api, staff["id"])
    full = api.client.get(api.feed_url("staff", staff["id"], "full")).get_data()
    busy = api.client.get(api.feed_url("staff", staff["id"], "busy")).get_data()
    assert appt["uid"] in event_uids(full) and appt["uid"] in event_uids(busy)
    assert b"chloe@example.com" in full
    for secret in (b"chloe@example.com", b"+33 1 23", "Lefèvre".encode(), b"Haircut"):
        assert secret not in busy


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "staff", "scope_id": 1, "privacy": "secret"}, "privacy"),
        ({"scope": "staff", "scope_id": 1, "privacy": None}, "privacy"),
        ({"scope": "planet", "scope_id": 1}, "scope"),
        ({"scope": "staff"}, "scope_id"),
        ({"scope": "staff", "scope_id": "one"}, "scope_id"),
        ({"scope": "staff", "scope_id": 0}, "scope_id"),
        ({"scope": "staff", "scope_id": 10**30}, "scope_id"),
        ({"scope_id": 1}, "scope"),
        ({"scope": "staff", "scope_id": 1, "name": ""}, "name"),
        ({"scope": "staff", "scope_id": 1, "token": "mine"}, "token"),
    ],
)
def test_invalid_feed_requests_are_422(api: Api, body: dict[str, Any], field: str) -> None:
    api.make_staff()
    before = feeds(api)
    assert field in error_fields(api.post("/feeds", body))
    assert feeds(api) == before


def test_feed_for_a_missing_scope_is_404(api: Api, company_id: int) -> None:
    staff = api.make_staff()
    before = feeds(api)
    for body in (
        {"scope": "staff", "scope_id": staff["id"] + 100},
        {"scope": "group", "scope_id": 5},
        {"scope": "company", "scope_id": company_id + 1},
    ):
        resp = api.post("/feeds", body)
        assert resp.status_code == 404, body
        assert resp.is_json and resp.get_json()["error"]
    assert feeds(api) == before


def test_feeds_junk_never_500(api: Api) -> None:
    for body in (None, [], "staff", 1, {"scope": ["staff"], "scope_id": 1},
                 {"scope": "staff", "scope_id": [1]}, {"scope": "staff", "scope_id": 1.5},
                 {"scope": "staff", "scope_id": 1, "name": "n" * 100_000}):
        resp = api.post("/feeds", body)
        assert resp.status_code == (422 if isinstance(body, dict) else 400), (body, resp.get_data()[:200])
        assert resp.is_json


# --- revoke ----------------------------------------------------------------------------------


def test_revoke_a_token(api: Api) -> None:
    staff = api.make_staff()
    default = next(f for f in feeds(api) if f["scope"] == "staff")
    extra = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"]}).get_json()
    path = path_of(extra["url"])
    assert api.client.get(path).status_code == 200

    resp = api.delete(f"/feeds/{extra['token_id']}")
    assert resp.status_code == 204
    assert resp.get_data() == b""

    gone = api.client.get(path)
    unknown = api.client.get("/feeds/" + "A" * 43 + ".ics")
    assert gone.status_code == 404
    # No detail: a revoked token looks exactly like one that never existed.
    assert gone.get_data() == unknown.get_data()
    assert gone.content_type == unknown.content_type
    assert b"revok" not in gone.get_data().lower()
    assert api.client.head(path).status_code == 404

    # Rotation: the other token of the same feed keeps working, and only it is listed.
    assert api.client.get(path_of(default["url"])).status_code == 200
    assert extra["token_id"] not in {f["token_id"] for f in feeds(api)}
    assert default["token_id"] in {f["token_id"] for f in feeds(api)}

    again = api.delete(f"/feeds/{extra['token_id']}")
    assert again.status_code == 404
    assert again.is_json and again.get_json()["error"]


def test_revoke_unknown_token_is_404(api: Api) -> None:
    for token_id in (999, 2**63, 10**30):
        resp = api.delete(f"/feeds/{token_id}")
        assert resp.status_code == 404
        assert resp.is_json


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults(api: Api) -> None:
    resp = api.get("/settings")
    assert resp.status_code == 200
    assert resp.get_json() == DEFAULT_SETTINGS
    assert FEED_DEFAULTS.items() <= resp.get_json().items()


@pytest.mark.parametrize(
    "changes",
    [
        {"show_cancelled": True},
        {"feed_window_future_days": 30},
        {"feed_window_past_days": 0},
        {"feed_refresh_minutes": 5},
        {"feed_refresh_minutes": 10080},
        {"feed_color": "darkgreen"},
        {"feed_color": "teal"},
        {"show_cancelled": True, "feed_window_future_days": 3650, "feed_refresh_minutes": 15},
    ],
)
def test_patch_settings_persists(api: Api, changes: dict[str, Any]) -> None:
    resp = api.patch("/settings", changes)
    assert resp.status_code == 200
    assert resp.get_json() == DEFAULT_SETTINGS | changes
    assert api.get("/settings").get_json() == DEFAULT_SETTINGS | changes


def test_patch_settings_one_at_a_time_keeps_the_rest(api: Api) -> None:
    api.patch("/settings", {"show_cancelled": True})
    api.patch("/settings", {"feed_refresh_minutes": 30})
    api.patch("/settings", {"feed_color": "navy"})
    assert api.patch("/settings", {"feed_color": None}).status_code == 200  # nullable: cleared
    assert api.patch("/settings", {}).status_code == 200
    assert api.get("/settings").get_json() == DEFAULT_SETTINGS | {
        "show_cancelled": True, "feed_refresh_minutes": 30,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"feed_refresh_minutes": -1}, "feed_refresh_minutes"),
        ({"feed_refresh_minutes": 4}, "feed_refresh_minutes"),
        ({"feed_refresh_minutes": 10081}, "feed_refresh_minutes"),
        ({"feed_refresh_minutes": "hourly"}, "feed_refresh_minutes"),
        ({"feed_refresh_minutes": 30.5}, "feed_refresh_minutes"),
        ({"feed_refresh_minutes": None}, "feed_refresh_minutes"),
        ({"feed_window_future_days": -5}, "feed_window_future_days"),
        ({"feed_window_future_days": 0}, "feed_window_future_days"),
        ({"feed_window_future_days": 10**30}, "feed_window_future_days"),
        ({"feed_window_future_days": [30]}, "feed_window_future_days"),
        ({"feed_window_past_days": -1}, "feed_window_past_days"),
        ({"show_cancelled": "maybe"}, "show_cancelled"),
        ({"show_cancelled": None}, "show_cancelled"),
        ({"show_cancelled": {"on": True}}, "show_cancelled"),
        ({"feed_color": "#12345"}, "feed_color"),
        ({"feed_color": "#123456"}, "feed_color"),  # RFC 7986 COLOR is a CSS3 name only
        ({"feed_color": "red;COLOR=blue"}, "feed_color"),
        ({"feed_color": "red\r\nX-INJECTED:1"}, "feed_color"),
        ({"feed_colour": "red"}, "feed_colour"),
        ({"show_canceled": True}, "show_canceled"),
    ],
)
def test_invalid_settings_are_422_naming_the_field(api: Api, changes: dict[str, Any], field: str) -> None:
    assert error_fields(api.patch("/settings", changes)) == [field]
    assert api.get("/settings").get_json() == DEFAULT_SETTINGS


def test_a_partly_invalid_patch_changes_nothing(api: Api) -> None:
    resp = api.patch("/settings", {"show_cancelled": True, "feed_refresh_minutes": 1})
    assert error_fields(resp) == ["feed_refresh_minutes"]
    assert api.get("/settings").get_json() == DEFAULT_SETTINGS


def test_settings_junk_never_500(api: Api) -> None:
    for body in (None, [], [{"show_cancelled": True}], "on", 1, True):
        resp = api.patch("/settings", body)
        assert resp.status_code == 400, body  # none of them is a JSON object
        assert resp.is_json
    assert api.get("/settings").get_json() == DEFAULT_SETTINGS


def test_patching_settings_changes_the_feed(api: Api) -> None:
    staff = api.make_staff(timezone="UTC", working_hours=ALWAYS)
    path = api.feed_url("staff", staff["id"])
    first = api.client.get(path)
    etag = first.headers["ETag"]
    assert api.client.get(path, headers={"If-None-Match": etag}).status_code == 304

    assert api.patch("/settings", {"feed_refresh_minutes": 30}).status_code == 200
    second = api.client.get(path, headers={"If-None-Match": etag})
    assert second.status_code == 200
    assert second.headers["ETag"] != etag
    cal = icalendar.Calendar.from_ical(second.get_data())
    assert cal["REFRESH-INTERVAL"].dt == timedelta(minutes=30)

    # The new version is stable until the next change.
    third = api.client.get(path, headers={"If-None-Match": second.headers["ETag"]})
    assert third.status_code == 304


def test_show_cancelled(api: Api) -> None:
    staff = api.make_staff(timezone="UTC", working_hours=ALWAYS)
    path = api.feed_url("staff", staff["id"])
    appt = book_soon(api, staff["id"])
    assert event_uids(api.client.get(path).get_data()) == {appt["uid"]: "CONFIRMED"}

    api.post(f"/appointments/{appt['id']}/cancel")
    assert event_uids(api.client.get(path).get_data()) == {}

    assert api.patch("/settings", {"show_cancelled": True}).status_code == 200
    assert event_uids(api.client.get(path).get_data()) == {appt["uid"]: "CANCELLED"}


def test_feed_window_future_days(api: Api) -> None:
    staff = api.make_staff(timezone="UTC", working_hours=ALWAYS)
    path = api.feed_url("staff", staff["id"])
    appt = book_soon(api, staff["id"], days=20)
    assert appt["uid"] in event_uids(api.client.get(path).get_data())
    assert api.patch("/settings", {"feed_window_future_days": 10}).status_code == 200
    assert appt["uid"] not in event_uids(api.client.get(path).get_data())
    assert api.patch("/settings", {"feed_window_future_days": 30}).status_code == 200
    assert appt["uid"] in event_uids(api.client.get(path).get_data())
