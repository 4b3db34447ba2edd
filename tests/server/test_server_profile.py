"""The server profile end to end: real Postfix, Dovecot, OpenDKIM and the lookup service,
driven by real clients (smtplib, imaplib) on loopback.

One server runs for the module (start-up costs seconds); tests use their own users where
they change state, so their order does not matter.
"""

from __future__ import annotations

import base64
import imaplib
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from mailserver import (
    PASSWORD,
    MailServer,
    Ports,
    deliver,
    imap_session,
    message,
    running_server,
    server_env,
    wait_for_subject,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from tests.helpers import (
    MAILSTACK,
    Sink,
    free_port,
    private_root,
    smtp_sink,
    verify_dkim,
    wait_for,
)

from mailstack.store import MailStore

WORK_FILTER = """require ["fileinto", "mailbox"];
if header :contains "subject" "[work]" {
  fileinto :create "Work";
}
"""


@dataclass
class World:
    server: MailServer
    ports: Ports
    store: MailStore
    sink: Sink

    @property
    def keys(self) -> Path:
        return self.server.root / "etc/opendkim/keys"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_root() as root, smtp_sink() as sink:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            store.add_domain("example.net")
            store.add_alias_domain("example.org", "example.com")
            for user in ("alice", "bob", "carol", "dave", "erin"):
                store.add_user(f"{user}@example.com", PASSWORD)
            store.add_alias("info@example.com", ["alice@example.com", "bob@example.com"])
            store.add_alias("@example.net", "erin@example.com")
            ports = Ports()
            env = server_env(
                root,
                ports,
                RELAYHOST=f"[127.0.0.1]:{sink.port}",
                MAILSTACK_METRICS_LISTEN=f"127.0.0.1:{ports.metrics}",
            )
            with running_server(root, env) as server:
                yield World(server, ports, store, sink)
        finally:
            store.close()


def submit(world: World, user: str, sender: str, recipient: str, subject: str) -> None:
    """Send as a mail client does: 587, STARTTLS, AUTH."""
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        client.login(user, PASSWORD)
        client.sendmail(sender, [recipient], message(sender, recipient, subject))


# -- inbound: the MX --------------------------------------------------------------------


def test_outside_mail_reaches_the_inbox_and_special_folders_exist(world: World) -> None:
    assert deliver(world.ports.smtp, "friend@remote.test", ["alice@example.com"], "hi") == {}
    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "hi")
    with imap_session(world.server, world.ports.imap, "alice@example.com", PASSWORD) as client:
        _, folders = client.list()
    listing = b"\n".join(folders).decode()
    for flag, name in [("Drafts", "Drafts"), ("Sent", "Sent"), ("Trash", "Trash")]:
        assert f"\\{flag}" in listing
        assert name in listing
    assert "\\Junk" in listing
    assert "Junk" in listing
    assert "\\Archive" in listing


def test_alias_catch_all_and_alias_domain_reach_the_right_mailboxes(world: World) -> None:
    port = world.ports.smtp
    assert deliver(port, "a@remote.test", ["info@example.com"], "to info") == {}
    assert deliver(port, "a@remote.test", ["anything@example.net"], "to catch-all") == {}
    assert deliver(port, "a@remote.test", ["bob@example.org"], "to alias domain") == {}
    imap = world.ports.imap
    wait_for_subject(world.server, imap, "alice@example.com", "to info")
    wait_for_subject(world.server, imap, "bob@example.com", "to info")
    wait_for_subject(world.server, imap, "erin@example.com", "to catch-all")
    bob = wait_for_subject(world.server, imap, "bob@example.com", "to alias domain")
    assert "to catch-all" not in bob


