"""scripts/reap.py, the wrapper the test command runs pytest under: what a command leaves
running is killed once it ends, and the command's exit status is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.reliability.harness import alive

REAP = Path(__file__).parents[2] / "scripts" / "reap.py"


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REAP), "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_daemon_left_in_the_background_is_killed_and_named(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # `setsid` + `&`: a daemon in its own session, orphaned when the shell exits at once
    result = run(f"setsid sleep 300 > /dev/null 2>&1 & echo $! > {pidfile}; exit 3")
    assert result.returncode == 3
    pid = int(pidfile.read_text())
    try:
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert "killing a process the tests left running" in result.stderr
    assert "sleep 300" in result.stderr


def test_a_clean_command_passes_through_quietly() -> None:
    result = run("echo out; echo err >&2; exit 0")
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_a_command_killed_by_a_signal_exits_128_plus_its_number() -> None:
    assert run("kill -TERM $$").returncode == 128 + 15
