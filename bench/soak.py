"""Soak: the server profile under a steady stream of mail, memory sampled every minute.

    .venv/bin/python -m bench.soak [--minutes 60] [--rate 20]

Starts `mailstack run --profile server` in a temporary root (one domain, ten users), sends
`--rate` messages a second to the MX for `--minutes`, and samples the PSS of every process
of the stack (grouped by program) once a minute. Reports each program's growth from the
first to the last sample, and whether every accepted message reached a Maildir. Results go
to bench/results/soak.json and .md. Target: no growth beyond noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

from bench.relay_bench import descendants, free_port, wait, work_folder
from bench.server_bench import SPAM_OFFLINE, USERS, launch_server, maildir_count, pss_by_program

RESULTS = Path(__file__).parent / "results"


def start_server(root: Path, smtp: int) -> subprocess.Popen[bytes]:
    proc = launch_server(root, smtp, **SPAM_OFFLINE)
    log = root / "mailstack.log"
    wait(lambda: "ready: accepting mail" in log.read_text(errors="replace"), 120, "ready")
    return proc


def send_steadily(port: int, rate: float, stop: threading.Event, accepted: list[int]) -> None:
    """One session at a time, `rate` messages a second; counts the 250s."""
    interval = 1.0 / rate
    n = 0
    next_send = time.monotonic()
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="soak.remote.test") as client:
                for _ in range(100):
                    if stop.is_set():
                        return
                    rcpt = USERS[n % len(USERS)]
                    body = f"From: a@remote.test\r\nTo: {rcpt}\r\nSubject: soak {n}\r\n\r\nx\r\n"
                    client.sendmail("a@remote.test", [rcpt], body)
                    accepted[0] += 1
                    n += 1
                    next_send += interval
                    time.sleep(max(0.0, next_send - time.monotonic()))
        except (smtplib.SMTPException, OSError):
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0, help="messages a second")
    args = parser.parse_args()
    root = work_folder("soak-")
    smtp = free_port()
    proc = start_server(root, smtp)
    stop = threading.Event()
    accepted = [0]
    sender = threading.Thread(target=send_steadily, args=(smtp, args.rate, stop, accepted))
    samples: list[dict[str, float]] = []
    try:
        sender.start()
        end = time.monotonic() + args.minutes * 60
        while True:
            samples.append(pss_by_program(descendants([proc.pid])))
            if time.monotonic() >= end:
                break
            time.sleep(min(60.0, max(0.0, end - time.monotonic())))
        stop.set()
        sender.join(30)
        wait(lambda: maildir_count(root) >= accepted[0], 300, "every accepted message delivered")
        delivered = maildir_count(root)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    report(args, samples, accepted[0], delivered)


def report(
    args: argparse.Namespace, samples: list[dict[str, float]], accepted: int, delivered: int
) -> None:
    first, last = samples[0], samples[-1]
    programs = sorted(set(first) | set(last))
    growth = {p: round(last.get(p, 0.0) - first.get(p, 0.0), 1) for p in programs}
    data = {
        "minutes": args.minutes,
        "rate": args.rate,
        "accepted": accepted,
        "delivered": delivered,
        "samples": samples,
        "growth_mib": growth,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Soak",
        "",
        f"Server profile, {args.rate:g} messages/s to the MX for {args.minutes:g} minutes, "
        f"PSS sampled every minute ({len(samples)} samples). Accepted {accepted}, "
        f"delivered to Maildirs {delivered} (lost {accepted - min(accepted, delivered)}).",
        "",
        "| program | first sample MiB | last sample MiB | growth MiB |",
        "|---|---|---|---|",
        *(f"| {p} | {first.get(p, 0.0)} | {last.get(p, 0.0)} | {growth[p]:+} |" for p in programs),
        "",
    ]
    (RESULTS / "soak.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
