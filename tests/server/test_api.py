"""The REST API against a real uvicorn and a real datastore (SQLite and PostgreSQL), spoken
to over HTTP with httpx: authentication, the authorisation matrix, problem details, and
every resource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_harness import client, serving

from mailstack.api.limits import MAX_BODY_BYTES
from mailstack.api.openapi import document
from mailstack.dkim.keys import dns_record_value, generate_private_key, key_path
from mailstack.sieve import check_script
from mailstack.store import MailStore

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another good passphrase"
VALID_SIEVE = 'require "fileinto";\nif header :contains "subject" "invoice" { fileinto "Bills"; }\n'
INVALID_SIEVE = "frobnicate;\n"
PROBLEM = "application/problem+json"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Api:
    url: str
    store: MailStore
    keys: Path
    admin: httpx.Client

    def as_user(self, address: str) -> httpx.Client:
        _, secret = self.store.create_token(address.partition("@")[0], address)
        return client(self.url, secret)


@pytest.fixture
def api(store: MailStore, tmp_path: Path) -> Iterator[Api]:
    """example.com with alice and bob; an admin token; the API served over `store`."""
    store.add_domain("example.com")
    store.add_user("alice@example.com", PASSWORD)
    store.add_user("bob@example.com", PASSWORD)
    _, secret = store.create_token("admin")
    keys = tmp_path / "keys"
    keys.mkdir()
    with serving(store.engine, keys) as url, client(url, secret) as admin:
        yield Api(url, store, keys, admin)


def assert_problem(response: httpx.Response, status: int, fragment: str = "") -> dict[str, object]:
    """An RFC 9457 problem: the status, the media type, and a detail saying what is wrong."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert isinstance(body, dict)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert fragment in body["detail"]
    return body


# -- authentication -----------------------------------------------------------------------------


def test_no_token_bad_token_and_revoked_token_are_401(api: Api) -> None:
    with client(api.url) as anonymous:
        refused = anonymous.get("/domains")
    assert_problem(refused, 401, "bearer token")
    assert refused.headers["www-authenticate"] == 'Bearer realm="mailstack"'
    for header in ("Bearer mst_not-a-real-token", "Basic YWRtaW46YWRtaW4=", "Bearer"):
        with httpx.Client(base_url=api.url, headers={"Authorization": header}) as other:
            answer = other.get("/users")
        assert_problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith('Bearer realm="mailstack"')
    assert api.admin.get("/me").json() == {"token": "admin", "user": None, "admin": True}
    api.store.revoke_token("admin")
    assert_problem(api.admin.get("/domains"), 401, "unknown or revoked")


def test_the_database_holds_no_plain_token(api: Api) -> None:
    """Whoever reads the datastore (a backup, a leaked file) cannot use what is stored."""
    _, secret = api.store.create_token("ci")
    if api.store.engine.url.get_backend_name() == "sqlite":
        database = Path(str(api.store.engine.url.database))
        stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert secret.encode() not in stored
    with api.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM api_tokens").all()
    assert not any(secret in str(cell) for row in rows for cell in row)
    with client(api.url, secret) as ci:
        assert ci.get("/me").json()["token"] == "ci"


# -- admin: domains and users -------------------------------------------------------------------


