"""App passwords through the real server: made and revoked over the REST API (the HTTPS
listener's /api/v1) and the CLI, used by real clients: imaplib on 143, smtplib AUTH on the
submission listener (both through Dovecot's second passdb), sieve-connect on ManageSieve.
As an attacker: a revoked app password, the web login and the API with an app password, and
a user token reaching for another user's app passwords.

Each test uses its own user. Failed logins slow later ones from 127.0.0.1 (Dovecot's auth
penalty, the web UI's throttle), so only a few fail on purpose.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mailserver import PASSWORD, imap_session
from webui_harness import World, csrf, world_with

USERS = ("ann", "ben", "cid", "dee", "eve")


@dataclass
class Tokens:
    admin: str  # an admin API token
    users: dict[str, str]  # address -> a token acting for that user only


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with world_with(USERS) as started:
        yield started


@pytest.fixture(scope="module")
def tokens(world: World) -> Tokens:
    users = {f"{n}@example.com": world.store.create_token(f"own-{n}", f"{n}@example.com")[1]
             for n in USERS}  # fmt: skip
    return Tokens(world.store.create_token("ops")[1], users)


def make(world: World, tokens: Tokens, user: str, name: str) -> str:
    """An app password made over the API with the user's own token."""
    with world.client(tokens.users[user]) as api:
        answer = api.post(f"/api/v1/users/{user}/app-passwords", json={"name": name})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["name"] == name
    password: str = body["password"]
    return password


def smtp_login(world: World, user: str, password: str) -> int:
    """AUTH on the submission listener after STARTTLS, as a mail client sends."""
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        code, _ = client.login(user, password)
        return code


def test_an_app_password_logs_in_to_imap_and_smtp_until_revoked(
    world: World, tokens: Tokens
) -> None:
    """Made over the API, it works for IMAP and submission; once revoked, for neither."""
    user = "ann@example.com"
    secret = make(world, tokens, user, "laptop")
    assert secret != PASSWORD
    assert len(secret) == 28
    with imap_session(world.server, world.ports.imap, user, secret) as imap:
        assert imap.select("INBOX")[0] == "OK"
    assert smtp_login(world, user, secret) == 235
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as imap:
        assert imap.noop()[0] == "OK"  # the account password still works (no TOTP)
    with world.client(tokens.users[user]) as api:
        listed = api.get(f"/api/v1/users/{user}/app-passwords").json()
        assert [item["name"] for item in listed] == ["laptop"]
        assert "password" not in listed[0]
        assert api.delete(f"/api/v1/users/{user}/app-passwords/laptop").status_code == 204
        assert api.get(f"/api/v1/users/{user}/app-passwords").json() == []
    with (
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        imap_session(world.server, world.ports.imap, user, secret),
    ):
        pass
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_login(world, user, secret)


def test_one_app_password_revoked_leaves_the_others_working(world: World, tokens: Tokens) -> None:
    """Several app passwords per user: each is its own credential."""
    user = "ben@example.com"
    phone, tablet = make(world, tokens, user, "phone"), make(world, tokens, user, "tablet")
    with world.client(tokens.users[user]) as api:
        assert api.delete(f"/api/v1/users/{user}/app-passwords/phone").status_code == 204
        duplicate = api.post(f"/api/v1/users/{user}/app-passwords", json={"name": "tablet"})
        assert duplicate.status_code == 409
        assert duplicate.headers["content-type"] == "application/problem+json"
        bad = api.post(f"/api/v1/users/{user}/app-passwords", json={"name": "my phone!"})
        assert bad.status_code == 422
        missing = api.delete(f"/api/v1/users/{user}/app-passwords/phone")
        assert missing.status_code == 404
    with imap_session(world.server, world.ports.imap, user, tablet) as imap:
        assert imap.noop()[0] == "OK"
    assert phone != tablet


