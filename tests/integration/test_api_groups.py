"""JSON API: groups of staff — CRUD, membership, validation."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


def error_fields(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert resp.is_json and resp.get_json()["error"]
    return [e["field"] for e in resp.get_json()["errors"]]


def three_staff(api: Api) -> list[int]:
    return [api.make_staff(name=f"S{i}", email=f"s{i}@example.com")["id"] for i in range(3)]


def group_ids_of(api: Api, staff_id: int) -> list[int]:
    return api.get(f"/staff/{staff_id}").get_json()["group_ids"]  # type: ignore[no-any-return]


def test_create_group_with_members(api: Api) -> None:
    a, b, c = three_staff(api)
    resp = api.post("/groups", {"name": "  Hair & Beauty  ", "staff_ids": [c, a, c]})
    assert resp.status_code == 201
    group = resp.get_json()
    assert group["name"] == "Hair & Beauty"
    assert sorted(group["staff_ids"]) == [a, c]  # duplicates collapse
    assert group_ids_of(api, a) == [group["id"]]
    assert group_ids_of(api, b) == []
    assert group_ids_of(api, c) == [group["id"]]


def test_create_empty_group(api: Api) -> None:
    resp = api.post("/groups", {"name": "Nobody yet"})
    assert resp.status_code == 201
    assert resp.get_json()["staff_ids"] == []


def test_list_and_get_groups(api: Api) -> None:
    a, b, _ = three_staff(api)
    assert api.get("/groups").get_json() == {"groups": []}
    g1 = api.post("/groups", {"name": "One", "staff_ids": [a]}).get_json()
    g2 = api.post("/groups", {"name": "Two", "staff_ids": [a, b]}).get_json()
    assert api.get("/groups").get_json() == {"groups": [g1, g2]}
    assert api.get(f"/groups/{g2['id']}").get_json() == g2
    assert group_ids_of(api, a) == sorted([g1["id"], g2["id"]])


def test_patch_membership_is_reflected_everywhere(api: Api) -> None:
    a, b, c = three_staff(api)
    gid = api.post("/groups", {"name": "Team", "staff_ids": [a, b]}).get_json()["id"]

    resp = api.patch(f"/groups/{gid}", {"staff_ids": [b, c]})
    assert resp.status_code == 200
    assert sorted(resp.get_json()["staff_ids"]) == [b, c]
    assert resp.get_json()["name"] == "Team"  # untouched
    assert (group_ids_of(api, a), group_ids_of(api, b), group_ids_of(api, c)) == ([], [gid], [gid])

    resp = api.patch(f"/groups/{gid}", {"name": "Renamed"})
    assert resp.get_json() == {"id": gid, "name": "Renamed", "staff_ids": sorted([b, c])}

    resp = api.patch(f"/groups/{gid}", {"staff_ids": []})
    assert resp.get_json()["staff_ids"] == []
    assert group_ids_of(api, b) == [] and group_ids_of(api, c) == []
    assert api.get(f"/groups/{gid}").get_json() == {"id": gid, "name": "Renamed", "staff_ids": []}


def test_unknown_staff_in_staff_ids_is_404_and_changes_nothing(api: Api) -> None:
    a, b, _ = three_staff(api)
    resp = api.post("/groups", {"name": "G", "staff_ids": [a, 999]})
    assert resp.status_code == 404
    assert resp.is_json and "999" in resp.get_json()["error"]
    assert api.get("/groups").get_json() == {"groups": []}
    assert group_ids_of(api, a) == []

    group = api.post("/groups", {"name": "G", "staff_ids": [a]}).get_json()
    resp = api.patch(f"/groups/{group['id']}", {"name": "Changed", "staff_ids": [b, 12345]})
    assert resp.status_code == 404
    assert api.get(f"/groups/{group['id']}").get_json() == group


def test_deleting_a_member_removes_them_from_the_group(api: Api) -> None:
    a, b, _ = three_staff(api)
    gid = api.post("/groups", {"name": "G", "staff_ids": [a, b]}).get_json()["id"]
    assert api.delete(f"/staff/{a}").status_code == 204
    assert api.get(f"/groups/{gid}").get_json()["staff_ids"] == [b]


def test_delete_group_keeps_its_staff_and_revokes_its_feeds(api: Api) -> None:
    a, b, _ = three_staff(api)
    gid = api.post("/groups", {"name": "G", "staff_ids": [a, b]}).get_json()["id"]
    listed = [f for f in api.get("/feeds").get_json()["feeds"] if f["scope"] == "group"]
    assert [(f["scope_id"], f["privacy"]) for f in listed] == [(gid, "full")]
    url = "/feeds/" + listed[0]["url"].rsplit("/feeds/", 1)[1]
    assert api.client.get(url).status_code == 200

    resp = api.delete(f"/groups/{gid}")
    assert resp.status_code == 204
    assert resp.get_data() == b""
    assert api.get(f"/groups/{gid}").status_code == 404
    assert api.get("/groups").get_json() == {"groups": []}
    assert api.get(f"/staff/{a}").status_code == 200
    assert group_ids_of(api, a) == []
    assert api.client.get(url).status_code == 404
    assert all(f["scope"] != "group" for f in api.get("/feeds").get_json()["feeds"])
    assert api.delete(f"/groups/{gid}").status_code == 404


def test_unknown_group_is_404_json(api: Api) -> None:
    for gid in (1, 999, 2**63, 10**25):
        for resp in (
            api.get(f"/groups/{gid}"),
            api.patch(f"/groups/{gid}", {"name": "X"}),
            api.delete(f"/groups/{gid}"),
        ):
            assert resp.status_code == 404, gid
            assert resp.is_json and resp.get_json()["error"]


def test_invalid_group_input_is_422_naming_the_field(api: Api) -> None:
    (a, _, _) = three_staff(api)
    cases: list[tuple[Any, str]] = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "G", "staff_ids": "1,2"}, "staff_ids"),
        ({"name": "G", "staff_ids": None}, "staff_ids"),
        ({"name": "G", "staff_ids": ["abc"]}, "staff_ids"),
        ({"name": "G", "staff_ids": [[1]]}, "staff_ids"),
        ({"name": "G", "staff_ids": [0]}, "staff_ids"),
        ({"name": "G", "staff_ids": [10**30]}, "staff_ids"),
        ({"name": "G", "members": [a]}, "members"),
    ]
    for body, field in cases:
        fields = error_fields(api.post("/groups", body))
        assert fields and all(f.split(".")[0] == field for f in fields), (body, fields)
    assert api.get("/groups").get_json() == {"groups": []}

    group = api.post("/groups", {"name": "G", "staff_ids": [a]}).get_json()
    for body, field in cases[1:]:
        fields = error_fields(api.patch(f"/groups/{group['id']}", body))
        assert fields and all(f.split(".")[0] == field for f in fields), (body, fields)
    assert api.get(f"/groups/{group['id']}").get_json() == group


def test_group_junk_never_500(api: Api) -> None:
    group = api.post("/groups", {"name": "G"}).get_json()
    for body in (None, [], [{"name": "G"}], "G", 1, True, {"name": ["G"]}, {"name": {"x": 1}},
                 {"name": "G", "staff_ids": {"a": 1}}, {"name": "G", "staff_ids": [None]},
                 {"name": "G", "staff_ids": [1.5]}, {"name": "G" * 100_000}):
        for resp in (api.post("/groups", body), api.patch(f"/groups/{group['id']}", body)):
            assert resp.status_code == (422 if isinstance(body, dict) else 400), (body, resp.get_data()[:200])
            assert resp.is_json
    assert api.get("/groups").get_json() == {"groups": [group]}
