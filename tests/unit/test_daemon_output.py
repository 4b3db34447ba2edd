"""A supervised process's output reaches the log whole, in order, and its pipes are closed.

Real child processes (the Python interpreter running a few lines), no daemons: quick.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from mailstack.runtime.daemon import Daemon
from mailstack.runtime.logparse import LogRecord


async def _never() -> bool:
    return False


def _daemon(script: str) -> tuple[Daemon, list[str]]:
    seen: list[str] = []
    daemon = Daemon(
        "child",
        [sys.executable, "-c", script],
        dict(os.environ),
        parse_line=lambda line: LogRecord("child", line),
        probe=_never,
    )
    daemon.observe = lambda record: seen.append(record.message)
    return daemon, seen


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_a_flood_arrives_whole_and_in_order_with_its_unterminated_last_line() -> None:
    script = (
        "import sys\n"
        "for i in range(20000): sys.stdout.write(f'line {i:05d} ' + 'x' * 50 + '\\n')\n"
        "sys.stdout.write('last words without a newline')\n"
    )
    daemon, seen = _daemon(script)
    await daemon.start()
    assert await daemon.wait_exit() == 0
    await daemon.drain_output(timeout=10)
    assert len(seen) == 20001
    assert seen[0].startswith("line 00000 ")
    assert seen[19999].startswith("line 19999 ")
    assert [int(line.split()[1]) for line in seen[:-1]] == list(range(20000))
    assert seen[-1] == "last words without a newline"


async def test_a_trickle_on_both_streams_arrives_and_blank_lines_are_dropped() -> None:
    script = (
        "import sys, time\n"
        "for i in range(30):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "    print('   ', flush=True)\n"
        "    time.sleep(0.005)\n"
    )
    daemon, seen = _daemon(script)
    await daemon.start()
    await daemon.wait_exit()
    await daemon.drain_output(timeout=10)
    assert [line for line in seen if line.startswith("out")] == [f"out {i}" for i in range(30)]
    assert [line for line in seen if line.startswith("err")] == [f"err {i}" for i in range(30)]
    assert len(seen) == 60
    assert list(daemon.tail)[-1] in ("out 29", "err 29")


async def test_a_left_behind_child_holding_the_pipe_does_not_hold_the_stop() -> None:
    """The process exits but a child it forked keeps stdout open: stop() still returns,
    after what was written, and closes its ends of the pipes."""
    before = _open_fds()
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(child.pid, flush=True)\n"
    )
    daemon, seen = _daemon(script)
    await daemon.start()
    await daemon.wait_exit()
    try:
        await asyncio.wait_for(daemon.stop(timeout=5), 10)
        assert len(seen) == 1
        assert _open_fds() == before
    finally:
        if seen:
            os.kill(int(seen[0]), signal.SIGKILL)