def test_unknown_recipient_is_refused_at_rcpt_with_550(world: World) -> None:
    refused = deliver(
        world.ports.smtp, "a@remote.test", ["nobody@example.com", "carol@example.com"], "mixed"
    )
    assert list(refused) == ["nobody@example.com"]
    code, reply = refused["nobody@example.com"]
    assert code == 550, reply
    wait_for_subject(world.server, world.ports.imap, "carol@example.com", "mixed")
    # an alias domain does not make unknown users exist
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        deliver(world.ports.smtp, "a@remote.test", ["nobody@example.org"], "x")
    assert caught.value.recipients["nobody@example.org"][0] == 550


def test_the_mx_is_not_an_open_relay(world: World) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        deliver(world.ports.smtp, "a@remote.test", ["victim@elsewhere.test"], "relay?")
    code, reply = caught.value.recipients["victim@elsewhere.test"]
    assert code == 554
    assert b"Relay access denied" in reply
    # not with one of our own addresses as the sender either
    with pytest.raises(smtplib.SMTPException):
        deliver(world.ports.smtp, "alice@example.com", ["victim@elsewhere.test"], "relay?")
    assert world.sink.messages == [] or all(
        "victim@elsewhere.test" not in envelope.rcpt_tos for envelope, _ in world.sink.messages
    )


def test_mx_refuses_hosted_senders_from_clients_that_did_not_log_in(world: World) -> None:
    """Port 25 has no SASL: a client claiming one of our addresses (or one in an alias
    domain, or an unknown one in a hosted domain) is refused with 550 5.7.1 from loopback
    and from outside mynetworks alike, and nothing is delivered."""
    forged = ["alice@example.com", "ALICE@Example.COM", "nobody@example.com", "bob@example.org"]
    for source in ("127.0.0.1", "127.0.0.2"):
        for sender in forged:
            with smtplib.SMTP(
                "127.0.0.1",
                world.ports.smtp,
                local_hostname="mail.remote.test",
                timeout=30,
                source_address=(source, 0),
            ) as mx:
                mx.ehlo()
                mx.mail(sender)
                code, reply = mx.rcpt("bob@example.com")
                assert code == 550, (source, sender, reply)
                assert reply.startswith(b"5.7.1"), reply
    # an outside sender still gets through
    assert deliver(world.ports.smtp, "friend@remote.test", ["bob@example.com"], "genuine") == {}
    wait_for_subject(world.server, world.ports.imap, "bob@example.com", "genuine")


# -- submission -----------------------------------------------------------------------------


def test_auth_is_offered_only_after_starttls_on_587(world: World) -> None:
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        token = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        assert code >= 500
        client.starttls(context=world.server.tls_context())
        client.ehlo()
        assert client.has_extn("auth")
        assert client.login("alice@example.com", PASSWORD)[0] == 235


def test_submitted_mail_is_signed_and_relayed_on_587_and_465(world: World) -> None:
    before = len(world.sink.messages)
    submit(world, "alice@example.com", "alice@example.com", "someone@remote.test", "via 587")
    with smtplib.SMTP_SSL(
        "127.0.0.1", world.ports.submissions, context=world.server.tls_context(), timeout=30
    ) as client:
        client.login("bob@example.com", PASSWORD)
        client.sendmail(
            "bob@example.com",
            ["someone@remote.test"],
            message("bob@example.com", "someone@remote.test", "via 465"),
        )
    received = world.sink.wait_messages(before + 2)[before:]
    by_subject = {msg["Subject"]: (envelope, msg) for envelope, msg in received}
    assert set(by_subject) == {"via 587", "via 465"}
    for envelope, msg in by_subject.values():
        assert "d=example.com" in str(msg["DKIM-Signature"]).replace(" ", "")
        assert verify_dkim(envelope.original_content or envelope.content, world.keys)


