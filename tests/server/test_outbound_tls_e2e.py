"""Outbound MTA-STS and DANE through the real Postfix, end to end.

`mailstack run` (the relay profile delivering straight to the recipients' MXs, and once the
server profile) runs in a mount namespace of its own whose /etc/resolv.conf names the test's
DNS server on a loopback address's port 53, so Postfix's smtp client, its smtpd and the
worker resolve through it while the host's file stays as it is. Receiving MXs are aiosmtpd
servers with STARTTLS on their own loopback addresses' port 25; the MTA-STS policies come
from an HTTPS policy host.

- MTA-STS world: NSD answers plainly; Postfix trusts the test CA (POSTFIX_smtp_tls_CAfile).
- DANE world: a validating unbound answers from a zone dnspython signed, whose DS is its only
  trust anchor (MAILSTACK_DNSSEC_RESOLVER); Postfix trusts no test CA at all.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dns_world_harness import (
    MxHost,
    mx_host,
    private_resolv_conf,
    running_unbound,
    signed_zone,
    tlsa_3_1_1,
)
from mailserver import PASSWORD, MailServer, Ports, add_user, server_env
from mta_sts_harness import PolicyHost, loopback_address, policy_host, policy_text, postmap
from nsd_harness import running_nsd, zone
from server_harness import shared_tempdir
from tests.helpers import Relay, base_env, free_port, message, private_root, running_relay, wait_for

SENDER = "app@example.com"


@dataclass
class World:
    relay: Relay
    policies: PolicyHost
    mx: dict[str, MxHost]  # by recipient domain
    resolv_conf: str
    sender: str = SENDER

    def send(self, recipient: str) -> None:
        """To the relay's submission port; the server's, as a logged-in user."""
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=30) as client:
            if isinstance(self.relay, MailServer):
                client.starttls(context=self.relay.tls_context())
                client.login(self.sender, PASSWORD)
            client.sendmail(self.sender, [recipient], message(self.sender, recipient))

    def outcome(self, recipient: str) -> str:
        """Wait for Postfix's first delivery attempt to `recipient`: its status= word."""
        marker = f"to=<{recipient}>"

        def status() -> str | None:
            for line in self.relay.log.splitlines():
                if marker in line and "status=" in line:
                    return line.split("status=", 1)[1].split()[0]
            return None

        wait_for(lambda: status() is not None, 90, f"a delivery to {recipient}\n{self.relay.log}")
        found = status()
        assert found is not None
        return found

    def queued(self, recipient: str) -> dict[str, str] | None:
        """`postqueue -j`: the queue entry of `recipient` (queue name, delay reason)."""
        proc = subprocess.run(
            ["postqueue", "-c", str(self.relay.root / "etc/postfix"), "-j"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        for line in proc.stdout.splitlines():
            entry = json.loads(line)
            for item in entry["recipients"]:
                if item["address"] == recipient:
                    return {"queue": entry["queue_name"], "reason": item.get("delay_reason", "")}
        return None

    def lines_about(self, recipient: str) -> str:
        """The log lines of the queue entries that went to `recipient`."""
        log = self.relay.log.splitlines()
        ids = {line.split(": ")[0].split()[-1] for line in log if f"to=<{recipient}>" in line}
        return "\n".join(line for line in log if any(f"{qid}: " in line for qid in ids))

    def attempt(self, recipient: str) -> tuple[str, str]:
        """Send to `recipient` and wait for the first delivery attempt: (its status, the log
        lines about it)."""
        self.send(recipient)
        status = self.outcome(recipient)
        return status, self.lines_about(recipient)

    def held(self, recipient: str) -> tuple[str, str]:
        """Send to `recipient`; the attempt must be deferred and the message stay in the
        deferred queue. (`postqueue -j`'s delay reason, the log lines about it)"""
        status, lines = self.attempt(recipient)
        assert status == "deferred", lines
        # smtp logs the deferral before qmgr moves the file from the active queue.
        wait_for(
            lambda: (self.queued(recipient) or {}).get("queue") != "active",
            10,
            "the message to leave the active queue",
        )
        entry = self.queued(recipient)
        assert entry is not None, f"the message left the queue\n{lines}"
        assert entry["queue"] == "deferred", entry
        return entry["reason"], lines


def relay_env(root: Path, world_env: dict[str, str]) -> dict[str, str]:
    return base_env(root, free_port(), ALLOWED_SENDER_DOMAINS="example.com", **world_env)


def processes_of(root: Path) -> list[int]:
    """Process ids whose command line names `root` (the supervisor, the worker, Postfix)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# -- the MTA-STS world --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sts_world() -> Iterator[World]:
    """good.test: enforce, its MX's certificate valid for the allowed name; enforced.test:
    enforce, the MX's certificate for another name; testing.test: testing, the same."""
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(private_root())
        domains = ("good", "enforced", "testing")
        names = [f"mta-sts.{name}.test" for name in domains]
        policies = stack.enter_context(policy_host(root, names))
        ca, ca_file = policies.ca, policies.ca_file  # the policy host's CA signs the MXs too
        policies.serve("good.test", policy_text("enforce", "mx.good.test"))
        policies.serve("enforced.test", policy_text("enforce", "mx.enforced.test"))
        policies.serve("testing.test", policy_text("testing", "mx.testing.test"))
        mx = {
            "good.test": stack.enter_context(mx_host(ca, "mx.good.test")),
            "enforced.test": stack.enter_context(mx_host(ca, "wrong.invalid")),
            "testing.test": stack.enter_context(mx_host(ca, "wrong.invalid")),
        }
        body = ""
        for name in domains:
            body += f"{name} IN MX 10 mx.{name}\nmx.{name} IN A {mx[f'{name}.test'].address}\n"
            body += f'_mta-sts.{name} IN TXT "v=STSv1; id=1;"\n'
            body += f"mta-sts.{name} IN A {policies.address}\n"
        dns = stack.enter_context(
            running_nsd({"test": zone("test", body)}, loopback_address(53), 53)
        )
        launcher, resolv_conf = private_resolv_conf(root, dns.host)
        env = relay_env(
            root,
            {"MAILSTACK_MTA_STS_CA_FILE": str(ca_file), "POSTFIX_smtp_tls_CAfile": str(ca_file)},
        )
        relay = stack.enter_context(running_relay(root, env, launcher))
        yield World(relay, policies, mx, resolv_conf)


def test_the_server_sees_the_private_resolv_conf(sts_world: World) -> None:
    """Every process of the run reads the test's resolv.conf; the host's file is untouched."""
    pids = processes_of(sts_world.relay.root)
    master = sts_world.relay.root / "var/spool/postfix/pid/master.pid"
    pids.append(int(master.read_text().split()[0]))
    worker = [
        pid for pid in pids if b"mailstack.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert worker, "no worker runs"
    for pid in pids:
        assert Path(f"/proc/{pid}/root/etc/resolv.conf").read_text() == sts_world.resolv_conf
    assert Path("/etc/resolv.conf").read_text() != sts_world.resolv_conf


def test_enforce_with_a_valid_certificate_is_delivered_over_tls(sts_world: World) -> None:
    """(a) enforce, the MX's certificate valid for an allowed name: delivered, inside TLS."""
    status, lines = sts_world.attempt("user@good.test")
    assert status == "sent", lines
    received = sts_world.mx["good.test"].received("user@good.test")
    assert [item.tls for item in received] == [True]
    fetched = sts_world.policies.requests
    assert "mta-sts.good.test/.well-known/mta-sts.txt" in fetched, sts_world.relay.log
    assert "Verified TLS connection established to mx.good.test" in sts_world.relay.log


def test_enforce_with_a_certificate_for_another_name_stays_queued(sts_world: World) -> None:
    """(b) enforce, the MX's certificate is for another name: deferred, the MX gets nothing."""
    reason, lines = sts_world.held("user@enforced.test")
    assert reason == "Server certificate not verified", lines
    assert "certificate verification failed for mx.enforced.test" in lines
    assert sts_world.mx["enforced.test"].deliveries == [], lines


def test_testing_with_the_same_certificate_is_delivered(sts_world: World) -> None:
    """(c) testing, the same certificate for another name: delivered (over TLS, unverified)."""
    status, lines = sts_world.attempt("user@testing.test")
    assert status == "sent", lines
    assert [item.tls for item in sts_world.mx["testing.test"].received("user@testing.test")] == [
        True
    ]
    assert "mta-sts.testing.test/.well-known/mta-sts.txt" in sts_world.policies.requests
    assert sts_world.queued("user@testing.test") is None


# -- the DANE world -----------------------------------------------------------------------


@dataclass
class DaneDns:
    policies: PolicyHost
    mx: dict[str, MxHost]
    resolver: str  # the validating resolver's address (port 53)
    ca_file: Path  # the policy host's CA, which issued the MXs' certificates too

    def env(self) -> dict[str, str]:
        return {
            "MAILSTACK_DNSSEC_RESOLVER": self.resolver,
            "MAILSTACK_MTA_STS_CA_FILE": str(self.ca_file),
        }


@pytest.fixture(scope="module")
def dane_dns() -> Iterator[DaneDns]:
    """In the signed zone dane.test: ok (TLSA 3 1 1 of its MX's key), wrong (TLSA of another
    key), both (enforce policy whose mx its MX's certificate does not match, and TLSA of the
    key), stsonly (the same, without TLSA), half (the same policy, two MXs: ok's, which has
    TLSA, and stsonly's, which has none). In the unsigned plain.test: unsigned (enforce
    policy, TLSA of the key, no DNSSEC)."""
    with contextlib.ExitStack() as stack:
        root = shared_tempdir("mailstack-dane-")
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        with_policy = [f"{name}.dane.test" for name in ("both", "stsonly", "half")]
        with_policy.append("unsigned.plain.test")
        policies = stack.enter_context(policy_host(root, [f"mta-sts.{d}" for d in with_policy]))
        ca, ca_file = policies.ca, policies.ca_file  # trusted by the worker, not by Postfix
        for domain in with_policy:
            policies.serve(domain, policy_text("enforce", "mx.elsewhere.test"))
        mx = {
            f"{name}.dane.test": stack.enter_context(mx_host(ca, f"{name}.unrelated.invalid"))
            for name in ("ok", "wrong", "both", "stsonly")
        }
        mx["unsigned.plain.test"] = stack.enter_context(mx_host(ca, "unsigned.invalid"))
        other_key = tlsa_3_1_1(ca.issue_cert("other.invalid"))
        signed_body = unsigned_body = ""
        for domain, host in mx.items():
            label = domain.split(".")[0]
            record = f"{label} IN MX 10 mx-{label}\nmx-{label} IN A {host.address}\n"
            if label != "stsonly":
                key = other_key if label == "wrong" else host.tlsa_3_1_1()
                record += f"_25._tcp.mx-{label} IN TLSA 3 1 1 {key}\n"
            if domain in with_policy:
                record += f'_mta-sts.{label} IN TXT "v=STSv1; id=1;"\n'
                record += f"mta-sts.{label} IN A {policies.address}\n"
            if domain.endswith(".plain.test"):
                unsigned_body += record
            else:
                signed_body += record
        signed_body += "half IN MX 10 mx-ok\nhalf IN MX 20 mx-stsonly\n"
        signed_body += (
            f'_mta-sts.half IN TXT "v=STSv1; id=1;"\nmta-sts.half IN A {policies.address}\n'
        )
        signed = signed_zone("dane.test", signed_body)
        zones = {"dane.test": signed.text, "plain.test": zone("plain.test", unsigned_body)}
        zones["."] = zone("", "")  # the root: unbound asks nobody else
        upstream = stack.enter_context(running_nsd(zones))
        resolver = stack.enter_context(running_unbound(loopback_address(53), upstream, signed))
        yield DaneDns(policies, mx, resolver, ca_file)


@pytest.fixture(scope="module")
def dane_world(dane_dns: DaneDns) -> Iterator[World]:
    """The relay, delivering directly, asking the validating resolver."""
    with private_root() as root:
        launcher, resolv_conf = private_resolv_conf(root, dane_dns.resolver)
        env = relay_env(root, dane_dns.env())
        with running_relay(root, env, launcher) as relay:
            yield World(relay, dane_dns.policies, dane_dns.mx, resolv_conf)


def test_dane_with_a_matching_tlsa_record_is_delivered_verified(dane_world: World) -> None:
    """(d) TLSA 3 1 1 of the MX's key in the signed zone: delivered, the MX verified."""
    status, lines = dane_world.attempt("user@ok.dane.test")
    assert status == "sent", lines
    assert [item.tls for item in dane_world.mx["ok.dane.test"].received("user@ok.dane.test")] == [
        True
    ]
    assert "Verified TLS connection established to mx-ok.dane.test" in dane_world.relay.log


def test_dane_with_a_wrong_tlsa_record_stays_queued(dane_world: World) -> None:
    """(d) TLSA of another key: deferred, the MX gets nothing (never sent in clear)."""
    reason, lines = dane_world.held("user@wrong.dane.test")
    assert reason == "Server certificate not verified", lines
    assert "no matching DANE TLSA records" in lines
    assert dane_world.mx["wrong.dane.test"].deliveries == []


def test_dane_wins_over_an_enforce_policy(dane_world: World) -> None:
    """An enforce policy whose mx the MX's certificate does not match, and validated TLSA
    records of the MX's key: DANE decides (RFC 8461 section 2), the mail is delivered."""
    status, lines = dane_world.attempt("user@both.dane.test")
    assert status == "sent", lines
    received = dane_world.mx["both.dane.test"].received("user@both.dane.test")
    assert [item.tls for item in received] == [True]
    assert "Verified TLS connection established to mx-both.dane.test" in dane_world.relay.log
    assert "mta-sts.both.dane.test/.well-known/mta-sts.txt" in dane_world.policies.requests


def test_without_tlsa_the_enforce_policy_still_holds(dane_world: World) -> None:
    """The same enforce policy and certificate without TLSA records: MTA-STS defers it."""
    reason, lines = dane_world.held("user@stsonly.dane.test")
    assert reason == "Server certificate not verified", lines
    assert "certificate verification failed for mx-stsonly.dane.test" in lines
    assert dane_world.mx["stsonly.dane.test"].deliveries == []


def test_the_policy_map_answers_dane_only_for_validated_tlsa(dane_world: World) -> None:
    """What Postfix asks the map: `dane` where every MX has validated TLSA records; an
    unsigned zone's TLSA records (anyone on the path could forge them) keep MTA-STS."""
    table = f"socketmap:unix:{dane_world.relay.root}/run/mailstack/mta-sts/socketmap.sock:mta-sts"
    folder = dane_world.relay.root
    secure = "secure match=mx.elsewhere.test servername=hostname"
    assert postmap(table, "both.dane.test", folder) == "dane"
    assert postmap(table, "stsonly.dane.test", folder) == secure
    assert postmap(table, "half.dane.test", folder) == secure  # one MX without TLSA
    assert postmap(table, "unsigned.plain.test", folder) == secure
    assert postmap(table, "ok.dane.test", folder) is None  # no policy: Postfix's default, dane
    assert "both.dane.test: every MX has DNSSEC-validated TLSA records" in dane_world.relay.log


def test_a_dnssec_resolver_that_resolv_conf_does_not_list_stops_start_up() -> None:
    """Postfix would ask another server than the validating one: exit 78, the variable named."""
    with private_root() as root:
        launcher, _ = private_resolv_conf(root, "127.0.0.9")
        env = relay_env(root, {"MAILSTACK_DNSSEC_RESOLVER": "127.0.0.10"})
        relay = Relay(root, env, launcher)
        try:
            relay.start(wait=False)
            assert relay.wait_exit(60) == 78, relay.log
        finally:
            relay.cleanup()
        assert "MAILSTACK_DNSSEC_RESOLVER" in relay.log
        assert "(there: 127.0.0.9)" in relay.log


def test_the_server_profile_lets_dane_win_too(dane_dns: DaneDns) -> None:
    """`mailstack run --profile server`, a user sending through 587: the enforce domain with
    validated TLSA records gets the mail (DANE), the one without TLSA keeps it (MTA-STS)."""
    with private_root() as root:
        add_user(root, "alice@example.com")
        launcher, resolv_conf = private_resolv_conf(root, dane_dns.resolver)
        server = MailServer(root, server_env(root, Ports(), **dane_dns.env()), launcher)
        try:
            server.start(timeout=90)
            world = World(server, dane_dns.policies, dane_dns.mx, resolv_conf, "alice@example.com")
            status, lines = world.attempt("server@both.dane.test")
            assert status == "sent", lines
            received = dane_dns.mx["both.dane.test"].received("server@both.dane.test")
            assert [item.tls for item in received] == [True]
            assert "Verified TLS connection established to mx-both.dane.test" in server.log
            reason, lines = world.held("server@stsonly.dane.test")
            assert reason == "Server certificate not verified", lines
            assert dane_dns.mx["stsonly.dane.test"].received("server@stsonly.dane.test") == []
        finally:
            with contextlib.suppress(Exception):
                server.stop()
            server.cleanup()
