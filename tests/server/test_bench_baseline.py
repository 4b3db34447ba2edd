"""The server benchmark's hand-written Postfix + Dovecot: files Postfix and Dovecot accept,
tables that answer from the shared data."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.server_baseline import Baseline
from bench.server_bench import DATA, password_hash


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_baseline_files_pass_postfix_check_and_doveconf(root: Path) -> None:
    baseline = Baseline(root / "baseline", DATA, password_hash())
    conf = root / "baseline/postfix"

    checked = run("postfix", "-c", str(conf), "check")
    assert (checked.returncode, checked.stderr) == (0, "")
    dovecot = run("doveconf", "-n", "-c", str(baseline.dovecot_conf))
    assert (dovecot.returncode, dovecot.stderr) == (0, "")
    assert "driver = sql" in dovecot.stdout

    mailbox = run("postconf", "-c", str(conf), "-h", "virtual_mailbox_maps").stdout.strip()
    found = run("postmap", "-c", str(conf), "-q", "user3@example.com", mailbox)
    assert found.stdout.strip() == "user3@example.com"
    senders = run("postconf", "-c", str(conf), "-h", "smtpd_sender_restrictions").stdout
    hosted = senders.split("check_sender_access ")[1].split()[0].rstrip(",")
    refused = run("postmap", "-c", str(conf), "-q", "user3@example.com", hosted).stdout
    assert refused.startswith("550 5.7.1")
    assert run("postmap", "-c", str(conf), "-q", "a@remote.test", hosted).stdout == ""
