"""DKIM key rotation on a running server: real Postfix, Dovecot and OpenDKIM, a real name
server (NSD) publishing the records, dkimpy verifying the mail that leaves against it.

The admin commands run as an administrator runs them on the server: the console script in a
subprocess, with the server's environment. Each published state of the zone is its own NSD
(started and stopped by `running_nsd`), so what `activate` and dkimpy see is exactly what the
test published.
"""

from __future__ import annotations

import email
import json
import os
import re
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdtypes.txtbase
import httpx
import pytest
from mailserver import PASSWORD, MailServer, Ports, message, running_server, server_env
from nsd_harness import NameServer, running_nsd, zone
from tests.helpers import MAILSTACK, Sink, private_root, smtp_sink
from web_harness import store_with_user

from mailstack.dns.records import txt_strings

DOMAIN = "example.com"
USER = f"alice@{DOMAIN}"


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    ports: Ports
    sink: Sink

    @property
    def keys(self) -> Path:
        return self.root / "etc/opendkim/keys"

    @property
    def opendkim(self) -> Path:
        return self.root / "etc/opendkim"


@pytest.fixture
def setup() -> Iterator[Setup]:
    """A server root hosting example.com with one user, relaying to a sink; not started."""
    with private_root() as root, smtp_sink() as sink:
        store_with_user(root, DOMAIN, USER, PASSWORD)
        ports = Ports()
        env = server_env(root, ports, RELAYHOST=f"[127.0.0.1]:{sink.port}")
        yield Setup(root, env, ports, sink)


