"""Server profile benchmark: start-up, idle memory of every process, MX-to-mailbox delivery.

    .venv/bin/python -m bench.server_bench [--messages 500] [--sessions 8]

Starts `mailstack run --profile server` in a temporary root on loopback high ports with one
domain and ten users, then measures: time until the supervisor logs "ready", the PSS of each
process of the stack after 3 s idle (grouped by program), and how fast mail handed to the MX
lands in the users' Maildirs (end to end: postscreen, smtpd, socketmap lookups, rspamd,
queue, LMTP, Dovecot, Sieve). Three runs in one: without spam filtering (the baseline), with
rspamd and Redis on a cold regex cache, then again warm (the cache kept on the state
volume, as in production). rspamd runs without DNS (lists and host checks off): this
machine has none. Results go to bench/results/server.json and .md. Targets: idle <= 90 MiB
without rspamd, <= 200 MiB with it; ready <= 2 s warm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.relay_bench import descendants, free_port, wait
from mailstack.store import MailStore

RESULTS = Path(__file__).parent / "results"
USERS = [f"user{i}@example.com" for i in range(10)]
PASSWORD = "bench password 1"  # noqa: S105 - a throwaway account in a temp folder


def program(pid: int) -> str:
    """A readable name for a process: its command, or the Python module it runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if words and words[0].startswith("rspamd:"):  # workers retitle themselves
        return words[0].split("(")[0].split(";")[0].strip()  # main adds its rates after ";"
    if words and "redis-server" in words[0]:
        return "redis-server"
    if words and "python" in Path(words[0]).name:
        module = words[words.index("-m") + 1] if "-m" in words else "python"
        supervisor = module in ("mailstack", "mailstack.runtime.supervise")
        return "mailstack (supervisor)" if supervisor else module
    return Path(words[0]).name if words else "?"


def pss_by_program(pids: list[int]) -> dict[str, float]:
    totals: dict[str, int] = defaultdict(int)
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                totals[program(pid)] += int(line.split()[1])
    return {name: round(kib / 1024, 1) for name, kib in sorted(totals.items())}


def maildir_count(root: Path) -> int:
    base = root / "var/lib/mailstack/mail/example.com"
    return sum(1 for _ in base.glob("*/Maildir/new/*")) if base.is_dir() else 0


