"""`mailstack dns --check` against a real authoritative name server.

NSD (Debian package `nsd`) runs in the foreground as root on 127.0.0.1 and a free high port,
with its configuration and zone files in a temp folder; the fixture stops it, also when the
test fails. The zone of the hosted domain is what `mailstack dns DOMAIN` prints, pasted under
an SOA; the server name's addresses and their PTR records live beside it, as they would in a
provider's zones. The command runs as an administrator runs it: the installed console script in
a subprocess, with MAILSTACK_ROOT pointing at a private root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nsd_harness import NameServer, running_nsd, zone

from mailstack.store import MailStore

MAILSTACK = Path(sys.executable).with_name("mailstack")
DOMAIN = "example.com"
SERVER = "mx.example.com"
ADDRESSES = ("192.0.2.25", "2001:db8::25")
SELECTOR = "s2025"
ENVIRONMENT = {
    "POSTFIX_myhostname": SERVER,
    "DKIM_SELECTOR": f"mail,{DOMAIN}={SELECTOR}",
    "MAILSTACK_LISTEN_IMAP": "",  # disabled: announced as not offered
    "MAILSTACK_LISTEN_SUBMISSIONS": "0.0.0.0:10465",
    "COLUMNS": "200",
}
DMARC = "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run(root: Path, *args: str) -> Result:
    """`mailstack ARGS` with the server's settings and nothing from the caller's install."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAILSTACK_", "POSTFIX_", "DKIM_")) and k != "HOSTNAME"
    }
    env.update(ENVIRONMENT, MAILSTACK_ROOT=str(root))
    proc = subprocess.run(
        [str(MAILSTACK), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def mail_root(tmp_path: Path) -> Path:
    """A datastore hosting example.com and its DKIM key, made by `mailstack dkim`."""
    root = tmp_path / "root"
    store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
    try:
        store.add_domain(DOMAIN)
    finally:
        store.close()
    generated = run(root, "dkim", "show", DOMAIN, "--generate")
    assert generated.code == 0, generated.err
    assert generated.out.startswith(f"name:  {SELECTOR}._domainkey.{DOMAIN}\n")
    return root


# -- the name server --------------------------------------------------------------------------


@pytest.fixture
def name_server() -> Iterator[Callable[[dict[str, str]], NameServer]]:
    """Start NSD for {zone name: zone text}; every one started is stopped at teardown."""
    with contextlib.ExitStack() as running:
        yield lambda zones: running.enter_context(running_nsd(zones))


def zones(domain_body: str) -> dict[str, str]:
    """The domain's zone with DOMAIN_BODY, the server's addresses, and the reverse zones."""
    v4, v6 = (ipaddress.ip_address(a) for a in ADDRESSES)
    return {
        DOMAIN: zone(
            DOMAIN,
            f"ns IN A 127.0.0.1\nmx IN A {v4}\nmx IN AAAA {v6}\n" + domain_body,
        ),
        "2.0.192.in-addr.arpa": zone(
            "2.0.192.in-addr.arpa", f"{v4.reverse_pointer}. IN PTR {SERVER}.\n"
        ),
        "8.b.d.0.1.0.0.2.ip6.arpa": zone(
            "8.b.d.0.1.0.0.2.ip6.arpa", f"{v6.reverse_pointer}. IN PTR {SERVER}.\n"
        ),
    }


def printed_zone(root: Path) -> str:
    result = run(root, "dns", DOMAIN)
    assert result.code == 0, result.err
    return result.out


def check_json(root: Path, server: NameServer) -> tuple[int, list[dict[str, Any]]]:
    result = run(root, "dns", DOMAIN, "--check", "--json", "--nameserver", server.address)
    rows = json.loads(result.out)
    assert isinstance(rows, list)
    return result.code, rows


def row_of(output: str, status: str, name: str) -> list[str]:
    """The status line naming NAME and the indented lines under it."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if fields and fields[0] == status and fields[-1] == name:
            block = [line]
            for following in lines[i + 1 :]:
                if not following.startswith(" "):
                    break
                block.append(following.strip())
            return block
    raise AssertionError(f"no {status} row for {name} in:\n{output}")


# -- the tests --------------------------------------------------------------------------------


def test_published_as_printed_every_record_is_ok(
    mail_root: Path, name_server: Callable[[dict[str, str]], NameServer]
) -> None:
    server = name_server(zones(printed_zone(mail_root)))

    result = run(mail_root, "dns", DOMAIN, "--check", "--nameserver", server.address)
    assert result.code == 0, result.out + result.err
    status_lines = result.out.splitlines()[1:-1]
    assert status_lines
    assert all(line.split()[0] == "ok" for line in status_lines), result.out
    assert (
        result.out.splitlines()[-1] == f"all {len(status_lines)} records are published as expected"
    )

    code, rows = check_json(mail_root, server)
    assert code == 0
    assert {row["status"] for row in rows} == {"ok"}
    found = {(row["purpose"], row["type"], row["name"]): row for row in rows}
    assert set(found) == {
        ("MX", "MX", DOMAIN),
        ("SPF", "TXT", DOMAIN),
        ("DKIM", "TXT", f"{SELECTOR}._domainkey.{DOMAIN}"),
        ("DMARC", "TXT", f"_dmarc.{DOMAIN}"),
        ("MTA-STS", "TXT", f"_mta-sts.{DOMAIN}"),
        ("MTA-STS", "CNAME", f"mta-sts.{DOMAIN}"),
        ("TLS-RPT", "TXT", f"_smtp._tls.{DOMAIN}"),
        ("autoconfig", "CNAME", f"autoconfig.{DOMAIN}"),
        ("autodiscover", "CNAME", f"autodiscover.{DOMAIN}"),
        ("SRV", "SRV", f"_imaps._tcp.{DOMAIN}"),
        ("SRV", "SRV", f"_imap._tcp.{DOMAIN}"),
        ("SRV", "SRV", f"_submissions._tcp.{DOMAIN}"),
        ("SRV", "SRV", f"_submission._tcp.{DOMAIN}"),
        ("server", "A/AAAA", SERVER),
        *(("PTR", "PTR", ipaddress.ip_address(a).reverse_pointer) for a in ADDRESSES),
    }
    # the real listeners: submissions moved to 10465, IMAP without TLS switched off
    assert found[("SRV", "SRV", f"_submissions._tcp.{DOMAIN}")]["found"] == [f"0 1 10465 {SERVER}."]
    assert found[("SRV", "SRV", f"_imap._tcp.{DOMAIN}")]["expected"] == "0 0 0 ."
    # the 2048-bit key travels as two strings and is compared joined
    dkim = found[("DKIM", "TXT", f"{SELECTOR}._domainkey.{DOMAIN}")]
    assert dkim["found"] == [dkim["expected"]]
    assert sorted(found[("server", "A/AAAA", SERVER)]["found"]) == sorted(ADDRESSES)


def test_a_missing_and_a_wrong_record_are_named_with_the_expected_value(
    mail_root: Path, name_server: Callable[[dict[str, str]], NameServer]
) -> None:
    dkim_name = f"{SELECTOR}._domainkey.{DOMAIN}."
    other_key = "v=DKIM1; k=rsa; p=MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf"
    lines = []
    for line in printed_zone(mail_root).splitlines():
        if line.startswith(f"_dmarc.{DOMAIN}."):
            continue  # missing
        if line.startswith(dkim_name):
            line = f'{dkim_name} IN TXT "{other_key}"'  # wrong: another key
        lines.append(line)
    server = name_server(zones("\n".join(lines) + "\n"))

    result = run(mail_root, "dns", DOMAIN, "--check", "--nameserver", server.address)
    assert result.code == 1, result.out + result.err
    assert row_of(result.out, "missing", f"_dmarc.{DOMAIN}")[1:] == [
        f"expected: {DMARC}",
        "the name does not exist",
    ]
    wrong = row_of(result.out, "wrong", dkim_name.rstrip("."))
    assert wrong[1].startswith("expected: v=DKIM1; h=sha256; k=rsa; s=email; p=MIIBIjAN")
    assert wrong[2:] == [f"found:    {other_key}", "the p= key is not this server's key"]
    assert result.out.splitlines()[-1].startswith("2 of ")

    code, rows = check_json(mail_root, server)
    assert code == 1
    failed = {row["name"]: row for row in rows if row["status"] != "ok"}
    assert set(failed) == {f"_dmarc.{DOMAIN}", dkim_name.rstrip(".")}
    assert failed[f"_dmarc.{DOMAIN}"]["status"] == "missing"
    assert failed[f"_dmarc.{DOMAIN}"]["expected"] == DMARC
    assert failed[dkim_name.rstrip(".")]["status"] == "wrong"
    assert failed[dkim_name.rstrip(".")]["found"] == [other_key]


def test_a_second_spf_record_is_wrong(
    mail_root: Path, name_server: Callable[[dict[str, str]], NameServer]
) -> None:
    body = printed_zone(mail_root) + f'{DOMAIN}. IN TXT "v=spf1 a -all"\n'
    server = name_server(zones(body))
    code, rows = check_json(mail_root, server)
    assert code == 1
    (spf,) = [row for row in rows if row["purpose"] == "SPF"]
    assert spf["status"] == "wrong"
    assert sorted(spf["found"]) == ["v=spf1 a -all", "v=spf1 mx -all"]
    assert "RFC 7208" in spf["detail"]
    assert {row["status"] for row in rows if row["purpose"] != "SPF"} == {"ok"}


def test_a_domain_not_hosted_and_a_bad_nameserver_are_refused(mail_root: Path) -> None:
    result = run(mail_root, "dns", "example.org", "--check", "--nameserver", "127.0.0.1:53")
    assert (result.code, result.out) == (1, "")
    assert result.err.strip() == "error: domain example.org is not hosted here"

    result = run(mail_root, "dns", DOMAIN, "--check", "--nameserver", "ns.example.com")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("error: --nameserver: ")
