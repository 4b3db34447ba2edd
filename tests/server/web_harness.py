"""A worker with its web listeners, and Pebble (with pebble-challtestsrv or a given server as
its DNS), run as real processes on loopback; every one is stopped when its context ends, also
on failure."""

from __future__ import annotations

import contextlib
import getpass
import json
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trustme
from cryptography import x509
from server_harness import stop_process
from tests.helpers import free_port, wait_for

from mailstack.acme.files import AcmeFiles
from mailstack.acme.setup import prepare_acme_folder
from mailstack.runtime.tls import self_signed_pair
from mailstack.store import MailStore


@dataclass
class Running:
    """A child process whose output lines are collected, so tests can wait for one."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def output(self) -> str:
        """Every line so far (waits consume none of them)."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return "".join(self.seen)

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first line (seen since the last wait) that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        tail = "".join(self.seen[-30:])
        raise AssertionError(f"no line matching {pattern!r}; last lines:\n{tail}")


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str] | None = None) -> Iterator[Running]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        yield Running(proc)
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        if proc.stdout is not None:
            proc.stdout.close()


def peer_certificate(
    port: int, context: ssl.SSLContext, name: str | None = None
) -> x509.Certificate:
    """The certificate a TLS listener on loopback presents to a client using `context`."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def store_with_user(root: Path, domain: str, user: str, password: str) -> None:
    """The server's datastore under `root` with one domain and one user."""
    store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
    try:
        store.add_domain(domain)
        store.add_user(user, password)
    finally:
        store.close()


def self_signed_acme_folder(folder: Path, name: str) -> AcmeFiles:
    """`folder/acme` as the server prepares it at its first start: the self-signed pair
    for `name` live, owned by the user running the tests."""
    cert, key = self_signed_pair(name)
    (folder / "self.pem").write_bytes(cert)
    (folder / "self.key").write_bytes(key)
    files = AcmeFiles(folder / "acme")
    prepare_acme_folder(files, (folder / "self.pem", folder / "self.key"), getpass.getuser())
    return files


def worker_argv(database: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "mailstack.worker", "--database", database, *options]


@dataclass(frozen=True)
class Pebble:
    directory: str
    ca_file: Path  # trust for Pebble's own HTTPS (made with trustme)
    management: str  # https://127.0.0.1:PORT: /roots/0 is the root that signs certificates
    process: Running | None = None

    def log(self) -> str:
        return self.process.output() if self.process else ""

    def issuing_root(self) -> str:
        """The PEM of the root Pebble signs with (a new one each run). Pebble logs that it
        listens a moment before its management listener accepts: asked until it answers."""
        trust = ssl.create_default_context(cafile=self.ca_file)
        answers: list[str] = []

        def fetched() -> bool:
            try:
                response = httpx.get(f"{self.management}/roots/0", verify=trust, timeout=10)
            except httpx.ConnectError:
                return False
            response.raise_for_status()
            answers.append(response.text)
            return True

        wait_for(fetched, 30, f"Pebble's management interface at {self.management}")
        return answers[0]


@contextlib.contextmanager
def pebble(folder: Path, http_port: int, dns_server: str | None = None) -> Iterator[Pebble]:
    """Pebble on loopback, validating HTTP-01 on `http_port` of the names it is asked for;
    every name resolves to 127.0.0.1 through pebble-challtestsrv's DNS (its own challenge
    servers are off: the answers come from the worker). With `dns_server` (host:port), its
    validation asks that server instead, for DNS-01 TXT records too."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    listen, management, dns = free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(cert_file),
            "privateKey": str(key_file),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    # no PEBBLE_VA_ALWAYS_VALID: the challenge is really fetched from the worker
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": "/usr/bin:/bin"}
    with contextlib.ExitStack() as stack:
        if dns_server is None:
            dns_argv = ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", ""]
            dns_argv += ["-https01", "", "-tlsalpn01", "", "-management"]
            dns_argv += [f"127.0.0.1:{free_port()}", "-defaultIPv4", "127.0.0.1"]
            resolver = stack.enter_context(running([*dns_argv, "-defaultIPv6", ""], env))
            resolver.wait_line(r"Starting challenge servers", 30)
            dns_server = f"127.0.0.1:{dns}"
        argv = ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", dns_server]
        server = stack.enter_context(running(argv, env))
        server.wait_line(r"ACME directory available", 30)
        yield Pebble(
            f"https://127.0.0.1:{listen}/dir",
            ca_file,
            f"https://127.0.0.1:{management}",
            server,
        )