def send_all(port: int, messages: int, sessions: int) -> None:
    def worker(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.remote.test") as client:
            for n in range(index, messages, sessions):
                rcpt = USERS[n % len(USERS)]
                body = (
                    f"From: a@remote.test\r\nTo: {rcpt}\r\nSubject: bench {n}\r\n\r\n"
                    + ("x" * 70 + "\r\n") * 60
                )
                client.sendmail("a@remote.test", [rcpt], body)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


#: rspamd without DNS or internet (nothing answers on 127.0.0.1:53 here).
SPAM_OFFLINE = {
    "MAILSTACK_SPAM_RBL": "",
    "MAILSTACK_SPAM_HOST_CHECKS": "off",
    "MAILSTACK_SPAM_NAMESERVERS": "127.0.0.1:53",
}


def launch_server(root: Path, smtp: int, **extra: str) -> subprocess.Popen[bytes]:
    """The server profile in `root` (one domain, USERS), MX on `smtp`, logging to
    root/mailstack.log; the caller waits for it to be ready and stops it."""
    store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
    store.add_domain("example.com")
    for user in USERS:
        store.add_user(user, PASSWORD)
    store.close()
    env = dict(os.environ)
    env.update(
        {
            "MAILSTACK_PROFILE": "server",
            "MAILSTACK_ROOT": str(root),
            "MAILSTACK_LISTEN_SMTP": f"127.0.0.1:{smtp}",
            "POSTFIX_myhostname": "mx.example.com",
            **{
                f"MAILSTACK_LISTEN_{name}": f"127.0.0.1:{free_port()}"
                for name in (
                    "SUBMISSION",
                    "SUBMISSIONS",
                    "IMAP",
                    "IMAPS",
                    "MANAGESIEVE",
                    "HTTP",
                    "HTTPS",
                )
            },
            "MAILSTACK_GREYLIST": "off",  # every message from loopback passes anyway
            **extra,
        }
    )
    with (root / "mailstack.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mailstack", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_once(messages: int, sessions: int, **extra: str) -> dict[str, object]:
    """One server start, idle memory, and `messages` through the MX into the Maildirs."""
    root = Path(tempfile.mkdtemp(prefix="mailstack-server-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    smtp = free_port()
    log = root / "mailstack.log"
    started = time.monotonic()
    proc = launch_server(root, smtp, **extra)
    try:
        wait(lambda: "ready: accepting mail" in log.read_text(errors="replace"), 180, "ready")
        ready = time.monotonic() - started
        time.sleep(3)
        memory = pss_by_program(descendants([proc.pid]))
        begin = time.monotonic()
        send_all(smtp, messages, sessions)
        accepted = time.monotonic() - begin
        wait(lambda: maildir_count(root) >= messages, 300, "every message in a Maildir")
        delivered = time.monotonic() - begin
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "ready_s": round(ready, 2),
        "idle_pss_mib": memory,
        "idle_pss_total_mib": round(sum(memory.values()), 1),
        "mx_accept_msg_per_s": round(messages / accepted, 1),
        "mx_to_maildir_msg_per_s": round(messages / delivered, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="mailstack-bench-rspamd-cache-", dir="/var/tmp"))
    try:
        runs = {
            "without spam filtering": run_once(args.messages, args.sessions, MAILSTACK_SPAM="off"),
            "rspamd, cold cache": run_once(
                args.messages, args.sessions, MAILSTACK_SPAM_CACHE_DIR=str(cache), **SPAM_OFFLINE
            ),
            "rspamd, warm cache": run_once(
                args.messages, args.sessions, MAILSTACK_SPAM_CACHE_DIR=str(cache), **SPAM_OFFLINE
            ),
        }
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    base, warm = runs["without spam filtering"], runs["rspamd, warm cache"]
    warm_memory = warm["idle_pss_mib"]
    assert isinstance(warm_memory, dict)
    ratio = round(
        float(str(warm["mx_to_maildir_msg_per_s"])) / float(str(base["mx_to_maildir_msg_per_s"])), 2
    )
    report = {
        "messages": args.messages,
        "sessions": args.sessions,
        "runs": runs,
        "throughput_ratio_rspamd_to_baseline": ratio,
        "targets": {
            "idle_pss_total_mib": "<= 90 MiB without rspamd, <= 200 MiB with it",
            "ready_s": "<= 2 (warm)",
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Server profile benchmark",
        "",
        f"One domain, {len(USERS)} users; {args.messages} messages of ~4.5 KB to the MX over "
        f"{args.sessions} sessions. Three runs in one: the baseline without spam filtering, "
        "then rspamd and Redis on a cold and on a warm regex cache (no DNS lists here).",
        "",
        "| measure | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
        "| start to ready (s) | " + " | ".join(str(r["ready_s"]) for r in runs.values()) + " |",
        "| idle PSS, whole stack (MiB) | "
        + " | ".join(str(r["idle_pss_total_mib"]) for r in runs.values())
        + " |",
        "| MX accepts (msg/s) | "
        + " | ".join(str(r["mx_accept_msg_per_s"]) for r in runs.values())
        + " |",
        "| MX to Maildir (msg/s) | "
        + " | ".join(str(r["mx_to_maildir_msg_per_s"]) for r in runs.values())
        + " |",
        "",
        f"MX-to-Maildir throughput with rspamd (warm) / without: {ratio}",
        "",
        "Idle PSS by program, warm rspamd (MiB):",
        "",
        *(f"- {name}: {mib}" for name, mib in warm_memory.items()),
    ]
    (RESULTS / "server.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
