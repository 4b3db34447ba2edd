"""Outbound MTA-STS: the worker's policy map answered to Postfix's own client.

A private NSD serves the `_mta-sts` TXT records and the policy hosts' addresses, an HTTPS
server on a loopback address's port 443 serves the policies with a certificate from a test
CA, and `postmap -q DOMAIN socketmap:unix:...:mta-sts` asks the worker as Postfix's smtp
client would (`smtp_tls_policy_maps`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mta_sts_harness import PolicyHost, PolicyMap, policy_host, policy_map, policy_text, postmap
from nsd_harness import running_nsd, zone
from server_harness import shared_tempdir

DOMAINS = ("enforce", "testing", "none", "failing", "redirect", "html", "badcert", "garbled")
ENFORCE_ANSWER = "secure match=mx1.enforce.test:.mail.enforce.test servername=hostname"


def policy_zone(address: str, record_id: str = "1") -> dict[str, str]:
    """`<name>.test` for each of DOMAINS publishes a record and a policy host; `norecord.test`
    has a policy host but no record; `badcert.test`'s host is not in the certificate."""
    body = "".join(
        f'_mta-sts.{name} IN TXT "v=STSv1; id={record_id};"\nmta-sts.{name} IN A {address}\n'
        for name in (*DOMAINS, "cached")
    )
    body += f"mta-sts.norecord IN A {address}\n"
    return {"test": zone("test", body)}


@pytest.fixture
def folder() -> Iterator[Path]:
    path = shared_tempdir("mailstack-mta-sts-")
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def host(folder: Path) -> Iterator[PolicyHost]:
    names = [f"mta-sts.{name}.test" for name in (*DOMAINS, "cached", "norecord")]
    names.remove("mta-sts.badcert.test")
    with policy_host(folder, names) as running:
        running.serve(
            "enforce.test", policy_text("enforce", "mx1.enforce.test", "*.mail.enforce.test")
        )
        running.serve("testing.test", policy_text("testing", "mx.testing.test"))
        running.serve("none.test", policy_text("none"))
        running.serve("norecord.test", policy_text("enforce", "mx.norecord.test"))
        running.serve("failing.test", b"gone\n", status=404)
        running.serve("badcert.test", policy_text("enforce", "mx.badcert.test"))
        running.serve("garbled.test", b"version: STSv1\r\nmode: enforce\r\nmx mx.garbled.test\r\n")
        running.pages["mta-sts.redirect.test"] = (301, "text/plain", b"")
        running.pages["mta-sts.html.test"] = (
            200,
            "text/html",
            policy_text("enforce", "mx.html.test"),
        )
        yield running


@pytest.fixture
def running_map(folder: Path, host: PolicyHost) -> Iterator[PolicyMap]:
    with (
        running_nsd(policy_zone(host.address)) as dns,
        policy_map(folder, dns.address, host.ca_file) as running,
    ):
        yield running


def test_enforce_answers_secure_with_the_mx_patterns(running_map: PolicyMap, folder: Path) -> None:
    """An enforce policy: TLS required, certificate valid for an allowed MX, SNI sent."""
    assert postmap(running_map.table, "enforce.test", folder) == ENFORCE_ANSWER
    # the next-hop of a transport with a port names the same domain
    assert postmap(running_map.table, "enforce.test:2525", folder) == ENFORCE_ANSWER
    assert postmap(running_map.table, "ENFORCE.test", folder) == ENFORCE_ANSWER


@pytest.mark.parametrize("name", ["testing", "none", "norecord"])
def test_testing_none_and_no_record_leave_the_default(
    running_map: PolicyMap, host: PolicyHost, folder: Path, name: str
) -> None:
    """testing, none and no record at all: nothing, so Postfix's default level applies."""
    assert postmap(running_map.table, f"{name}.test", folder) is None
    fetched = f"mta-sts.{name}.test/.well-known/mta-sts.txt" in host.requests
    assert fetched == (name != "norecord")  # no record: the policy host is never asked


@pytest.mark.parametrize("name", ["failing", "redirect", "html", "badcert", "garbled"])
def test_a_failed_fetch_without_cache_is_no_policy(
    running_map: PolicyMap, folder: Path, name: str
) -> None:
    """404, a redirect (not followed), text/html, a certificate not for the policy host, a
    malformed policy: no policy (RFC 8461 5.1), and the log says why."""
    assert postmap(running_map.table, f"{name}.test", folder) is None
    log = running_map.log.read_text()
    assert f"MTA-STS {name}.test: policy fetch failed" in log
    assert "no policy applies" in log


def test_host_next_hops_and_other_maps_are_not_found(
    running_map: PolicyMap, host: PolicyHost, folder: Path
) -> None:
    """`[host]:port` names a host, not a policy domain; other map names answer nothing."""
    assert postmap(running_map.table, "[mx1.enforce.test]:25", folder) is None
    assert postmap(running_map.table, "127.0.0.1", folder) is None
    other = running_map.table.replace(":mta-sts", ":domain")
    assert postmap(other, "enforce.test", folder) is None
    assert host.requests == []


def test_cached_policy_survives_restart_and_failed_refetch(folder: Path, host: PolicyHost) -> None:
    """A fetched policy is kept on disk; after a restart, with the record's id changed and
    the policy host failing, the cached enforce policy still applies (no downgrade)."""
    host.serve("cached.test", policy_text("enforce", "mx.cached.test", max_age=31557600))
    with (
        running_nsd(policy_zone(host.address)) as dns,
        policy_map(folder, dns.address, host.ca_file) as first,
    ):
        answer = postmap(first.table, "cached.test", folder)
    assert answer == "secure match=mx.cached.test servername=hostname"
    saved = json.loads(first.cache.read_text())
    assert saved["cached.test"]["id"] == "1"
    # two days pass: the record is due for a check; the id changed and the host fails
    saved["cached.test"]["fetched"] -= 2 * 86400
    saved["cached.test"]["checked"] -= 2 * 86400
    first.cache.write_text(json.dumps(saved))
    host.serve("cached.test", b"broken\n", status=500)
    asked = host.requests.count("mta-sts.cached.test/.well-known/mta-sts.txt")
    with (
        running_nsd(policy_zone(host.address, record_id="2")) as dns,
        policy_map(folder, dns.address, host.ca_file) as second,
    ):
        assert postmap(second.table, "cached.test", folder) == answer
        log = second.log.read_text()
    assert host.requests.count("mta-sts.cached.test/.well-known/mta-sts.txt") == asked + 1
    assert "MTA-STS cached.test: policy fetch failed" in log
    assert "using the cached policy (mode enforce)" in log
    assert json.loads(second.cache.read_text())["cached.test"]["fetched"] < time.time() - 86400
