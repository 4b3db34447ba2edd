"""Relay benchmark: mailstack against a hand-written Postfix + OpenDKIM, measured in one run.

    .venv/bin/python -m bench.relay_bench [--messages 2000] [--sessions 10] [--rounds 5]

Both sides relay 5 KB messages from `smtp-source` to an `smtp-sink` on loopback with DKIM
signing over a unix-socket milter. Reported: end-to-end throughput (first message sent until the
sink has them all) and its ratio, time from `mailstack run` to the first 220 banner, and the
idle memory (PSS) of every process of each side. Results go to bench/results/relay.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailstack.dkim.keys import generate_private_key, render_txt

RESULTS = Path(__file__).parent / "results"
DOMAIN = "example.com"
#: Where the benches build their roots. Not under /var/tmp: OpenDKIM checks every folder
#: above a key file and, finding a world-writable one, logs "key data is not secure" at
#: every signature, a line per message no real deployment (keys under /etc) writes.
WORK = Path("/var/lib/mailstack-bench")


def work_folder(prefix: str) -> Path:
    """A fresh folder under WORK, readable by the daemons' users."""
    WORK.mkdir(mode=0o755, exist_ok=True)
    WORK.chmod(0o755)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))
    folder.chmod(0o755)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


def banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(4).startswith(b"220")
    except OSError:
        return False


def message_file(folder: Path) -> Path:
    body = "".join(f"line {i:04d} " + "x" * 60 + "\n" for i in range(70))
    path = folder / "msg5k.eml"
    path.write_text(
        f"From: app@{DOMAIN}\nTo: bob@example.net\nSubject: bench\n"
        f"Date: Sat, 21 Nov 2026 12:00:00 +0000\nMessage-ID: <bench@{DOMAIN}>\n\n{body}"
    )
    return path


class Sink:
    """smtp-sink counting messages (-c prints `sess=N quit=N mesg=N` after each one)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "sink.out"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{self.port}", "256"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait(lambda: banner(self.port), 10, "smtp-sink")

    def count(self) -> int:
        """The last `mesg=N` of the running counter, read from the end of the output: it is
        asked every 10 ms during a round, and reading the whole file (hundreds of KB by the
        last rounds) cost the host CPU while the side measured later in a round ran."""
        with self.log.open("rb") as out:
            out.seek(max(0, out.seek(0, 2) - 256))
            text = out.read().decode(errors="replace")
        found = re.findall(r"mesg=(\d+)", text)
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def descendants(root_pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(root_pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def run_load(port: int, sink: Sink, msg: Path, messages: int, sessions: int) -> float:
    start_count = sink.count()
    start = time.monotonic()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-F",
            str(msg),
            "-f",
            f"app@{DOMAIN}",
            "-t",
            "bob@example.net",
            "-M",
            "client.bench.test",
            f"127.0.0.1:{port}",
        ],
        check=True,
        timeout=600,
    )
    wait(lambda: sink.count() - start_count >= messages, 600, "all messages at the sink")
    return messages / (time.monotonic() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and of the children they reaped (Postfix's
    short-lived processes are counted under the master once they exit)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(field) for field in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def keys(folder: Path) -> Path:
    keys_dir = folder / "etc/opendkim/keys"
    keys_dir.mkdir(parents=True)
    pem = generate_private_key()
    (keys_dir / f"{DOMAIN}.private").write_bytes(pem)
    (keys_dir / f"{DOMAIN}.txt").write_text(render_txt("mail", DOMAIN, pem))
    shutil.chown(keys_dir / f"{DOMAIN}.private", "opendkim")
    (keys_dir / f"{DOMAIN}.private").chmod(0o600)
    return keys_dir


class Mailstack:
    def __init__(self, folder: Path, sink: Sink) -> None:
        self.root = folder / "mailstack"
        self.root.mkdir()
        self.root.chmod(0o755)
        keys(self.root)
        self.port = free_port()
        self.env = {
            "PATH": os.environ["PATH"],
            "MAILSTACK_ROOT": str(self.root),
            "MAILSTACK_LISTEN_SUBMISSION": f"127.0.0.1:{self.port}",
            "MAILSTACK_LISTEN_SMTP": "",
            "ALLOWED_SENDER_DOMAINS": DOMAIN,
            "RELAYHOST": f"[127.0.0.1]:{sink.port}",
            "POSTFIX_myhostname": "relay.bench.test",
            "POSTFIX_smtp_tls_security_level": "none",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Seconds from `mailstack run` to the first 220 banner."""
        begin = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailstack", "run"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait(lambda: banner(self.port), 30, "mailstack")
        return time.monotonic() - begin

    def pids(self) -> list[int]:
        assert self.proc is not None
        master = int((self.root / "var/spool/postfix/pid/master.pid").read_text().split()[0])
        return sorted(set(descendants([self.proc.pid, master])))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