def admin(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """`mailstack ARGS` as root on the server, with its environment."""
    env = {**setup.env, "PATH": os.environ["PATH"], "COLUMNS": "200"}
    result = subprocess.run(
        [*MAILSTACK, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def shown(setup: Setup) -> dict[str, tuple[str, str]]:
    """`mailstack dkim show`, read as a DNS operator would: selector -> (value, state)."""
    result = admin(setup, "dkim", "show", DOMAIN)
    assert result.returncode == 0, result.stderr
    records = {}
    for block in result.stdout.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines())
        name = fields["name"].strip()
        assert name.endswith(f"._domainkey.{DOMAIN}"), name
        selector = name.removesuffix(f"._domainkey.{DOMAIN}")
        records[selector] = (fields["value"].strip(), fields["state"].strip())
    return records


def published(records: dict[str, str]) -> dict[str, str]:
    """The example.com zone with a DKIM TXT record per {selector: value}."""
    body = "ns IN A 127.0.0.1\n" + "".join(
        f"{selector}._domainkey IN TXT {' '.join(txt_strings(value))}\n"
        for selector, value in records.items()
    )
    return {DOMAIN: zone(DOMAIN, body)}


def send(setup: Setup, server: MailServer, subject: str) -> bytes:
    """alice submits on 587; the message as the next hop received it."""
    before = len(setup.sink.messages)
    with smtplib.SMTP("127.0.0.1", setup.ports.submission, timeout=30) as client:
        client.starttls(context=server.tls_context())
        client.login(USER, PASSWORD)
        client.sendmail(USER, ["friend@remote.test"], message(USER, "friend@remote.test", subject))
    envelope, msg = setup.sink.wait_messages(before + 1)[-1]
    assert msg["Subject"] == subject
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    return raw


def signed_selector(raw: bytes) -> str:
    """The s= tag of the message's one DKIM-Signature."""
    signatures = email.message_from_bytes(raw).get_all("DKIM-Signature") or []
    assert len(signatures) == 1, signatures
    found = re.search(r"(?:^|;)\s*s=([^;\s]+)", "".join(str(signatures[0]).split()))
    assert found is not None, signatures
    return found[1]


def verifies(raw: bytes, name_server: NameServer) -> bool:
    """dkimpy's verdict, its DNS questions answered by the name server."""

    def txt(name: bytes, timeout: int = 5) -> bytes:
        query = dns.message.make_query(name.decode(), "TXT")
        reply = dns.query.udp(query, "127.0.0.1", port=name_server.port, timeout=timeout)
        return b"".join(
            b"".join(rdata.strings)
            for rrset in reply.answer
            for rdata in rrset
            if isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
        )

    return bool(dkim.verify(raw, dnsfunc=txt))


def signing_table(setup: Setup) -> str:
    return (setup.opendkim / "SigningTable").read_text()


def test_a_rotated_key_signs_only_once_activated_and_retiring_removes_the_old_one(
    setup: Setup,
) -> None:
    """rotate -> the old key still signs; activate is refused until DNS has the new record,
    then the new key signs without a restart; retire removes the old key; a restart keeps
    it all."""
    with running_server(setup.root, setup.env) as server:
        old_value, old_state = shown(setup)["mail"]
        assert old_state == "active"

        rotated = admin(setup, "dkim", "rotate", DOMAIN)
        assert rotated.returncode == 0, rotated.stderr
        new = re.search(r"^name:  (\S+)\._domainkey\.", rotated.stdout, re.M)
        assert new is not None, rotated.stdout
        selector = new[1]
        assert re.fullmatch(r"ms\d{6}", selector), selector
        records = shown(setup)
        new_value = records[selector][0]
        assert records["mail"] == (old_value, "active")
        assert records[selector][1].startswith("pending")
        assert f"value: {new_value}" in rotated.stdout

        with running_nsd(published({"mail": old_value})) as old_dns:
            raw = send(setup, server, "before activation")
            assert signed_selector(raw) == "mail"
            assert verifies(raw, old_dns)
            missing = admin(
                setup, "dkim", "activate", DOMAIN, selector, "--nameserver", old_dns.address
            )
        assert missing.returncode == 1
        assert f"the DKIM record {selector}._domainkey.{DOMAIN} is not published" in missing.stderr
        assert new_value in missing.stderr  # what to publish

        with running_nsd(published({"mail": old_value, selector: old_value})) as wrong_dns:
            wrong = admin(
                setup, "dkim", "activate", DOMAIN, selector, "--nameserver", wrong_dns.address
            )
        assert wrong.returncode == 1
        assert "wrong: the p= key is not this server's key" in wrong.stderr
        assert shown(setup)[selector][1].startswith("pending")  # refused: nothing changed
        assert f"mail._domainkey.{DOMAIN}" in signing_table(setup)

        with running_nsd(published({"mail": old_value, selector: new_value})) as both:
            activated = admin(
                setup, "dkim", "activate", DOMAIN, selector, "--nameserver", both.address
            )
            assert activated.returncode == 0, activated.stderr
            assert "the running OpenDKIM has read its tables again" in activated.stdout
            raw = send(setup, server, "after activation")
            assert signed_selector(raw) == selector
            assert verifies(raw, both)

            records = shown(setup)
            assert records[selector] == (new_value, "active")
            assert records["mail"][1].startswith("retiring since")
            checked = admin(setup, "dns", DOMAIN, "--check", "--json", "--nameserver", both.address)
            dkim_rows = {
                r["name"]: r["status"] for r in json.loads(checked.stdout) if r["purpose"] == "DKIM"
            }
            assert dkim_rows == {
                f"mail._domainkey.{DOMAIN}": "ok",
                f"{selector}._domainkey.{DOMAIN}": "ok",
            }
        # the API (the unprivileged worker) gives the record that signs now
        token = admin(setup, "token", "create", "ops").stdout.split()[-1]
        api = f"https://127.0.0.1:{setup.ports.https}/api/v1/domains/{DOMAIN}/dkim"
        headers = {"Authorization": f"Bearer {token}"}
        record = httpx.get(api, headers=headers, verify=server.tls_context(), timeout=30)
        assert record.status_code == 200, record.text
        assert (record.json()["selector"], record.json()["value"]) == (selector, new_value)

        zone_text = admin(setup, "dns", DOMAIN).stdout
        assert "; DKIM: retiring since" in zone_text
        assert f"{selector}._domainkey.{DOMAIN}." in zone_text
        assert f"mail._domainkey.{DOMAIN}." in zone_text
        assert f"{selector}._domainkey.{DOMAIN}" in signing_table(setup)
        assert f"mail._domainkey.{DOMAIN}" not in signing_table(setup)

        early = admin(setup, "dkim", "retire", DOMAIN, "mail")
        assert early.returncode == 1
        assert "mail it signed may still be on its way" in early.stderr
        assert (setup.keys / f"{DOMAIN}.private").exists()

        retired = admin(setup, "dkim", "retire", DOMAIN, "mail", "--force")
        assert retired.returncode == 0, retired.stderr
        assert not (setup.keys / f"{DOMAIN}.private").exists()
        assert not (setup.keys / f"{DOMAIN}.txt").exists()
        assert list(shown(setup)) == [selector]
        key_table = (setup.opendkim / "KeyTable").read_text()
        assert "mail._domainkey" not in key_table
        assert f"mail._domainkey.{DOMAIN}" not in admin(setup, "dns", DOMAIN).stdout

        again = admin(setup, "dkim", "rotate", DOMAIN, "--selector", "next")
        assert again.returncode == 0, again.stderr

    # the state is on the volume: a new start signs with the active key, keeps the pending
    # one pending, and does not make a `<domain>.private` again
    with running_server(setup.root, setup.env) as server:
        assert {s: state.split()[0] for s, (_, state) in shown(setup).items()} == {
            selector: "active",
            "next": "pending:",
        }
        assert not (setup.keys / f"{DOMAIN}.private").exists()
        with running_nsd(published({selector: new_value})) as after:
            raw = send(setup, server, "after a restart")
            assert signed_selector(raw) == selector
            assert verifies(raw, after)
