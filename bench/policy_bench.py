"""Greylisting policy benchmark: mailstack's policy service against postgrey, in one run.

    .venv/bin/python -m bench.policy_bench [--requests 4000] [--clients 4]

Both answer Postfix's policy protocol on a Unix socket with a 300 s delay: mailstack's
worker (`--greylist`, state in SQLite) and Debian's postgrey (Berkeley DB). The same
requests go to each, over `--clients` persistent connections: first every triplet new
(each answer a defer and a write), then the same triplets again (a read, still a defer).
Reported per phase: decisions/s and latency p50/p99. Results go to
bench/results/policy.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.relay_bench import wait
from mailstack.store import MailStore

RESULTS = Path(__file__).parent / "results"


def request(n: int) -> bytes:
    lines = [
        "request=smtpd_access_policy",
        "protocol_state=RCPT",
        "protocol_name=ESMTP",
        f"client_address=198.51.{n % 200}.{n % 250 + 1}",
        "client_name=mail.remote.test",
        "helo_name=mail.remote.test",
        f"sender=sender{n}@remote.test",
        f"recipient=user{n % 50}@example.com",
        f"instance={n:x}.1",
    ]
    return ("\n".join(lines) + "\n\n").encode()


async def client(path: Path, numbers: list[int], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        for n in numbers:
            started = time.perf_counter()
            writer.write(request(n))
            answer = await reader.readuntil(b"\n\n")
            latencies.append(time.perf_counter() - started)
            if not answer.startswith(b"action="):
                raise RuntimeError(f"not a policy answer: {answer!r}")
    finally:
        writer.close()


async def phase(path: Path, count: int, clients: int) -> dict[str, float]:
    latencies: list[float] = []
    shares = [list(range(i, count, clients)) for i in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(client(path, share, latencies) for share in shares))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "decisions_per_s": round(count / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


def accepts(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(str(path)) == 0


def start_mailstack(folder: Path, path: Path) -> subprocess.Popen[bytes]:
    database = folder / "mailstack.db"
    MailStore.open(database).close()  # created and migrated
    env = {**os.environ, "MAILSTACK_DATABASE_URL": str(database)}
    argv = [sys.executable, "-m", "mailstack.worker", "--greylist", str(path)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_postgrey(folder: Path, path: Path) -> subprocess.Popen[bytes]:
    dbdir = folder / "postgrey-db"
    dbdir.mkdir()
    shutil.chown(dbdir, "postgrey", "postgrey")
    argv = ["postgrey", f"--unix={path}", f"--dbdir={dbdir}", "--delay=300"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mailstack-policy-bench-", dir="/var/tmp"))
    folder.chmod(0o755)
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for name, start in (("mailstack", start_mailstack), ("postgrey", start_postgrey)):
            path = folder / name / "policy.sock"
            path.parent.mkdir()
            shutil.chown(path.parent, "postgrey" if name == "postgrey" else "root")
            proc = start(folder, path)
            try:
                wait(lambda path=path: accepts(path), 30, f"{name} on {path}")  # type: ignore[misc]
                results[name] = {
                    "new triplets": asyncio.run(phase(path, args.requests, args.clients)),
                    "seen triplets": asyncio.run(phase(path, args.requests, args.clients)),
                }
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"requests": args.requests, "clients": args.clients, "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Greylisting policy benchmark",
        "",
        f"{args.requests} policy requests per phase over {args.clients} persistent Unix-socket "
        "connections, 300 s delay; mailstack's worker (SQLite) and Debian's postgrey "
        "(Berkeley DB), one after the other in one run.",
        "",
        "| service | phase | decisions/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, phases in results.items():
        for label, numbers in phases.items():
            lines.append(
                f"| {name} | {label} | {numbers['decisions_per_s']} | {numbers['p50_ms']} "
                f"| {numbers['p99_ms']} |"
            )
    (RESULTS / "policy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
