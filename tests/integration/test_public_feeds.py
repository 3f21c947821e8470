"""GET/HEAD /feeds/<token>.ics: HTTP rules of docs/protocol.md, privacy levels, tokens, and caches
that stay correct across processes."""

from __future__ import annotations

import gzip
import time
from datetime import timedelta

import pytest

from calsync.feeds.settings import Settings
from calsync.web import create_app
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, events, events_by_uid, iso, soon

CUSTOMER = {"name": "Chloé Lefèvre", "email": "chloe.secret@example.com", "phone": "+33 1 98 76 54"}


@pytest.fixture
def staff(api: Api) -> dict:
    return api.make_staff(working_hours=ALL_DAY)


@pytest.fixture
def booked(api: Api, staff: dict) -> dict:
    resp = api.book(
        staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1)), customer=CUSTOMER,
        service="Colour & style", location="Torstraße 1, Berlin", notes="Allergic to ammonia",
    )
    assert resp.status_code == 201
    return resp.get_json()


def test_always_text_calendar_whatever_the_accept_header(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    for accept in ("text/html", "application/json", "*/*", ""):
        resp = api.client.get(url, headers={"Accept": accept})
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/calendar; charset=utf-8"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "Location" not in resp.headers


def test_etag_and_last_modified_revalidate_with_304(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    # A date validates once the second of the last change is over (RFC 9110 §8.8.2.2); an
    # answer within it names a date that makes the next revalidation a full answer.
    time.sleep(1 - time.time() % 1)
    first = api.client.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    by_etag = api.client.get(url, headers={"If-None-Match": etag})
    assert by_etag.status_code == 304 and by_etag.data == b""
    assert by_etag.headers["ETag"] == etag
    by_date = api.client.get(url, headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3).
    mixed = api.client.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert mixed.status_code == 200 and mixed.data == first.data


def test_a_deletion_changes_both_validators(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    before = api.client.get(url)
    assert api.post(f"/appointments/{booked['id']}/cancel").status_code == 200
    after = api.client.get(url, headers={"If-None-Match": before.headers["ETag"],
                                         "If-Modified-Since": before.headers["Last-Modified"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    assert events(after.data) == []
    # A client revalidating by date alone also sees the deletion, even when it came in the same
    # second as the booking: then both answers may name that second as Last-Modified (it never
    # passes Date, RFC 9110 §8.8.2.1), and the date alone cannot tell them apart; the server
    # compares the exact change time (tests/unit/test_last_modified.py).
    by_date = api.client.get(url, headers={"If-Modified-Since": before.headers["Last-Modified"]})
    assert by_date.status_code == 200


def test_each_change_gives_a_new_etag(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    seen = {api.client.get(url).headers["ETag"]}
    api.patch(f"/appointments/{booked['id']}", {"start": iso(soon(6)), "end": iso(soon(6, 11))})
    seen.add(api.client.get(url).headers["ETag"])
    api.book(staff["id"], iso(soon(8)), iso(soon(8, 11)))
    seen.add(api.client.get(url).headers["ETag"])
    api.patch(f"/staff/{staff['id']}", {"name": "Zoë Renamed"})
    last = api.client.get(url)
    seen.add(last.headers["ETag"])
    assert len(seen) == 4
    assert "Zoë Renamed" in last.data.decode()


def test_gzip_when_asked_with_its_own_etag(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    plain = api.client.get(url)
    packed = api.client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == plain.data
    assert packed.headers["ETag"] != plain.headers["ETag"]
    assert "Accept-Encoding" in packed.headers["Vary"]
    revalidated = api.client.get(url, headers={"Accept-Encoding": "gzip",
                                               "If-None-Match": packed.headers["ETag"]})
    assert revalidated.status_code == 304


def test_head_has_headers_and_no_body(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    get = api.client.get(url)
    head = api.client.head(url)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["ETag"] == get.headers["ETag"]
    assert int(head.headers["Content-Length"]) == len(get.data)


@pytest.mark.parametrize("token", ["nope", "x" * 43, "x" * 5000, "..%2F..%2Fetc", "' OR 1=1 --"])
def test_unknown_tokens_get_a_bare_404(api: Api, token: str) -> None:
    resp = api.client.get(f"/feeds/{token}.ics")
    assert resp.status_code == 404
    assert b"token" not in resp.data.lower()


def test_revoked_token_is_404_and_others_keep_working(api: Api, booked: dict, staff: dict) -> None:
    keep = api.feed_url("staff", staff["id"])
    resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"], "privacy": "full"})
    revoked = "/feeds/" + resp.get_json()["url"].rsplit("/feeds/", 1)[1]
    assert api.client.get(revoked).status_code == 200
    assert api.delete(f"/feeds/{resp.get_json()['token_id']}").status_code == 204
    gone = api.client.get(revoked)
    assert gone.status_code == 404
    assert gone.data == api.client.get("/feeds/unknown.ics").data  # no hint that it once existed
    assert api.client.get(keep).status_code == 200


def test_privacy_levels_leak_nothing_they_should_not(api: Api, booked: dict, staff: dict) -> None:
    private = [CUSTOMER["name"], CUSTOMER["email"], CUSTOMER["phone"], "Torstraße", "ammonia"]
    full = api.client.get(api.feed_url("staff", staff["id"], "full")).data.decode()
    limited = api.client.get(api.feed_url("staff", staff["id"], "limited")).data.decode()
    busy = api.client.get(api.feed_url("staff", staff["id"], "busy")).data.decode()
    for needle in private:
        # Unfold before searching so a fold cannot hide a leak.
        assert needle in full.replace("\r\n ", "").replace("\\,", ",")
        assert needle not in limited.replace("\r\n ", "").replace("\\,", ",")
        assert needle not in busy.replace("\r\n ", "").replace("\\,", ",")
    assert "Colour & style" in limited
    assert "Colour & style" not in busy
    (event,) = events(busy.encode())
    assert str(event["SUMMARY"]) == "Busy"
    assert event.decoded("DTSTART")  # the time is still there: that is the point of busy


def test_group_and_company_feeds_name_the_staff_member(api: Api, staff: dict) -> None:
    other = api.make_staff(name="Łukasz Żółć", email="l@example.com", working_hours=ALL_DAY)
    outsider = api.make_staff(name="Outsider", email="o@example.com", working_hours=ALL_DAY)
    group = api.post("/groups", {"name": "Hair", "staff_ids": [staff["id"], other["id"]]}).get_json()
    uids = {}
    for who in (staff, other, outsider):
        uids[who["id"]] = api.book(who["id"], iso(soon(3)), iso(soon(3, 11))).get_json()["uid"]
    group_body = api.client.get(api.feed_url("group", group["id"], "limited")).data
    assert set(events_by_uid(group_body)) == {uids[staff["id"]], uids[other["id"]]}
    summaries = {str(e["SUMMARY"]) for e in events(group_body)}
    assert summaries == {"Haircut (Zoë Müller)", "Haircut (Łukasz Żółć)"}
    feeds = api.get("/feeds").get_json()["feeds"]
    company = next(f for f in feeds if f["scope"] == "company")
    company_body = api.client.get("/feeds/" + company["url"].rsplit("/feeds/", 1)[1]).data
    assert set(events_by_uid(company_body)) == set(uids.values())
    # Membership changes reach the group feed.
    api.patch(f"/groups/{group['id']}", {"staff_ids": [other["id"]]})
    group_body = api.client.get(api.feed_url("group", group["id"], "limited")).data
    assert set(events_by_uid(group_body)) == {uids[other["id"]]}


def test_last_used_time_is_recorded(api: Api, booked: dict, staff: dict) -> None:
    resp = api.post("/feeds", {"scope": "staff", "scope_id": staff["id"]}).get_json()
    assert resp["last_used_at"] is None
    api.client.get("/feeds/" + resp["url"].rsplit("/feeds/", 1)[1])
    listed = {f["token_id"]: f for f in api.get("/feeds").get_json()["feeds"]}
    assert listed[resp["token_id"]]["last_used_at"] is not None


def test_a_304_and_a_warm_get_never_render(api: Api, booked: dict, staff: dict, monkeypatch) -> None:
    from calsync.feeds.publishing import feed as publish

    url = api.feed_url("staff", staff["id"])
    first = api.client.get(url)
    calls: list[int] = []
    real = publish.render_feed
    monkeypatch.setattr(publish, "render_feed", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert api.client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert api.client.get(url).data == first.data
    assert calls == []


def test_a_change_re_renders_only_the_changed_appointment(api: Api, staff: dict, monkeypatch) -> None:
    from calsync.feeds.publishing import segments as publish

    booked = [api.book(staff["id"], iso(soon(d)), iso(soon(d, 11))).get_json() for d in range(1, 9)]
    url = api.feed_url("staff", staff["id"])
    api.client.get(url)
    rendered: list[str] = []
    real = publish.render_event
    monkeypatch.setattr(
        publish, "render_event", lambda appt, variant: rendered.append(appt.uid) or real(appt, variant)
    )
    api.patch(f"/appointments/{booked[0]['id']}", {"start": iso(soon(20)), "end": iso(soon(20, 11))})
    body = api.client.get(url).data
    assert rendered == [booked[0]["uid"]]
    assert len(events(body)) == 8


def test_caches_stay_correct_across_processes(settings: Settings, api: Api, booked: dict,
                                              staff: dict) -> None:
    """Two app instances on one database stand for two processes: a change made through one
    is served at once by the other, although the other had the old feed in its memory cache."""
    url = api.feed_url("staff", staff["id"])
    other = create_app(settings)
    other_client = other.test_client()
    before = other_client.get(url)
    assert before.status_code == 200
    api.patch(f"/appointments/{booked['id']}", {"start": iso(soon(9)), "end": iso(soon(9, 11))})
    after = other_client.get(url, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    (event,) = events(after.data)
    assert event["SEQUENCE"] == 1
    other.extensions["calsync"].engine.dispose()


def test_settings_change_reaches_every_feed(api: Api, booked: dict, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    api.post(f"/appointments/{booked['id']}/cancel")
    assert events(api.client.get(url).data) == []
    api.patch("/settings", {"show_cancelled": True})
    (event,) = events(api.client.get(url).data)
    assert event["STATUS"] == "CANCELLED"


def test_deleted_staff_feed_is_gone(api: Api, staff: dict) -> None:
    url = api.feed_url("staff", staff["id"])
    assert api.delete(f"/staff/{staff['id']}").status_code == 204
    assert api.client.get(url).status_code == 404


def test_a_feed_version_moves_only_with_its_own_scope(api: Api, staff: dict) -> None:
    """Changes outside a staff member's or group's scope leave its ETag alone; changes inside
    move it. (Pins the correlation of the version query's subqueries.)"""
    member = api.make_staff(name="Member", email="m@example.com", working_hours=ALL_DAY)
    outsider = api.make_staff(name="Outsider", email="o@example.com", working_hours=ALL_DAY)
    group = api.post("/groups", {"name": "G", "staff_ids": [member["id"]]}).get_json()
    api.post("/groups", {"name": "Other", "staff_ids": [outsider["id"]]})
    group_url = api.feed_url("group", group["id"])
    staff_url = api.feed_url("staff", member["id"])
    etags = lambda: (api.client.get(group_url).headers["ETag"],  # noqa: E731
                     api.client.get(staff_url).headers["ETag"])
    before = etags()
    assert api.book(outsider["id"], iso(soon(3)), iso(soon(3, 11))).status_code == 201
    assert api.book(staff["id"], iso(soon(4)), iso(soon(4, 11))).status_code == 201
    assert etags() == before
    assert api.book(member["id"], iso(soon(5)), iso(soon(5, 11))).status_code == 201
    after = etags()
    assert after[0] != before[0] and after[1] != before[1]


def test_rendered_pieces_are_stored_once_the_answer_is_sent(api: Api, booked: dict, staff: dict, app) -> None:
    """Issue 17: the new fragment and segment are written after the body is sent (the response's
    close), so the first GET after a change does not wait for two writes and a commit."""
    from sqlalchemy import func, select

    from calsync.models import FeedFragment, FeedSegment

    services = app.extensions["calsync"]

    def stored() -> tuple[int, int]:
        with services.sessions() as session:
            return (session.scalar(select(func.count()).select_from(FeedFragment)) or 0,
                    session.scalar(select(func.count()).select_from(FeedSegment)) or 0)

    response = api.client.get(api.feed_url("staff", staff["id"]))
    assert response.status_code == 200 and len(events(response.data)) == 1
    assert stored() == (0, 0)  # answered; the server has not closed the response yet
    response.close()
    assert stored() == (1, 1)


def test_a_booking_committed_while_a_segment_is_read_is_never_cached_under_the_old_version(
        app, api: Api, booked: dict, staff: dict, monkeypatch) -> None:
    """Each query reads what is committed when it runs: a booking committed between reading the
    staff member's revision and their appointments put newer bytes under the older revision's
    key, so two requests could join different bytes under one key, and the gzip piece of one
    with the body of the other failed the client's CRC check (found by the load test)."""
    from sqlalchemy import select

    from calsync.feeds.publishing import feed as publish
    from calsync.models import FeedSegment, Staff

    services = app.extensions["calsync"]
    url = api.feed_url("staff", staff["id"])
    with services.sessions() as session:
        revision = session.get(Staff, staff["id"]).feed_revision
    real = publish.build_segment
    late: list[dict] = []

    def booking_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not late:  # another request commits a booking while this one reads
            late.append(api.book(staff["id"], iso(soon(5)), iso(soon(5, 11))).get_json())
        return real(*args, **kwargs)

    monkeypatch.setattr(publish, "build_segment", booking_meanwhile)
    first = api.client.get(url, headers={"Accept-Encoding": "gzip"})
    monkeypatch.setattr(publish, "build_segment", real)
    assert late and late[0]["uid"]
    served = gzip.decompress(first.data)  # served all the same, as a valid gzip body
    assert set(events_by_uid(served)) == {booked["uid"], late[0]["uid"]}
    # ... but kept under no key of the revision it was read at: not in memory, not in the table.
    old = f":r{revision}"
    assert not [key for key in services.feed_cache.memory._items if key.endswith(old)]
    with services.sessions() as session:
        stored = session.scalars(select(FeedSegment.segment_key)
                                 .where(FeedSegment.staff_id == staff["id"])).all()
    assert not [key for key in stored if key.endswith(old)]
    for _ in range(2):  # the version after the booking: plain and gzip agree and hold both
        plain = api.client.get(url)
        packed = api.client.get(url, headers={"Accept-Encoding": "gzip"})
        assert gzip.decompress(packed.data) == plain.data
        assert set(events_by_uid(plain.data)) == {booked["uid"], late[0]["uid"]}
