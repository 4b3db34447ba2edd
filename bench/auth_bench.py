"""What a failed IMAP login costs, and whether it tells anything: app passwords and TOTP.

    .venv/bin/python -m bench.auth_bench [--rounds 12]

Starts `mailstack run --profile server` (loopback high ports, a temporary root) with four
users: one plain, one with five app passwords, one with TOTP on, and one whose wrong
password will start with a real app password's ident (so Dovecot's second passdb runs a
second Argon2 verification). Then, round-robin so drift hits every kind alike, it times
IMAP LOGIN (after STARTTLS) for a wrong password of each, for an unknown user, and for a
right app password; every attempt comes from a fresh loopback source address (127.0.x.y),
so Dovecot's per-address auth penalty stays out of these numbers. Last, it sends five wrong
app passwords, then five wrong account passwords, from one address each, to show that the
penalty still grows. Results go to bench/results/auth.json and .md.
"""

from __future__ import annotations

import argparse
import imaplib
import itertools
import json
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# the server tests' harness starts and stops the whole stack (tests/server/mailserver.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "server"))

from mailserver import Ports, running_server, server_env
from tests.helpers import private_root

from mailstack import totp
from mailstack.store import MailStore
from mailstack.store.security import AccountSecurity

RESULTS = Path(__file__).parent / "results"
PASSWORD = "bench password 1"  # noqa: S105 - throwaway accounts in a temp folder
WRONG = "not the password at all"


class SourcedIMAP(imaplib.IMAP4):
    """IMAP4 from a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=60)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def sources() -> Iterator[str]:
    for a, b in itertools.product(range(1, 255), range(1, 255)):
        yield f"127.0.{a}.{b}"


def login_time(
    port: int, source: str, tls: ssl.SSLContext, user: str, password: str
) -> tuple[float, bool]:
    client = SourcedIMAP(port, source)
    try:
        client.starttls(tls)
        started = time.perf_counter()
        try:
            client.login(user, password)
            ok = True
        except imaplib.IMAP4.error:
            ok = False
        return time.perf_counter() - started, ok
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "n": len(ordered),
        "min": round(ordered[0], 3),
        "median": round(statistics.median(ordered), 3),
        "max": round(ordered[-1], 3),
        "stdev": round(statistics.pstdev(ordered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    options = parser.parse_args()
    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        security = AccountSecurity(store)
        store.add_domain("example.com")
        for name in ("plain", "apps", "totp", "ident"):
            store.add_user(f"{name}@example.com", PASSWORD)
        app = ""
        for index in range(5):
            app = security.add_app_password("apps@example.com", f"device{index}")[1]
        ident_app = security.add_app_password("ident@example.com", "phone")[1]
        secret = security.begin_totp("totp@example.com")
        assert security.confirm_totp("totp@example.com", totp.code_at(secret, time.time()))
        cases = {
            "wrong password, no app passwords": ("plain@example.com", WRONG),
            "wrong password, 5 app passwords": ("apps@example.com", WRONG),
            "wrong password, TOTP on": ("totp@example.com", WRONG),
            "account password, TOTP on (refused)": ("totp@example.com", PASSWORD),
            "wrong password starting with a real ident": (
                "ident@example.com",
                ident_app[:8] + "a" * 20,
            ),
            "unknown user": ("nobody@example.com", WRONG),
            "right app password": ("apps@example.com", app),
        }
        ports = Ports()
        results: dict[str, Any] = {"rounds": options.rounds}
        with running_server(root, server_env(root, ports)) as server:
            tls = server.tls_context()
            addresses = sources()
            times: dict[str, list[float]] = {name: [] for name in cases}
            outcomes: dict[str, set[bool]] = {name: set() for name in cases}
            for _ in range(options.rounds):
                for name, (user, password) in cases.items():
                    elapsed, ok = login_time(ports.imap, next(addresses), tls, user, password)
                    times[name].append(elapsed)
                    outcomes[name].add(ok)
            results["fresh_address"] = {
                name: {**summary(times[name]), "logged_in": sorted(outcomes[name])}
                for name in cases
            }
            penalty: dict[str, list[float]] = {}
            for name, (user, password) in (
                ("wrong app password, one address", ("apps@example.com", "a" * 28)),
                ("wrong account password, one address", ("plain@example.com", WRONG)),
            ):
                source = next(addresses)
                penalty[name] = [
                    round(login_time(ports.imap, source, tls, user, password)[0], 2)
                    for _ in range(5)
                ]
            results["same_address"] = penalty
        store.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auth.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Failed logins with app passwords and TOTP",
        "",
        "IMAP LOGIN after STARTTLS against the whole server on loopback, each attempt from a "
        f"fresh source address, {options.rounds} rounds round-robin. Seconds from LOGIN to its "
        "answer. Generated by `python -m bench.auth_bench`.",
        "",
        "| attempt | n | min | median | max | stdev | logged in |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["fresh_address"].items():
        lines.append(
            f"| {name} | {row['n']} | {row['min']} | {row['median']} | {row['max']} "
            f"| {row['stdev']} | {'yes' if row['logged_in'] == [True] else 'no'} |"
        )
    lines += ["", "Five failures in a row from one address (Dovecot's auth penalty), seconds:", ""]
    for name, series in results["same_address"].items():
        lines.append(f"- {name}: {', '.join(str(t) for t in series)}")
    (RESULTS / "auth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
