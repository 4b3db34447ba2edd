"""What outbound MTA-STS tests need: a loopback address of their own, an HTTPS policy host
on its port 443 with a private CA (trustme), and the worker's policy map.

The policy host answers by the Host header from `PolicyHost.pages`, which a test changes
while it runs (a policy replaced, a host gone). Everything started is stopped at the end of
its `with` block, also when the test fails.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme
from server_harness import stop_process, wait_for

#: (status, Content-Type, body) by host name
Page = tuple[int, str, bytes]


def loopback_address(port: int) -> str:
    """A 127.x.y.z address on which `port` is free (a privileged port: tests run as root)."""
    for _ in range(50):
        address = (
            f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        )
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return address
    raise AssertionError(f"no loopback address with port {port} free")


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {name}" for name in mx)]
    lines.append(f"max_age: {max_age}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class PolicyHost:
    address: str
    ca: trustme.CA
    ca_file: Path
    pages: dict[str, Page] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, domain: str, body: bytes, *, status: int = 200) -> None:
        self.pages[f"mta-sts.{domain}"] = (status, "text/plain; charset=utf-8", body)


@contextlib.contextmanager
def policy_host(folder: Path, names: list[str]) -> Iterator[PolicyHost]:
    """HTTPS on <a loopback address>:443 with a certificate for `names` from a new CA."""
    ca = trustme.CA()
    ca_file = folder / "policy-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    host = PolicyHost(loopback_address(443), ca, ca_file)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = (self.headers.get("Host") or "").split(":")[0]
            host.requests.append(f"{name}{self.path}")
            status, ctype, body = host.pages.get(name, (404, "text/plain", b"not here\n"))
            if self.path != "/.well-known/mta-sts.txt":
                status, ctype, body = 404, "text/plain", b"not here\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host.address, 443), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class PolicyMap:
    socket: Path
    cache: Path
    log: Path

    @property
    def table(self) -> str:
        return f"socketmap:unix:{self.socket}:mta-sts"


@contextlib.contextmanager
def policy_map(folder: Path, nameserver: str, ca_file: Path) -> Iterator[PolicyMap]:
    """`python -m mailstack.worker --mta-sts ...`: the worker with the policy map only."""
    found = PolicyMap(folder / "mta-sts.sock", folder / "mta-sts.json", folder / "worker.log")
    argv = [sys.executable, "-m", "mailstack.worker", "--mta-sts", str(found.socket)]
    argv += ["--mta-sts-cache", str(found.cache), "--mta-sts-ca-file", str(ca_file)]
    argv += ["--nameserver", nameserver, "--socket-mode", "666"]
    with found.log.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: found.socket.exists() or proc.poll() is not None, 30, "the map")
        assert proc.poll() is None, found.log.read_text()
        yield found
    finally:
        stop_process(proc)


def postmap(table: str, key: str, folder: Path) -> str | None:
    """`postmap -q KEY TABLE`: the value, or None when not found."""
    config = folder / "postfix"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("compatibility_level = 3.6\n")
    proc = subprocess.run(
        ["postmap", "-c", str(config), "-q", key, table],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: not found; anything else: an error
    return proc.stdout.strip() if proc.returncode == 0 else None