def test_an_app_password_opens_neither_the_web_ui_nor_the_api(world: World, tokens: Tokens) -> None:
    user = "cid@example.com"
    secret = make(world, tokens, user, "mailer")
    with world.client() as web:
        page = web.get("/")
        token = csrf(page.text)
        login = web.post("/login", data={"csrf": token, "address": user, "password": secret})
        assert login.status_code == 401
        assert "__Host-mailstack-session" not in web.cookies
    with world.client(secret) as api:
        assert api.get("/api/v1/me").status_code == 401
        assert api.get(f"/api/v1/users/{user}/app-passwords").status_code == 401
    basic = httpx.BasicAuth(user, secret)
    with world.client() as api:
        assert api.get("/api/v1/me", auth=basic).status_code == 401


def test_a_user_token_cannot_touch_another_users_app_passwords(
    world: World, tokens: Tokens
) -> None:
    """403 for someone else's list, creation and revocation; an admin token may do all."""
    owner, other = "dee@example.com", "eve@example.com"
    make(world, tokens, owner, "desktop")
    path = f"/api/v1/users/{owner}/app-passwords"
    with world.client(tokens.users[other]) as api:
        listing = api.get(path)
        assert listing.status_code == 403
        assert "desktop" not in listing.text
        assert api.post(path, json={"name": "sneaky"}).status_code == 403
        assert api.delete(f"{path}/desktop").status_code == 403
    with world.client() as anonymous:
        assert anonymous.get(path).status_code == 401
    with world.client(tokens.admin) as api:
        assert [item["name"] for item in api.get(path).json()] == ["desktop"]
        made = api.post(path, json={"name": "by-admin"})
        assert made.status_code == 201
        assert api.delete(f"{path}/by-admin").status_code == 204
    with world.client(tokens.users[owner]) as api:
        assert [item["name"] for item in api.get(path).json()] == ["desktop"]


def test_the_cli_makes_an_app_password_that_works_for_managesieve(world: World) -> None:
    """`mailstack user app-password add` prints it once; sieve-connect logs in with it."""
    user = "eve@example.com"
    made = world.mailstack("user", "app-password", "add", user, "sieve-client")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert "shown only now" in made.stderr
    listed = world.mailstack("user", "app-password", "list", user, "--json")
    assert '"name": "sieve-client"' in listed.stdout
    assert secret not in listed.stdout
    sieve = subprocess.run(
        ["sieve-connect", "--server", "127.0.0.1", "--port", str(world.ports.managesieve),
         "--nosrv", "--user", user, "--passwordfd", "0",
         "--tlscafile", str(world.server.certificate), "--list"],
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert sieve.returncode == 0, sieve.stderr
    with imap_session(world.server, world.ports.imap, user, secret) as imap:
        assert imap.noop()[0] == "OK"


def dict_lookup(socket_path: Path, key: str) -> str:
    """One LOOKUP in Dovecot's dict protocol (version 3), as Dovecot's auth process asks."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(socket_path))
        sock.sendall(f"H3\t2\t0\t\tmailstack\nL{key}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "the dict server closed the connection"
            reply += chunk
    return reply.decode()


def test_app_password_hashes_are_served_only_on_the_auth_dict(world: World, tokens: Tokens) -> None:
    """The auth dict (Dovecot's auth process) answers `apppass/<user>/<ident>` with the one
    hash; the Sieve dict the mail processes use answers not found; so does a wrong ident."""
    user = "ann@example.com"
    secret = make(world, tokens, user, "probe")
    run = world.server.root / "run/mailstack"
    key = f"shared/apppass/{user}/{secret[:8]}"
    answer = dict_lookup(run / "dict/dict.sock", key)
    assert answer.startswith("O")
    assert "$argon2id$" in answer
    assert secret not in answer
    assert dict_lookup(run / "sieve-dict/dict.sock", key) == "N\n"
    assert dict_lookup(run / "dict/dict.sock", key[:-1] + "?") == "N\n"
    other = "ben@example.com"
    assert dict_lookup(run / "dict/dict.sock", f"shared/apppass/{other}/{secret[:8]}") == "N\n"
