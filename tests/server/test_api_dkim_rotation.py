"""DKIM key rotation through the REST API on a running server: real Postfix, Dovecot and
OpenDKIM, a real name server (NSD, on the port MAILSTACK_DNS_NAMESERVERS names) publishing
the records, dkimpy verifying the mail that leaves against it, httpx as the API client.

The worker answering the API is not root: it checks each step and answers a refusal at
once, else 202, and root (the supervisor's `dkim requested`) carries the step out; the
tests poll `GET .../dkim` until the request's outcome is there, as a client would. As an
attacker: user tokens, no token, and request files root must not trust.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mailserver import PASSWORD, MailServer, Ports, running_server, server_env
from nsd_harness import running_nsd
from test_api import assert_problem
from test_dkim_rotate import (
    DOMAIN,
    USER,
    Setup,
    admin,
    published,
    send,
    signed_selector,
    verifies,
)
from tests.helpers import free_port, private_root, smtp_sink, wait_for
from web_harness import store_with_user

from mailstack.store import MailStore

DKIM = f"/domains/{DOMAIN}/dkim"


@dataclass
class World:
    setup: Setup
    server: MailServer
    nameserver_port: int
    admin_token: str
    user_token: str

    def api(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = f"https://127.0.0.1:{self.setup.ports.https}/api/v1"
        verify = self.server.tls_context()
        return httpx.Client(base_url=base, headers=headers, verify=verify, timeout=60)

    def admin(self) -> httpx.Client:
        return self.api(self.admin_token)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """example.com with alice, relaying to a sink, its DKIM records checked with the name
    server on `nameserver_port` (started by each test with the zone it needs)."""
    with private_root() as root, smtp_sink() as sink:
        store_with_user(root, DOMAIN, USER, PASSWORD)
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            admin_token = store.create_token("ops")[1]
            user_token = store.create_token("alice", USER)[1]
        finally:
            store.close()
        ports, nameserver = Ports(), free_port()
        env = server_env(
            root,
            ports,
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            MAILSTACK_DNS_NAMESERVERS=f"127.0.0.1:{nameserver}",
        )
        with running_server(root, env) as server:
            yield World(Setup(root, env, ports, sink), server, nameserver, admin_token, user_token)


def dkim(client: httpx.Client) -> dict[str, Any]:
    answer = client.get(DKIM)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def states(client: httpx.Client) -> dict[str, str]:
    return {s["selector"]: s["state"] for s in dkim(client)["selectors"]}


def accepted(answer: httpx.Response) -> str:
    """A 202 for a step left to root; the request's id."""
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/api/v1{DKIM}"
    assert answer.json()["status"] == "waiting"
    request_id: str = answer.json()["id"]
    return request_id


def outcome(client: httpx.Client, request_id: str) -> dict[str, Any]:
    """Wait until root carried the request out; what became of it."""
    found: dict[str, Any] = {}

    def settled() -> bool:
        for item in dkim(client)["requests"]:
            if item["id"] == request_id and item["status"] != "waiting":
                found.update(item)
                return True
        return False

    wait_for(settled, 60, f"root to carry out request {request_id}")
    return found


