"""The admin flag (who may use the web UI's admin pages) through the REST API, against a
real uvicorn and a real datastore (SQLite and PostgreSQL): shown on every user, set by
admin tokens only (PUT and PATCH on the user), and no user token can make itself (or
anyone) an admin: the authorisation matrix, as an attacker tries it."""

from __future__ import annotations

import httpx
import test_api
from test_api import PASSWORD, Api, assert_problem

api = test_api.api  # example.com with alice and bob, an admin token

ALICE = "/users/alice@example.com"
BOB = "/users/bob@example.com"
EVERYTHING = {"admin": True, "enabled": True, "quota": None}


def admin_flags(api: Api) -> dict[str, bool]:
    return {u.address: u.admin for u in api.store.list_users()}


def test_every_user_shows_the_flag(api: Api) -> None:
    api.store.set_admin("bob@example.com", True)
    listed = {u["address"]: u["admin"] for u in api.admin.get("/users").json()}
    assert listed == {"alice@example.com": False, "bob@example.com": True}
    assert api.admin.get(BOB).json()["admin"] is True
    made = api.admin.post("/users", json={"address": "cid@example.com", "password": PASSWORD})
    assert made.json()["admin"] is False
    with api.as_user("alice@example.com") as alice:
        assert alice.get(ALICE).json()["admin"] is False


def test_no_user_token_makes_anyone_an_admin(api: Api) -> None:
    """Alice's token, on herself and on Bob, with PATCH and PUT: 403 each time; without a
    token or with a forged one: 401. Nothing changes."""
    with api.as_user("alice@example.com") as alice:
        for path in (ALICE, BOB, "/users/ALICE@Example.com"):
            assert_problem(alice.patch(path, json={"admin": True}), 403, "needs an admin")
            assert_problem(alice.put(path, json=EVERYTHING), 403, "needs an admin")
        assert_problem(alice.patch(ALICE, json={"quota": "100G"}), 403)
        assert_problem(alice.patch(BOB, json={"enabled": False}), 403)
    for headers in ({}, {"Authorization": "Bearer mst_forged"}):
        with httpx.Client(base_url=api.url, headers=headers) as stranger:
            assert_problem(stranger.patch(ALICE, json={"admin": True}), 401)
            assert_problem(stranger.put(ALICE, json=EVERYTHING), 401)
    assert admin_flags(api) == {"alice@example.com": False, "bob@example.com": False}
    assert api.store.get_user("bob@example.com").enabled


def test_an_admin_token_sets_and_takes_the_flag(api: Api) -> None:
    made = api.admin.patch(ALICE, json={"admin": True})
    assert made.status_code == 200, made.text
    assert (made.json()["address"], made.json()["admin"]) == ("alice@example.com", True)
    assert api.store.get_user("alice@example.com").admin
    # the flag opens the web UI's admin pages, not the API: her user token stays a user's
    with api.as_user("alice@example.com") as alice:
        assert_problem(alice.get("/domains"), 403, "needs an admin")
        assert_problem(alice.patch(BOB, json={"admin": True}), 403)
    taken = api.admin.patch(ALICE, json={"admin": False})
    assert taken.json()["admin"] is False
    assert admin_flags(api) == {"alice@example.com": False, "bob@example.com": False}


def test_patch_changes_only_what_it_names(api: Api) -> None:
    api.admin.patch(BOB, json={"admin": True, "quota": "2G"})
    disabled = api.admin.patch(BOB, json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    user = disabled.json()
    assert (user["admin"], user["enabled"], user["quota_bytes"]) == (True, False, 2 * 1024**3)
    unlimited = api.admin.patch(BOB, json={"quota": None}).json()
    assert (unlimited["admin"], unlimited["quota_bytes"]) == (True, None)
    assert api.admin.patch(BOB, json={}).json() == unlimited


def test_put_sets_every_field_and_needs_them_all(api: Api) -> None:
    answer = api.admin.put(ALICE, json={"admin": True, "enabled": False, "quota": "1G"})
    assert answer.status_code == 200, answer.text
    user = answer.json()
    assert (user["admin"], user["enabled"], user["quota_bytes"]) == (True, False, 1024**3)
    body = assert_problem(api.admin.put(BOB, json={"admin": True}), 422, "enabled")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {"enabled", "quota"} <= {e["field"] for e in errors}
    assert not api.store.get_user("bob@example.com").admin


def test_bad_changes_are_refused_whole(api: Api) -> None:
    """A bad quota is 422 naming it, and the admin flag given with it is not set either;
    an unknown user 404; an unknown field 422."""
    bad = api.admin.patch(BOB, json={"admin": True, "quota": "lots"})
    assert_problem(bad, 422, "quota")
    assert not api.store.get_user("bob@example.com").admin
    assert_problem(api.admin.patch(BOB, json={"admin": "yes please"}), 422, "admin")
    assert_problem(api.admin.patch(BOB, json={"superuser": True}), 422, "superuser")
    assert_problem(api.admin.patch("/users/nobody@example.com", json={"admin": True}), 404)
    assert_problem(api.admin.put("/users/nobody@example.com", json=EVERYTHING), 404)
    assert admin_flags(api) == {"alice@example.com": False, "bob@example.com": False}
