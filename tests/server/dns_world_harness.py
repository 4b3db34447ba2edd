"""A private DNS world for Postfix's smtp client, and receiving MXs with STARTTLS.

Postfix looks MX, A and TLSA records up only through /etc/resolv.conf (port 53, no setting
of its own). `private_resolv_conf` gives the argv prefix that runs a command in a mount
namespace of its own (util-linux `unshare --mount`, mounts private) where /etc/resolv.conf
is a bind mount of a temp file naming one loopback address: the host's file is never
touched, and the namespace ends with the last process in it. The test's name server
listens on that address's port 53: NSD for plain answers, or unbound validating a zone that
dnspython signed, with the zone's DS as its only trust anchor (DANE).

Unbound asks nothing outside the machine: NSD serves it the root zone too (a stub for `.`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.zone
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mta_sts_harness import loopback_address
from nsd_harness import NameServer, zone
from server_harness import stop_process, wait_for

#: mount the temp file over /etc/resolv.conf, then become the command
_BIND_AND_EXEC = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


def private_resolv_conf(folder: Path, nameserver: str) -> tuple[list[str], str]:
    """(argv prefix, file text): the prefix runs a command where /etc/resolv.conf lists
    `nameserver` alone."""
    text = f"nameserver {nameserver}\n"
    conf = folder / "resolv.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    return [*prefix, _BIND_AND_EXEC, str(conf)], text


# -- a zone signed with dnspython ---------------------------------------------------------


@dataclass(frozen=True)
class SignedZone:
    origin: str
    text: str
    ds: str  # the DS record, as unbound's `trust-anchor:` takes it


def signed_zone(origin: str, body: str) -> SignedZone:
    """`zone(origin, body)` signed with a new ECDSA P-256 key (NSEC, signatures valid from an
    hour ago for a day)."""
    parsed = dns.zone.from_text(zone(origin, body), origin=f"{origin}.", relativize=False)
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, 257)
    now = datetime.datetime.now(datetime.UTC)
    with parsed.writer() as txn:
        dns.dnssec.sign_zone(
            parsed,
            txn,
            keys=[(key, dnskey)],
            inception=now - datetime.timedelta(hours=1),
            expiration=now + datetime.timedelta(days=1),
        )
    ds = dns.dnssec.make_ds(f"{origin}.", dnskey, "SHA256")
    return SignedZone(origin, parsed.to_text(relativize=False), f"{origin}. IN DS {ds}")


# -- unbound, validating -------------------------------------------------------------------

UNBOUND_CONF = """\
server:
    interface: {address}
    port: 53
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{folder}"
    pidfile: "{folder}/unbound.pid"
    logfile: "{folder}/unbound.log"
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
    trust-anchor: "{anchor}"
stub-zone:
    name: "."
    stub-addr: {upstream}
    stub-prime: no
remote-control:
    control-enable: no
"""


def answers_with_ad(host: str, name: str) -> bool:
    query = dns.message.make_query(name, "SOA", want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        reply = dns.query.udp(query, host, port=53, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return bool(reply.flags & dns.flags.AD) and bool(reply.answer)


@contextlib.contextmanager
def running_unbound(address: str, upstream: NameServer, signed: SignedZone) -> Iterator[str]:
    """unbound on address:53, asking `upstream` (which serves the root zone and `signed`)
    for everything, with `signed`'s DS as the only trust anchor. Yields the address once it
    answers `signed`'s SOA validated (the AD bit)."""
    unbound = shutil.which("unbound") or "/usr/sbin/unbound"
    assert Path(unbound).exists(), "unbound is not installed: scripts/install.sh --test"
    folder = Path(tempfile.mkdtemp(prefix="mailstack-unbound-"))
    conf = folder / "unbound.conf"
    conf.write_text(
        UNBOUND_CONF.format(
            address=address,
            folder=folder,
            anchor=signed.ds,
            upstream=f"{upstream.host}@{upstream.port}",
        )
    )
    log = folder / "unbound.log"
    proc = subprocess.Popen(
        [unbound, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        try:
            wait_for(
                lambda: proc.poll() is not None or answers_with_ad(address, f"{signed.origin}."),
                30,
                "unbound",
            )
        except AssertionError:
            text = log.read_text() if log.exists() else ""
            raise AssertionError(f"unbound did not validate {signed.origin}: {text}") from None
        if proc.poll() is not None:
            raise AssertionError(f"unbound exited with {proc.returncode}: {log.read_text()}")
        yield address
    finally:
        stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)


# -- receiving MXs ----------------------------------------------------------------------------


@dataclass
class Delivery:
    recipients: list[str]
    tls: bool  # the message came after STARTTLS


@dataclass
class MxHost:
    """An MX on <its own loopback address>:25 offering STARTTLS with `cert`."""

    address: str
    cert: trustme.LeafCert
    deliveries: list[Delivery] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls = session.ssl is not None
        self.deliveries.append(Delivery(list(envelope.rcpt_tos), tls))
        return "250 2.0.0 accepted by the MX"

    def tlsa_3_1_1(self) -> str:
        """The TLSA `3 1 1` data for this MX: the SHA-256 of its public key (SPKI)."""
        return tlsa_3_1_1(self.cert)

    def received(self, recipient: str) -> list[Delivery]:
        return [item for item in self.deliveries if recipient in item.recipients]


def tlsa_3_1_1(cert: trustme.LeafCert) -> str:
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@contextlib.contextmanager
def mx_host(ca: trustme.CA, *names: str) -> Iterator[MxHost]:
    """An MX whose certificate (from `ca`) is valid for `names`; it takes mail with or
    without TLS and records which."""
    cert = ca.issue_cert(*names)
    host = MxHost(loopback_address(25), cert)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    controller = Controller(
        host, hostname=host.address, port=25, tls_context=context, server_hostname=names[0]
    )
    controller.start()
    try:
        yield host
    finally:
        controller.stop()


def tlsa_record(owner: str, data: str) -> str:
    """A zone line: TLSA `3 1 1 data` for SMTP on `owner` (a host name relative to the zone)."""
    return f"_25._tcp.{owner} IN TLSA 3 1 1 {data}\n"