def test_a_key_rotates_through_the_api_with_root_doing_the_writing(world: World) -> None:
    """rotate -> a pending key made by root; activate refused until DNS has its record
    (409 naming what is published), then it signs mail that verifies; the old selector
    retires and is refused removal for 7 days unless forced; every state shown by GET."""
    opendkim = pwd.getpwnam("opendkim").pw_uid
    keys = world.setup.keys
    port = world.nameserver_port
    with world.admin() as api:
        before = dkim(api)
        old_value = before["value"]
        assert (before["selector"], before["requests"]) == ("mail", [])
        assert [(s["selector"], s["state"], s["value"]) for s in before["selectors"]] == [
            ("mail", "active", old_value)
        ]

        rotate = api.post(f"{DKIM}/rotate")
        rotated = accepted(rotate)
        asked = rotate.json()
        assert (asked["action"], asked["force"]) == ("rotate", False)
        new = asked["selector"]
        assert re.fullmatch(r"ms\d{6}", new), new
        assert outcome(api, rotated)["status"] == "done"
        assert states(api) == {"mail": "active", new: "pending"}
        listed = {s["selector"]: s for s in dkim(api)["selectors"]}
        new_value = listed[new]["value"]
        assert new_value.startswith("v=DKIM1;")
        assert new_value != old_value
        private = keys / f"selectors/{DOMAIN}/{new}.private"
        info = private.stat()
        assert info.st_uid in (0, opendkim)  # root wrote it, not the worker
        assert stat.S_IMODE(info.st_mode) == 0o600
        again = api.post(f"{DKIM}/rotate", json={"selector": "another"})
        assert_problem(again, 409, f"already has a pending selector {new}")

        with running_nsd(published({"mail": old_value}), port=port):
            missing = api.post(f"{DKIM}/{new}/activate")
        body = assert_problem(missing, 409, f"{new}._domainkey.{DOMAIN} is not published")
        assert new_value in str(body["detail"])  # what to publish
        assert '"force": true' in str(body["detail"])
        with running_nsd(published({"mail": old_value, new: old_value}), port=port):
            wrong = api.post(f"{DKIM}/{new}/activate", json={"force": False})
        assert_problem(wrong, 409, "wrong: the p= key is not this server's key")
        assert states(api) == {"mail": "active", new: "pending"}

        with running_nsd(published({"mail": old_value, new: new_value}), port=port) as both:
            activate = api.post(f"{DKIM}/{new}/activate")
            assert outcome(api, accepted(activate))["status"] == "done"
            now = dkim(api)
            assert (now["selector"], now["value"]) == (new, new_value)
            assert states(api) == {"mail": "retiring", new: "active"}
            (old,) = [s for s in now["selectors"] if s["selector"] == "mail"]
            assert old["retire_after"] is not None
            raw = send(world.setup, world.server, "signed after an API activation")
            assert signed_selector(raw) == new
            assert verifies(raw, both)

        early = api.post(f"{DKIM}/mail/retire")
        assert_problem(early, 409, "mail it signed may still be on its way")
        assert_problem(api.post(f"{DKIM}/{new}/retire", json={"force": True}), 409, "signs")
        assert_problem(api.post(f"{DKIM}/nosuch/retire"), 404, "has no selector 'nosuch'")
        retire = api.post(f"{DKIM}/mail/retire", json={"force": True})
        assert outcome(api, accepted(retire))["status"] == "done"
        assert states(api) == {new: "active"}
        assert not (keys / f"{DOMAIN}.private").exists()

        # a pending selector of one's own name, given up again without force
        named = api.post(f"{DKIM}/rotate", json={"selector": "spare"})
        assert outcome(api, accepted(named))["status"] == "done"
        assert states(api) == {new: "active", "spare": "pending"}
        dropped = api.post(f"{DKIM}/spare/retire")
        assert outcome(api, accepted(dropped))["status"] == "done"
        assert states(api) == {new: "active"}
        actions = [(r["action"], r["selector"], r["status"]) for r in dkim(api)["requests"]]
        assert actions == [
            ("rotate", new, "done"),
            ("activate", new, "done"),
            ("retire", "mail", "done"),
            ("rotate", "spare", "done"),
            ("retire", "spare", "done"),
        ]


def test_only_admin_tokens_reach_the_keys_and_bad_requests_are_refused(world: World) -> None:
    steps = [f"{DKIM}/rotate", f"{DKIM}/mail/activate", f"{DKIM}/mail/retire"]
    with world.api(None) as anonymous, world.api(world.user_token) as alice:
        assert_problem(anonymous.get(DKIM), 401)
        assert_problem(alice.get(DKIM), 403, "needs an admin")
        for path in steps:
            assert_problem(anonymous.post(path), 401)
            assert_problem(alice.post(path, json={"force": True}), 403, "needs an admin")
    with world.admin() as api:
        before = dkim(api)
        for path in ("/domains/elsewhere.example/dkim", "/domains/elsewhere.example/dkim/rotate"):
            assert_problem(api.get(path) if path.endswith("dkim") else api.post(path), 404)
        bad = api.post(f"{DKIM}/rotate", json={"selector": "../../etc/evil"})
        assert_problem(bad, 422, "selector")
        assert_problem(api.post(f"{DKIM}/rotate", json={"force": True}), 422, "force")
        assert_problem(api.post(f"{DKIM}/nosuch/activate", json={"force": True}), 404)
        assert_problem(api.post(f"{DKIM}/mail/activate", json={"later": 1}), 422, "later")
        assert dkim(api)["selectors"] == before["selectors"]