class Baseline:
    """Postfix and OpenDKIM configured by hand, the minimum a relay with DKIM needs."""

    def __init__(self, folder: Path, sink: Sink) -> None:
        self.dir = folder / "baseline"
        self.dir.mkdir()
        self.dir.chmod(0o755)
        keys_dir = keys(self.dir)
        self.port = free_port()
        conf, queue, data = self.dir / "postfix", self.dir / "spool", self.dir / "data"
        conf.mkdir()
        sock_dir = self.dir / "dkim"
        sock_dir.mkdir(mode=0o750)
        shutil.chown(sock_dir, "opendkim", "postfix")
        milter = f"unix:{sock_dir}/od.sock"
        (conf / "main.cf").write_text(
            f"compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\n"
            "mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = base.bench.test\n"
            "mydestination =\nrelay_domains =\nlocal_recipient_maps =\nalias_maps =\n"
            "alias_database =\nmynetworks = 127.0.0.0/8\n"
            "smtpd_relay_restrictions = permit_mynetworks, reject\n"
            f"relayhost = [127.0.0.1]:{sink.port}\nsmtp_tls_security_level = none\n"
            f"maillog_file = {self.dir}/maillog\nmilter_protocol = 6\n"
            f"smtpd_milters = {milter}\nnon_smtpd_milters = {milter}\n"
        )
        master = (Path(__file__).parents[1] / "src/mailstack/render/data/master.cf").read_text()
        (conf / "master.cf").write_text(f"127.0.0.1:{self.port} inet n - n - - smtpd\n{master}")
        (self.dir / "KeyTable").write_text(
            f"mail._domainkey.{DOMAIN} {DOMAIN}:mail:{keys_dir}/{DOMAIN}.private\n"
        )
        (self.dir / "SigningTable").write_text(f"*@{DOMAIN} mail._domainkey.{DOMAIN}\n")
        (self.dir / "opendkim.conf").write_text(
            f"Mode s\nCanonicalization relaxed/simple\nKeyTable file:{self.dir}/KeyTable\n"
            f"SigningTable refile:{self.dir}/SigningTable\nSocket local:{sock_dir}/od.sock\n"
            f"PidFile {sock_dir}/od.pid\nUserID opendkim\nUMask 0111\nRequireSafeKeys no\n"
            "InternalHosts 127.0.0.1\nSyslog no\n"
        )
        self.conf = conf
        self.queue = queue
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> float:
        begin = time.monotonic()
        self.queue.mkdir(exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        shutil.chown(self.dir / "data", "postfix", "postfix")
        check = subprocess.run(
            ["postfix", "-c", str(self.conf), "check"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"baseline postfix check failed: {check.stderr}")
        od = subprocess.Popen(["opendkim", "-f", "-x", str(self.dir / "opendkim.conf")])
        wait(lambda: (self.dir / "dkim/od.sock").exists(), 10, "opendkim")
        pf = subprocess.Popen(
            ["/usr/lib/postfix/sbin/master", "-c", str(self.conf), "-s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs = [od, pf]
        wait(lambda: banner(self.port), 30, "baseline postfix")
        return time.monotonic() - begin

    def pids(self) -> list[int]:
        return sorted(set(descendants([p.pid for p in self.procs])))

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        for proc in self.procs:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra environment for the mailstack side (to try variants)",
    )
    args = parser.parse_args()
    folder = work_folder("relay-")
    msg = message_file(folder)
    sink = Sink(folder)
    sides = {"baseline": Baseline(folder, sink), "mailstack": Mailstack(folder, sink)}
    sides["mailstack"].env.update(item.split("=", 1) for item in args.set)  # type: ignore[attr-defined]
    results: dict[str, dict[str, object]] = {name: {"throughput": []} for name in sides}
    try:
        for name, side in sides.items():
            results[name]["ready_s"] = round(side.start(), 3)
            time.sleep(2)
            results[name]["idle_pss_mib"] = round(pss_kib(side.pids()) / 1024, 1)
            run_load(side.port, sink, msg, 100, args.sessions)  # warm-up
        supervisor_pid = sides["mailstack"].proc.pid  # type: ignore[attr-defined]
        python_cpu = 0.0
        stack_cpu = dict.fromkeys(sides, 0.0)
        for i in range(args.rounds):  # interleaved, so host noise hits both sides alike
            order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
            for name, side in order:
                before = cpu_seconds(supervisor_pid)
                pids = side.pids()
                stack_before = tree_cpu_seconds(pids)
                rate = run_load(side.port, sink, msg, args.messages, args.sessions)
                stack_cpu[name] += tree_cpu_seconds(pids) - stack_before
                if name == "mailstack":
                    python_cpu += cpu_seconds(supervisor_pid) - before
                results[name]["throughput"].append(round(rate, 1))  # type: ignore[union-attr]
        sent = args.rounds * args.messages
        results["mailstack"]["python_cpu_ms_per_msg"] = round(1000 * python_cpu / sent, 3)
        for name in sides:
            results[name]["stack_cpu_ms_per_msg"] = round(1000 * stack_cpu[name] / sent, 3)
        # the same work on a slower or busier host costs more CPU on both sides alike: the
        # pipeline's share of the baseline's own CPU in the same run is the steadier figure
        results["mailstack"]["python_cpu_share_of_baseline"] = round(
            python_cpu / stack_cpu["baseline"], 3
        )
    finally:
        for side in sides.values():
            side.stop()
        sink.stop()
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(results["baseline"]["throughput"])  # type: ignore[arg-type]
    mine = statistics.median(results["mailstack"]["throughput"])  # type: ignore[arg-type]
    # each round measures both sides back to back: its own ratio cancels the host's drift
    # between rounds, which the ratio of the two medians does not
    paired = [
        round(m / b, 3)
        for b, m in zip(
            results["baseline"]["throughput"],  # type: ignore[arg-type]
            results["mailstack"]["throughput"],  # type: ignore[arg-type]
            strict=True,
        )
    ]
    report = {
        "messages": args.messages,
        "sessions": args.sessions,
        "rounds": args.rounds,
        "message_bytes": msg.stat().st_size if msg.exists() else 5000,
        "baseline": results["baseline"],
        "mailstack": results["mailstack"],
        "throughput_ratio": round(mine / base, 3),
        "round_ratios": paired,
        "round_ratio_median": round(statistics.median(paired), 3),
        "targets": {
            "ratio": ">= 0.97",
            "ready_s": "<= 0.5",
            "idle_pss_mib": "<= 35",
            "python_cpu_ms_per_msg": "<= 0.175",
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "relay.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Relay benchmark",
        "",
        f"{args.messages} messages of 5 KB, {args.sessions} sessions, {args.rounds} interleaved "
        "rounds (the order alternating), DKIM signing over a unix-socket milter, smtp-source -> "
        "relay -> smtp-sink.",
        "",
        "| | baseline (hand-written Postfix + OpenDKIM) | mailstack | target |",
        "|---|---|---|---|",
        f"| throughput, median msg/s | {base:.0f} | {mine:.0f} | ratio >= 0.97: "
        f"**{report['throughput_ratio']}** |",
        f"| start to first 220 banner | {results['baseline']['ready_s']} s | "
        f"{results['mailstack']['ready_s']} s | <= 0.5 s |",
        f"| idle PSS, all processes | {results['baseline']['idle_pss_mib']} MiB | "
        f"{results['mailstack']['idle_pss_mib']} MiB | <= 35 MiB |",
        f"| CPU per message, all processes (reaped children included) | "
        f"{results['baseline']['stack_cpu_ms_per_msg']} ms | "
        f"{results['mailstack']['stack_cpu_ms_per_msg']} ms | — |",
        f"| CPU of mailstack's own Python process (log pipeline) | — | "
        f"{results['mailstack']['python_cpu_ms_per_msg']} ms/msg "
        f"({100 * results['mailstack']['python_cpu_share_of_baseline']:.1f} % of the "  # type: ignore[operator]
        "baseline's CPU per message) | <= 0.175 ms/msg |",
        "",
        "Rounds (msg/s): baseline "
        f"{results['baseline']['throughput']}, mailstack {results['mailstack']['throughput']}.",
        "",
        f"Each round's own ratio (its two sides measured back to back): {paired}, median "
        f"{report['round_ratio_median']}. The host's speed drifts between rounds; within a "
        "round it hits both sides nearly alike, so this median is the steadier comparison "
        "(the target is set on the ratio of the medians above).",
    ]
    (RESULTS / "relay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