def on_the_server(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """A `mailstack` command run as an administrator on the server: its environment."""
    env = {**world.server.env, "PATH": os.environ["PATH"]}
    return subprocess.run(
        [*MAILSTACK, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_the_rest_api_is_served_on_https_with_tokens(world: World) -> None:
    """`mailstack token create` on the server, then the API at https://.../api/v1 of the
    running server: 401 without the token, the hosted domains and a DKIM record with it."""
    import httpx

    from mailstack.dkim.keys import parse_txt

    created = on_the_server(world, "token", "create", "ops")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().split()[-1]
    base = f"https://127.0.0.1:{world.ports.https}/api/v1"
    with httpx.Client(base_url=base, verify=world.server.tls_context(), timeout=30) as client:
        assert client.get("/domains").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        domains = client.get("/domains", headers=headers)
        assert domains.status_code == 200, domains.text
        assert {"example.com", "example.net"} <= {d["name"] for d in domains.json()}
        # the worker reads the published record (it may not read OpenDKIM's private key)
        record = client.get("/domains/example.com/dkim", headers=headers)
        assert record.status_code == 200, record.text
        published = parse_txt((world.keys / "example.com.txt").read_text())
        assert record.json()["value"] == published


def test_a_domain_added_through_the_api_is_signed_at_once(world: World) -> None:
    """The worker cannot make keys (not root): it asks the supervisor, which runs
    `mailstack dkim sync`; the first message from the new domain carries a signature."""
    import httpx

    token = on_the_server(world, "token", "create", "dkim-test").stdout.strip().split()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"https://127.0.0.1:{world.ports.https}/api/v1"
    with httpx.Client(base_url=base, verify=world.server.tls_context(), timeout=30) as api:
        assert api.post("/domains", json={"name": "api.example"}, headers=headers).is_success
        user = {"address": "yves@api.example", "password": PASSWORD}
        assert api.post("/users", json=user, headers=headers).is_success
        wait_for(
            lambda: api.get("/domains/api.example/dkim", headers=headers).status_code == 200,
            30,
            "the new domain's DKIM key",
        )
    wait_for(lambda: "dkim-sync ended (code 0)" in world.server.log, 30, "dkim sync done")
    before = len(world.sink.messages)
    submit(world, "yves@api.example", "yves@api.example", "friend@remote.test", "via the api")
    envelope, msg = world.sink.wait_messages(before + 1)[-1]
    assert msg["Subject"] == "via the api"
    assert "d=api.example" in str(msg["DKIM-Signature"]).replace(" ", "")
    assert verify_dkim(envelope.original_content or envelope.content, world.keys)


def test_a_domain_added_while_running_is_signed_at_once(world: World) -> None:
    """`mailstack domain add` on the running server: the key is made, OpenDKIM reads its
    tables again, and the first message from the new domain carries a signature that
    verifies against what `mailstack dkim show` says to publish. No restart."""
    import dkim

    added = on_the_server(world, "domain", "add", "later.example")
    assert added.returncode == 0, added.stderr
    assert "OpenDKIM signs its mail now" in added.stdout, added.stdout
    world.store.add_user("zoe@later.example", PASSWORD)
    shown = on_the_server(world, "dkim", "show", "later.example")
    assert shown.returncode == 0, shown.stderr
    published = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    record = published["value"].strip()

    before = len(world.sink.messages)
    submit(world, "zoe@later.example", "zoe@later.example", "friend@remote.test", "new domain")
    envelope, msg = world.sink.wait_messages(before + 1)[-1]
    assert msg["Subject"] == "new domain"
    assert "d=later.example" in str(msg["DKIM-Signature"]).replace(" ", "")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == published["name"].strip(), name
        return record.encode()

    assert dkim.verify(envelope.original_content or envelope.content, dnsfunc=dns)


def test_users_send_only_as_their_own_addresses_and_aliases(world: World) -> None:
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        client.login("alice@example.com", PASSWORD)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            client.sendmail("bob@example.com", ["x@remote.test"], b"Subject: spoof\r\n\r\nx\r\n")
        code, reply = caught.value.recipients["x@remote.test"]
        assert code == 553
        assert b"not owned by user alice@example.com" in reply
        # info@ delivers to alice, so she may send as it
        before = len(world.sink.messages)
        client.sendmail(
            "info@example.com",
            ["x@remote.test"],
            message("info@example.com", "x@remote.test", "as alias"),
        )
    assert world.sink.wait_messages(before + 1)[-1][1]["Subject"] == "as alias"


def test_header_from_must_be_the_users_own_before_it_is_signed(world: World) -> None:
    """alice may not put another user's (or another hosted domain's) address in From: and
    get it signed for that domain: 550 5.7.1, nothing relayed. Her alias is fine."""
    before = len(world.sink.messages)
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        client.login("alice@example.com", PASSWORD)
        for forged in ("erin@example.com", "ceo@example.net", "Boss <bob@example.org>"):
            body = message("alice@example.com", "x@remote.test", "forged").replace(
                b"From: alice@example.com", f"From: {forged}".encode()
            )
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("alice@example.com", ["x@remote.test"], body)
            assert caught.value.smtp_code == 550, forged
            assert caught.value.smtp_error.startswith(b"5.7.1"), caught.value.smtp_error
        owned = message("alice@example.com", "x@remote.test", "from the alias").replace(
            b"From: alice@example.com", b"From: Info <info@example.com>"
        )
        client.sendmail("alice@example.com", ["x@remote.test"], owned)
    envelope, msg = world.sink.wait_messages(before + 1)[-1]
    assert msg["Subject"] == "from the alias"
    assert verify_dkim(envelope.original_content or envelope.content, world.keys)
    assert all(m["Subject"] != "forged" for _, m in world.sink.messages[before:])


def test_wrong_password_is_refused_on_submission_and_imap(world: World) -> None:
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login("alice@example.com", "wrong password")
        assert caught.value.smtp_code == 535
    with (
        pytest.raises(imaplib.IMAP4.error),
        imap_session(world.server, world.ports.imap, "alice@example.com", "wrong"),
    ):
        pass


def test_imap_offers_starttls_and_imaps_works(world: World) -> None:
    """(Dovecot counts loopback clients as secure, so plaintext refusal cannot be shown from
    here; `disable_plaintext_auth = yes` applies to every other address.)"""
    plain = imaplib.IMAP4("127.0.0.1", world.ports.imap, timeout=30)
    try:
        assert "STARTTLS" in plain.capabilities
    finally:
        plain.shutdown()
    secure = imaplib.IMAP4_SSL(
        "127.0.0.1", world.ports.imaps, ssl_context=world.server.tls_context(), timeout=30
    )
    try:
        assert secure.login("alice@example.com", PASSWORD)[0] == "OK"
    finally:
        secure.logout()


# -- account changes take effect at once -------------------------------------------------------


def test_password_change_applies_at_once(world: World) -> None:
    user, new = "carol@example.com", "a brand new passphrase"
    world.store.set_password(user, new)
    try:
        with (
            pytest.raises(imaplib.IMAP4.error),
            imap_session(world.server, world.ports.imap, user, PASSWORD),
        ):
            pass
        with imap_session(world.server, world.ports.imap, user, new) as client:
            assert client.select("INBOX")[0] == "OK"
        with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
            client.starttls(context=world.server.tls_context())
            assert client.login(user, new)[0] == 235
    finally:
        world.store.set_password(user, PASSWORD)


def test_disabled_user_cannot_log_in_but_still_receives(world: World) -> None:
    user = "dave@example.com"
    world.store.disable_user(user)
    try:
        with (
            pytest.raises(imaplib.IMAP4.error),
            imap_session(world.server, world.ports.imap, user, PASSWORD),
        ):
            pass
        with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
            client.starttls(context=world.server.tls_context())
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(user, PASSWORD)
        # as the README says: a disabled account keeps receiving, for when it comes back
        assert deliver(world.ports.smtp, "a@remote.test", [user], "while away") == {}
    finally:
        world.store.enable_user(user)
    wait_for_subject(world.server, world.ports.imap, user, "while away")


# -- sieve ------------------------------------------------------------------------------------


def test_active_sieve_script_from_the_store_files_mail(world: World) -> None:
    world.store.put_script("erin@example.com", "work", WORK_FILTER, activate=True)
    deliver(world.ports.smtp, "boss@remote.test", ["erin@example.com"], "[work] report")
    deliver(world.ports.smtp, "mum@remote.test", ["erin@example.com"], "sunday lunch")
    wait_for_subject(world.server, world.ports.imap, "erin@example.com", "[work] report", "Work")
    inbox = wait_for_subject(world.server, world.ports.imap, "erin@example.com", "sunday lunch")
    assert "[work] report" not in inbox


def sieve_connect(world: World, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's sieve-connect: STARTTLS verified against the server's certificate, PLAIN."""
    return subprocess.run(
        ["sieve-connect", "--server", "127.0.0.1", "--port", str(world.ports.managesieve),
         "--nosrv", "--user", user, "--passwordfd", "0",
         "--tlscafile", str(world.server.certificate), *args],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip


def test_script_uploaded_over_managesieve_files_mail(world: World, tmp_path: Path) -> None:
    user = "bob@example.com"
    script = tmp_path / "work.sieve"
    script.write_text(WORK_FILTER)
    upload = sieve_connect(world, user, "--localsieve", str(script), "--remotesieve", "work",
                           "--upload")  # fmt: skip
    assert upload.returncode == 0, upload.stderr
    activate = sieve_connect(world, user, "--remotesieve", "work", "--activate")
    assert activate.returncode == 0, activate.stderr
    assert [(s.name, s.active) for s in world.store.list_scripts(user)] == [("work", True)]
    deliver(world.ports.smtp, "boss@remote.test", [user], "[work] over managesieve")
    wait_for_subject(world.server, world.ports.imap, user, "[work] over managesieve", "Work")


def test_invalid_script_is_refused_with_the_compiler_message(world: World, tmp_path: Path) -> None:
    script = tmp_path / "bad.sieve"
    script.write_text('require "fileinto";\nfileinto2 "x";\n')
    upload = sieve_connect(world, "alice@example.com", "--localsieve", str(script),
                           "--remotesieve", "bad", "--upload")  # fmt: skip
    assert upload.returncode != 0
    assert "fileinto2" in upload.stderr
    assert "bad" not in [s.name for s in world.store.list_scripts("alice@example.com")]


def test_script_stored_with_the_cli_files_mail(world: World, tmp_path: Path) -> None:
    """`mailstack sieve put` finds the running server's datastore through MAILSTACK_ROOT."""
    user = "dave@example.com"
    script = tmp_path / "work.sieve"
    script.write_text(WORK_FILTER)
    env = {"PATH": world.server.env["PATH"], "MAILSTACK_ROOT": str(world.server.root)}
    put = subprocess.run(
        [*MAILSTACK, "sieve", "put", user, "work", str(script), "--activate"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    deliver(world.ports.smtp, "boss@remote.test", [user], "[work] via the cli")
    wait_for_subject(world.server, world.ports.imap, user, "[work] via the cli", "Work")
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nfileinto2 "x";\n')
    refused = subprocess.run(
        [*MAILSTACK, "sieve", "put", user, "bad", str(bad)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "fileinto2" in refused.stderr


# -- failures -----------------------------------------------------------------------------------


def test_store_outage_gives_4xx_at_the_mx_then_recovers(world: World) -> None:
    """While the datastore cannot answer, the MX defers (4xx): senders retry, nothing bounces."""
    with world.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE users RENAME TO users_away"))
        conn.execute(text("ALTER TABLE domains RENAME TO domains_away"))
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            deliver(world.ports.smtp, "a@remote.test", ["alice@example.com"], "during outage")
        code, reply = caught.value.recipients["alice@example.com"]
        assert 400 <= code < 500, reply
    finally:
        with world.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE users_away RENAME TO users"))
            conn.execute(text("ALTER TABLE domains_away RENAME TO domains"))

    def delivered() -> bool:
        # Postfix's address resolver keeps a failed answer for a few seconds (measured ~5 s)
        try:
            deliver(world.ports.smtp, "a@remote.test", ["alice@example.com"], "after outage")
        except smtplib.SMTPRecipientsRefused:
            return False
        return True

    wait_for(delivered, 60, "the MX to accept mail again")
    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "after outage")


def test_lookup_service_survives_garbage_on_its_sockets(world: World) -> None:
    run = world.server.root / "run/mailstack"
    for path, junk in [
        (run / "lookup/socketmap.sock", b"99999999999:" + b"x" * 5000),
        (run / "lookup/socketmap.sock", b"\xff\xfe:garbage,,,"),
        (run / "dict/dict.sock", b"\x00\x01 not a dict line\n" * 50),
    ]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    assert deliver(world.ports.smtp, "a@remote.test", ["bob@example.com"], "still here") == {}
    wait_for_subject(world.server, world.ports.imap, "bob@example.com", "still here")
    assert "worker exited" not in world.server.log


def worker_processes(server: MailServer) -> list[int]:
    """Pids of the server's Python worker (`python -m mailstack.worker`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mailstack.worker" in argv and str(server.root).encode() in b" ".join(argv):
            found.append(int(entry.name))
    return found


def dict_answers(path: Path) -> bool:
    """Whether the worker's dict socket takes a connection and answers a lookup."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(path))
            sock.sendall(b"H3\t2\t0\t\tmailstack\nLshared/userdb/alice@example.com\n")
            return sock.recv(4096)[:1] == b"O"
        except OSError:
            return False


def test_logins_work_at_once_after_the_worker_restarts(world: World) -> None:
    """Dovecot's auth process keeps its connection to the worker's dict between logins;
    when the worker dies and is started again, the very next login still works."""
    user = "carol@example.com"
    for _ in range(3):
        with imap_session(world.server, world.ports.imap, user, PASSWORD) as client:
            assert client.select("INBOX")[0] == "OK"
    (old,) = worker_processes(world.server)
    os.kill(old, signal.SIGKILL)
    wait_for(
        lambda: (
            worker_processes(world.server) not in ([], [old])
            and dict_answers(world.server.root / "run/mailstack/dict/dict.sock")
        ),
        30,
        "the worker to be started again",
    )
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as client:
        assert client.select("INBOX")[0] == "OK"
    with (
        pytest.raises(imaplib.IMAP4.error),
        imap_session(world.server, world.ports.imap, user, "not the password"),
    ):
        pass


def test_one_worker_runs_every_python_service_without_root(world: World) -> None:
    """Lookup and ManageSieve live in one process, which gave up root for 'mailstack' and
    owns the datastore; the database file is readable by nobody else."""
    import pwd

    account = pwd.getpwnam("mailstack")
    pids = worker_processes(world.server)
    assert len(pids) == 1, pids
    status = Path(f"/proc/{pids[0]}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert {int(uid) for uid in uids} == {account.pw_uid}
    database = world.server.database.stat()
    assert database.st_uid == account.pw_uid
    assert database.st_mode & 0o077 == 0
    # both services answer from that one process: ManageSieve logs in, the lookup delivers
    with socket.create_connection(("127.0.0.1", world.ports.managesieve), timeout=10) as sock:
        assert b"IMPLEMENTATION" in sock.recv(4096)
    assert deliver(world.ports.smtp, "a@remote.test", ["dave@example.com"], "via worker") == {}
    wait_for_subject(world.server, world.ports.imap, "dave@example.com", "via worker")


DICT_PROBE = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print("refused", exc.errno)
    raise SystemExit
sock.sendall(b"H3\t2\t0\t\tmailstack\nLshared/passdb/alice@example.com\n")
print(sock.recv(4096).decode()[:1])
"""


def test_password_hashes_are_out_of_reach_of_the_mail_processes(world: World) -> None:
    """The user that runs IMAP, LMTP and Sieve (vmail) cannot read a password hash: the
    auth dict's folder is closed to it, and the sieve dict it may use answers no passdb
    key. Dovecot's auth process still logs users in."""
    run = world.server.root / "run/mailstack"

    def as_vmail(socket_path: Path) -> str:
        result = subprocess.run(
            ["/usr/bin/python3", "-c", DICT_PROBE, str(socket_path)],
            user="vmail",
            group="vmail",
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert as_vmail(run / "dict/dict.sock") == "refused 13"  # EACCES
    assert as_vmail(run / "sieve-dict/dict.sock") == "N"  # not found, never the hash
    with imap_session(world.server, world.ports.imap, "carol@example.com", PASSWORD):
        pass


def test_health_reports_healthy_while_running_and_names_what_is_down(world: World) -> None:
    env = dict(world.server.env)
    healthy = subprocess.run(
        [*MAILSTACK, "health"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.strip() == "healthy"
    with private_root() as empty_root:
        env["MAILSTACK_ROOT"] = str(empty_root)
        env["MAILSTACK_LISTEN_SUBMISSION"] = f"127.0.0.1:{free_port()}"
        env["MAILSTACK_LISTEN_SMTP"] = f"127.0.0.1:{free_port()}"
        down = subprocess.run(
            [*MAILSTACK, "health"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert down.returncode == 1
    assert "no SMTP service" in down.stderr
    assert "lookup service not answering" in down.stderr
    assert "Dovecot LMTP has no socket" in down.stderr


def scrape(world: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{world.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_deliveries_and_watch_every_daemon(world: World) -> None:
    before = scrape(world).get(("mailstack_messages_sent_total", ()), 0.0)
    assert deliver(world.ports.smtp, "a@remote.test", ["carol@example.com"], "counted") == {}
    wait_for_subject(world.server, world.ports.imap, "carol@example.com", "counted")
    wait_for(
        lambda: scrape(world).get(("mailstack_messages_sent_total", ()), 0.0) >= before + 1,
        30,
        "the LMTP delivery to be counted",
    )
    samples = scrape(world)
    assert samples[("mailstack_messages_received_total", ())] >= 1
    for daemon in ("worker", "opendkim", "dovecot", "postfix"):
        assert samples[("mailstack_daemon_up", (("daemon", daemon),))] == 1.0
    info = [labels for name, labels in samples if name == "mailstack_info"]
    assert ("profile", "server") in info[0]


def test_metrics_show_when_the_certificate_expires(world: World) -> None:
    """Read from the certificate the listeners use (here the self-signed one)."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(world.server.certificate.read_bytes())
    expiry = [
        value
        for (name, labels), value in scrape(world).items()
        if name == "mailstack_tls_certificate_expiry_timestamp_seconds"
    ]
    assert expiry == [certificate.not_valid_after_utc.timestamp()]


def test_self_signed_certificate_is_made_with_a_warning(world: World) -> None:
    assert world.server.certificate.is_file()
    assert "made a self-signed one" in world.server.log


# -- settings and lifecycle (own server) --------------------------------------------------


def test_the_api_lists_the_queue_and_flushes_it() -> None:
    """Mail to a relay host that refuses connections waits in the queue: the admin API
    lists it, with Postfix's reason per recipient; once the relay host is up, a flush
    delivers it at once (the retry would be minutes away); user tokens get 403."""
    import httpx

    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            store.add_user("alice@example.com", PASSWORD)
            admin = {"Authorization": f"Bearer {store.create_token('ops')[1]}"}
            alice = {"Authorization": f"Bearer {store.create_token('a', 'alice@example.com')[1]}"}
        finally:
            store.close()
        ports = Ports()
        relay = free_port()
        env = server_env(root, ports, RELAYHOST=f"[127.0.0.1]:{relay}")  # nobody there yet
        with running_server(root, env) as server:
            with smtplib.SMTP("127.0.0.1", ports.submission, timeout=30) as client:
                client.starttls(context=server.tls_context())
                client.login("alice@example.com", PASSWORD)
                client.sendmail(
                    "alice@example.com",
                    ["far@remote.test"],
                    message("alice@example.com", "far@remote.test", "wait"),
                )
            base = f"https://127.0.0.1:{ports.https}/api/v1"
            with httpx.Client(base_url=base, verify=server.tls_context(), timeout=30) as api:

                def waiting() -> list[dict[str, Any]]:
                    answer = api.get("/queue", headers=admin)
                    assert answer.status_code == 200, answer.text
                    found: list[dict[str, Any]] = answer.json()
                    return [m for m in found if m["recipients"][0]["delay_reason"]]

                wait_for(lambda: bool(waiting()), 60, "the message deferred in the queue")
                [queued] = waiting()
                assert queued["sender"] == "alice@example.com"
                assert queued["recipients"][0]["address"] == "far@remote.test"
                assert "refused" in queued["recipients"][0]["delay_reason"]
                assert api.get("/queue", headers=alice).status_code == 403
                assert api.post("/queue/flush", headers=alice).status_code == 403

                with smtp_sink(relay) as sink:  # the relay host is back
                    assert api.post("/queue/flush", headers=admin).status_code == 204
                    [(_, delivered)] = sink.wait_messages(1, timeout=30)
                    assert delivered["Subject"] == "wait"
                wait_for(lambda: api.get("/queue", headers=admin).json() == [], 30, "empty")


def test_bad_server_settings_exit_78_naming_each_variable() -> None:
    with private_root() as root:
        env = server_env(
            root,
            Ports(),
            MAILSTACK_LISTEN_IMAP="not-an-address",
            MAILSTACK_TLS_CERT_FILE="/nonexistent/cert.pem",
            MAILSTACK_MAIL_USER="no-such-user-here",
        )
        result = subprocess.run(
            [*MAILSTACK, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 78, result.stdout + result.stderr
    output = result.stdout + result.stderr
    checked = subprocess.run(
        [*MAILSTACK, "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 78
    assert "error: MAILSTACK_LISTEN_IMAP" in checked.stderr
    for variable in ("MAILSTACK_LISTEN_IMAP", "MAILSTACK_TLS_KEY_FILE", "MAILSTACK_MAIL_USER"):
        assert variable in output


def test_unknown_profile_exits_78() -> None:
    result = subprocess.run(
        [*MAILSTACK, "run", "--profile", "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert "MAILSTACK_PROFILE" in result.stdout + result.stderr


def test_user_certificate_is_served_and_stop_is_clean(tmp_path: Path) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "mx.example.com")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    tmp_path.chmod(0o755)
    with private_root() as root:
        env = server_env(
            root, Ports(), MAILSTACK_TLS_CERT_FILE=str(cert), MAILSTACK_TLS_KEY_FILE=str(key)
        )
        server = MailServer(root, env)
        try:
            server.start(timeout=60)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            authority.configure_trust(context)  # trusts only the user's CA
            ports = [
                server.env["MAILSTACK_LISTEN_IMAPS"],
                server.env["MAILSTACK_LISTEN_SUBMISSIONS"],
            ]
            imaps, submissions = (int(p.rsplit(":", 1)[1]) for p in ports)
            client = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=context, timeout=30)
            client.logout()
            with smtplib.SMTP_SSL("127.0.0.1", submissions, context=context, timeout=30) as smtp:
                assert smtp.noop()[0] == 250
            assert not (root / "etc/mailstack/tls/cert.pem").exists()
            assert server.stop() == 0
            wait_for(lambda: "stopped" in server.log, 10, "the stop message")
        finally:
            server.cleanup()