def test_admin_adds_a_domain_and_a_user_who_can_log_in(api: Api) -> None:
    created = api.admin.post("/domains", json={"name": "Bücher.Example"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "xn--bcher-kva.example"
    user = api.admin.post(
        "/users",
        json={"address": "carol@bücher.example", "password": PASSWORD, "quota": "2G"},
    )
    assert user.status_code == 201, user.text
    assert user.json()["address"] == "carol@xn--bcher-kva.example"
    assert user.json()["quota_bytes"] == 2 * 1024**3
    assert "password" not in user.text
    assert api.store.verify_password("carol@xn--bcher-kva.example", PASSWORD)
    listed = api.admin.get("/domains").json()
    assert [(d["name"], d["users"]) for d in listed] == [
        ("example.com", 2),
        ("xn--bcher-kva.example", 1),
    ]
    users = api.admin.get("/users", params={"domain": "bücher.example"}).json()
    assert [u["address"] for u in users] == ["carol@xn--bcher-kva.example"]
    assert api.admin.get("/users/Carol@xn--bcher-kva.example").json()["enabled"] is True


def test_duplicates_are_409(api: Api) -> None:
    assert_problem(api.admin.post("/domains", json={"name": "EXAMPLE.com"}), 409, "already")
    answer = api.admin.post("/users", json={"address": "alice@example.com", "password": PASSWORD})
    assert_problem(answer, 409, "user alice@example.com already exists")
    api.admin.post("/aliases", json={"source": "info@example.com", "targets": ["bob@example.com"]})
    again = api.admin.post(
        "/aliases", json={"source": "info@example.com", "targets": ["bob@example.com"]}
    )
    assert_problem(again, 409, "already has every target")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/users", {"address": "not-an-address", "password": PASSWORD}, "address"),
        ("/users", {"address": "dan@example.com", "password": "short"}, "password"),
        ("/users", {"address": "dan@example.com", "password": PASSWORD, "quota": "lots"}, "quota"),
        ("/users", {"address": "dan@example.com"}, "password"),
        ("/users", {"address": "dan@example.com", "password": PASSWORD, "quota": True}, "quota"),
        ("/users", {"address": "dan@example.com", "password": PASSWORD, "quota": [1]}, "quota"),
        ("/domains", {"name": "bad_domain!"}, "name"),
        ("/domains", {"name": "example.com", "cascade": True}, "cascade"),
        ("/aliases", {"source": "x@example.com", "targets": ["ok@example.org", "no"]}, "targets"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    api: Api, path: str, body: dict[str, object], field: str
) -> None:
    problem = assert_problem(api.admin.post(path, json=body), 422)
    assert problem["field"] == field
    assert isinstance(problem["errors"], list)
    assert problem["errors"][0]["field"] == field


def test_malformed_json_is_a_problem_too(api: Api) -> None:
    answer = api.admin.post(
        "/domains", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(answer, 422)


def test_huge_bodies_are_refused_unread(api: Api) -> None:
    """Before any token is looked at: a body is read (and held) only when it is small."""
    huge = b'{"name": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    with client(api.url) as anonymous:
        assert_problem(anonymous.post("/domains", content=huge), 413, "larger than")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts as it streams
        yield b'{"content": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"#" * 65536
        yield b'"}'

    streamed = api.admin.put(
        "/users/alice@example.com/sieve/big",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert_problem(streamed, 413, "larger than")
    assert api.store.list_scripts("alice@example.com") == []


def test_unknown_things_are_404(api: Api) -> None:
    assert_problem(api.admin.get("/users/nobody@example.com"), 404, "does not exist")
    assert_problem(api.admin.delete("/domains/nowhere.example"), 404, "not hosted")
    assert_problem(api.admin.delete("/aliases/none@example.com"), 404, "does not exist")
    assert_problem(api.admin.get("/users/alice@example.com/sieve/none"), 404, "does not exist")
    assert_problem(api.admin.get("/no/such/route"), 404)


def test_domain_in_use_needs_cascade(api: Api) -> None:
    assert_problem(api.admin.delete("/domains/example.com"), 409, "cascade")
    assert api.admin.delete("/domains/example.com", params={"cascade": "true"}).status_code == 204
    assert api.admin.get("/domains").json() == []
    assert api.store.list_users() == []


def test_admin_sets_a_password_and_removes_a_user(api: Api) -> None:
    answer = api.admin.put("/users/bob@example.com/password", json={"password": NEW_PASSWORD})
    assert answer.status_code == 204, answer.text
    assert api.store.verify_password("bob@example.com", NEW_PASSWORD)
    assert not api.store.verify_password("bob@example.com", PASSWORD)
    with api.as_user("bob@example.com") as bob:
        assert api.admin.delete("/users/bob@example.com").status_code == 204
        assert_problem(bob.get("/me"), 401)  # the user's tokens go with the user
    assert [u["address"] for u in api.admin.get("/users").json()] == ["alice@example.com"]


# -- user tokens --------------------------------------------------------------------------------


def test_user_token_reaches_only_its_own_data(api: Api) -> None:
    """Alice's token: her password and scripts yes; Bob's scripts and admin work 403."""
    api.store.put_script("bob@example.com", "private", VALID_SIEVE)
    with api.as_user("alice@example.com") as alice:
        assert alice.get("/me").json() == {
            "token": "alice",
            "user": "alice@example.com",
            "admin": False,
        }
        assert_problem(alice.get("/users/bob@example.com/sieve"), 403, "alice@example.com only")
        assert_problem(alice.get("/users/bob@example.com/sieve/private"), 403)
        assert_problem(
            alice.put("/users/bob@example.com/sieve/x", json={"content": VALID_SIEVE}), 403
        )
        assert_problem(alice.delete("/users/bob@example.com/sieve/private"), 403)
        assert_problem(
            alice.put("/users/bob@example.com/password", json={"password": NEW_PASSWORD}), 403
        )
        assert_problem(alice.get("/users/bob@example.com"), 403)
        assert_problem(alice.get("/domains"), 403, "needs an admin")
        assert_problem(alice.post("/domains", json={"name": "evil.example"}), 403)
        assert_problem(
            alice.post("/users", json={"address": "eve@example.com", "password": PASSWORD}), 403
        )
        assert_problem(alice.delete("/users/bob@example.com"), 403)
        assert_problem(alice.get("/domains/example.com/dkim"), 403)
        assert [u["address"] for u in alice.get("/users").json()] == ["alice@example.com"]
        assert alice.get("/users", params={"domain": "EXAMPLE.com"}).json()[0]["domain"] == (
            "example.com"
        )
        assert alice.get("/users", params={"domain": "example.org"}).json() == []
        assert alice.get("/users/ALICE@example.com").json()["address"] == "alice@example.com"
        changed = alice.put("/users/alice@example.com/password", json={"password": NEW_PASSWORD})
        assert changed.status_code == 204, changed.text
    assert api.store.verify_password("alice@example.com", NEW_PASSWORD)
    assert api.store.verify_password("bob@example.com", PASSWORD)
    assert [s.name for s in api.store.list_scripts("bob@example.com")] == ["private"]


def test_disabled_user_token_is_refused(api: Api) -> None:
    with api.as_user("alice@example.com") as alice:
        api.store.disable_user("alice@example.com")
        assert_problem(alice.get("/me"), 401)


def test_aliases_for_admins_and_users(api: Api) -> None:
    """Admins manage every alias; a user sees and leaves the aliases that deliver to them and
    adds new addresses for themselves, never taking someone else's mail."""
    team = api.admin.post(
        "/aliases",
        json={"source": "Team@example.com", "targets": ["alice@example.com", "bob@example.com"]},
    )
    assert team.status_code == 201, team.text
    assert team.json() == {
        "source": "team@example.com",
        "domain": "example.com",
        "targets": ["alice@example.com", "bob@example.com"],
        "catch_all": False,
    }
    api.admin.post("/aliases", json={"source": "@example.com", "targets": ["bob@example.com"]})
    api.admin.post("/aliases", json={"source": "sales@example.com", "targets": ["bob@example.com"]})
    api.admin.post(
        "/aliases", json={"source": "postmaster@example.com", "targets": ["bob@example.com"]}
    )
    with api.as_user("alice@example.com") as alice:
        assert [a["source"] for a in alice.get("/aliases").json()] == ["team@example.com"]
        assert alice.get("/aliases", params={"domain": "example.org"}).json() == []
        mine = alice.post(
            "/aliases", json={"source": "shop@example.com", "targets": ["alice@example.com"]}
        )
        assert mine.status_code == 201, mine.text
        stolen = alice.post(
            "/aliases", json={"source": "postmaster@example.com", "targets": ["alice@example.com"]}
        )
        assert_problem(stolen, 403, "role address")
        new_admin = alice.post(
            "/aliases", json={"source": "admin@example.com", "targets": ["alice@example.com"]}
        )
        assert_problem(new_admin, 403, "role address")  # a CA may mail admin@ to prove control
        taken = alice.post(
            "/aliases", json={"source": "sales@example.com", "targets": ["alice@example.com"]}
        )
        assert_problem(taken, 409, "already exists")
        assert_problem(
            alice.post(
                "/aliases", json={"source": "bob@example.com", "targets": ["alice@example.com"]}
            ),
            409,
            "user's address",
        )
        assert_problem(
            alice.post(
                "/aliases", json={"source": "x@example.com", "targets": ["bob@example.com"]}
            ),
            403,
        )
        assert_problem(
            alice.post(
                "/aliases", json={"source": "@example.com", "targets": ["alice@example.com"]}
            ),
            403,
            "catch-all",
        )
        assert_problem(alice.delete("/aliases/postmaster@example.com"), 403)
        assert alice.delete("/aliases/team@example.com").status_code == 204
        assert [a["source"] for a in alice.get("/aliases").json()] == ["shop@example.com"]
    aliases = {a["source"]: a["targets"] for a in api.admin.get("/aliases").json()}
    assert aliases == {
        "@example.com": ["bob@example.com"],
        "postmaster@example.com": ["bob@example.com"],
        "sales@example.com": ["bob@example.com"],
        "shop@example.com": ["alice@example.com"],
        "team@example.com": ["bob@example.com"],
    }
    gone = api.admin.delete("/aliases/team@example.com", params={"target": "bob@example.com"})
    assert gone.status_code == 204
    assert api.admin.delete("/aliases/@example.com").status_code == 204
    assert [a["source"] for a in api.admin.get("/aliases").json()] == [
        "postmaster@example.com",
        "sales@example.com",
        "shop@example.com",
    ]


# -- sieve --------------------------------------------------------------------------------------


def test_sieve_scripts_through_a_user_token(api: Api) -> None:
    """Put (compiled by sievec first), activate, read, deactivate, delete."""
    compiler_says = check_script(INVALID_SIEVE)
    assert compiler_says is not None
    with api.as_user("alice@example.com") as alice:
        base = "/users/alice@example.com/sieve"
        stored = alice.put(f"{base}/bills", json={"content": VALID_SIEVE, "activate": True})
        assert stored.status_code == 200, stored.text
        assert stored.json()["active"] is True
        broken = alice.put(f"{base}/broken", json={"content": INVALID_SIEVE})
        problem = assert_problem(broken, 422, compiler_says.splitlines()[0])
        assert problem["field"] == "content"
        spare = alice.put(f"{base}/spare", json={"content": "keep;\n"})
        assert spare.json()["active"] is False
        listed = alice.get(base).json()
        assert [(s["name"], s["active"]) for s in listed] == [("bills", True), ("spare", False)]
        assert alice.get(f"{base}/bills").json()["content"] == VALID_SIEVE
        assert_problem(alice.delete(f"{base}/bills"), 409, "deactivate it first")
        assert alice.put(f"{base}/spare/active").status_code == 204
        assert alice.delete(f"{base}/bills").status_code == 204
        assert alice.delete(f"{base}/spare/active").status_code == 204
        assert [s["active"] for s in alice.get(base).json()] == [False]
        assert_problem(alice.put(f"{base}/bad%2Fname", json={"content": "keep;"}), 404)
        assert_problem(alice.put(f"{base}/x", json={"content": "keep;", "activte": True}), 422)
    assert [s.name for s in api.store.list_scripts("alice@example.com")] == ["spare"]


# -- dkim ---------------------------------------------------------------------------------------


def test_dkim_record_from_the_key_folder(api: Api) -> None:
    pem = generate_private_key()
    key_path(api.keys, "example.com").write_bytes(pem)
    record = api.admin.get("/domains/Example.COM/dkim")
    assert record.status_code == 200, record.text
    found = record.json()
    (only,) = found.pop("selectors")
    assert found == {
        "domain": "example.com",
        "selector": "mail",
        "name": "mail._domainkey.example.com",
        "type": "TXT",
        "value": dns_record_value(pem),
        "requests": [],
    }
    assert (only["selector"], only["state"], only["value"]) == ("mail", "active", found["value"])
    api.admin.post("/domains", json={"name": "example.org"})
    assert_problem(api.admin.get("/domains/example.org/dkim"), 404, "no DKIM key")
    key_path(api.keys, "other.example").write_bytes(pem)
    assert_problem(api.admin.get("/domains/other.example/dkim"), 404, "not hosted")


def test_dkim_selector_per_domain(store: MailStore, tmp_path: Path) -> None:
    store.add_domain("example.org")
    _, secret = store.create_token("admin")
    pem = generate_private_key()
    key_path(tmp_path, "example.org").write_bytes(pem)
    with serving(store.engine, tmp_path, "s1,example.org=s2026") as url, client(url, secret) as c:
        assert c.get("/domains/example.org/dkim").json()["name"] == "s2026._domainkey.example.org"


def test_an_unusable_key_is_503_and_a_bug_is_500_without_internals(
    store: MailStore, tmp_path: Path
) -> None:
    store.add_domain("example.org")
    store.add_user("alice@example.org", PASSWORD)
    _, secret = store.create_token("admin")
    key_path(tmp_path, "example.org").write_text("not a key\n")

    def broken_checker(script: str) -> str | None:
        raise ValueError("secret internals")

    with (
        serving(store.engine, tmp_path, sieve_checker=broken_checker) as url,
        client(url, secret) as admin,
    ):
        answer = admin.get("/domains/example.org/dkim")
        assert_problem(answer, 503, "not a PEM private key")
        assert answer.headers["retry-after"].isdigit()
        failed = admin.put("/users/alice@example.org/sieve/f", json={"content": "keep;"})
        assert_problem(failed, 500, "internal error")
        assert "secret internals" not in failed.text
        assert admin.get("/me").status_code == 200  # the server is still serving
    assert store.list_scripts("alice@example.org") == []


# -- the OpenAPI document -----------------------------------------------------------------------


def test_served_openapi_is_the_one_in_the_repository(api: Api) -> None:
    """Regenerate with `python -m mailstack.api.openapi docs/openapi.json`."""
    with client(api.url) as anonymous:
        served = anonymous.get("/openapi.json")
    assert served.status_code == 200
    checked_in = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert served.json() == checked_in == document()
    assert checked_in["servers"] == [{"url": "/api/v1"}]
    assert checked_in["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_users_set_their_own_spam_filing_and_nobody_elses(api: Api) -> None:
    """A user token reads and sets its own threshold and filter; another user's is 403;
    a threshold outside 0-1000 is 422 naming the field."""
    with api.as_user("alice@example.com") as alice:
        own = alice.get("/users/alice@example.com/spam")
        assert own.json() == {"address": "alice@example.com", "threshold": None, "filter": True}
        answer = alice.put("/users/alice@example.com/spam", json={"threshold": 4, "filter": False})
        assert answer.status_code == 200, answer.text
        assert api.store.spam_settings("alice@example.com").threshold == 4
        assert api.store.spam_settings("alice@example.com").filter is False
        assert_problem(alice.get("/users/bob@example.com/spam"), 403)
        assert_problem(alice.put("/users/bob@example.com/spam", json={"filter": False}), 403)
        assert_problem(
            alice.put("/users/alice@example.com/spam", json={"threshold": -1}), 422, "threshold"
        )
    assert api.store.spam_settings("bob@example.com").filter is True