def test_root_ignores_request_files_the_worker_could_not_have_written(world: World) -> None:
    """Links, a FIFO, garbage and an oversized file in the worker's request folder: root
    neither follows, waits on nor uses any of them, and removes them."""
    folder = world.setup.root / "run/mailstack/requests/dkim-rotation.d"
    worker = pwd.getpwnam("mailstack")
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chown(folder, worker.pw_uid, worker.pw_gid)
    valid = (
        '{"id": "%s", "action": "rotate", "domain": "example.com", "selector": "%s", '
        '"force": false, "requested_at": "2026-11-26T12:00:00+00:00"}'
    )
    outside = world.setup.root / "outside.json"
    outside.write_text(valid % ("20261126T120000000001Z-0000000a", "linked"))
    (folder / "20261126T120000000001Z-0000000a.json").symlink_to(outside)
    os.mkfifo(folder / "20261126T120000000002Z-0000000b.json")
    (folder / "20261126T120000000003Z-0000000c.json").write_text("not json")
    big = valid % ("20261126T120000000004Z-0000000d", "big") + " " * 5000
    (folder / "20261126T120000000004Z-0000000d.json").write_text(big)
    (folder / "20261126T120000000005Z-0000000e.json").write_text(
        valid % ("20261126T120000000005Z-0000000e", "../../../tmp/x")
    )
    with world.admin() as api:
        before = dkim(api)
        runs = world.server.log.count("dkim-rotation ended (code 0)")
        (world.setup.root / "run/mailstack/requests/dkim-rotation").touch()
        wait_for(
            lambda: world.server.log.count("dkim-rotation ended (code 0)") > runs,
            60,
            "root's run over the request folder",
        )
        assert dkim(api)["selectors"] == before["selectors"]
        assert dkim(api)["requests"] == before["requests"]
    assert list(folder.iterdir()) == []
    assert outside.exists()
    assert world.server.log.count("ignored the DKIM request") == 5


def test_dkim_show_json_agrees_with_the_api(world: World) -> None:
    """`mailstack dkim show --json` (root, on the server) lists the selectors, states and
    values the API lists; with a pending one too."""
    with world.admin() as api:
        made = api.post(f"{DKIM}/rotate", json={"selector": "json"})
        assert outcome(api, accepted(made))["status"] == "done"
        try:
            shown = admin(world.setup, "dkim", "show", DOMAIN, "--json")
            assert shown.returncode == 0, shown.stderr
            rows = json.loads(shown.stdout)
            listed = dkim(api)["selectors"]
            assert [(r["selector"], r["state"], r["value"]) for r in rows] == [
                (s["selector"], s["state"], s["value"]) for s in listed
            ]
            assert {r["name"] for r in rows} == {
                f"{s['selector']}._domainkey.{DOMAIN}" for s in listed
            }
            assert {(r["type"], r["domain"]) for r in rows} == {("TXT", DOMAIN)}
            (pending,) = [r for r in rows if r["state"] == "pending"]
            assert (pending["selector"], pending["retire_after"]) == ("json", None)
            one = admin(world.setup, "dkim", "show", DOMAIN, "--json", "--selector", "json")
            assert [r["selector"] for r in json.loads(one.stdout)] == ["json"]
        finally:
            dropped = api.post(f"{DKIM}/json/retire")
            assert outcome(api, accepted(dropped))["status"] == "done"
