"""The supervisor starts a plan's helpers together: each waits only for those it comes
`after`, and a failed start leaves nothing running once everything is stopped."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mailstack.errors import DaemonError
from mailstack.runtime.plan import Plan, PostfixPlan, Probe, Process
from mailstack.runtime.supervisor import Supervisor

#: Listens on the Unix socket argv[1] after argv[2] seconds, until killed; touches argv[3]
#: when given and argv[4] (a socket path) already existed at its own start.
LISTENER = """
import os, socket, sys, time
if len(sys.argv) > 4 and os.path.exists(sys.argv[4]):
    open(sys.argv[3], "w").close()
time.sleep(float(sys.argv[2]))
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
time.sleep(120)
"""


def listener(name: str, folder: Path, delay: float, *extra: str) -> Process:
    sock = str(folder / f"{name}.sock")
    argv = [sys.executable, "-c", LISTENER, sock, str(delay), *extra]
    return Process(name, argv, dict(os.environ), [Probe("unix", sock)], ready_timeout=10)


def plan_of(processes: list[Process]) -> Plan:
    unused = Process("postfix", ["true"], {}, [])
    postfix = PostfixPlan(unused, "", "", "", "", [])
    return Plan("test", processes, postfix, "ready", stop_timeout=5)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_process_starts_only_once_those_it_comes_after_are_ready(tmp_path: Path) -> None:
    first = listener("first", tmp_path, 2.0)  # ready 2 s after its start
    first_socket = first.probes[0].target
    marker = tmp_path / "second-saw-first"
    second = replace(listener("second", tmp_path, 0, str(marker), first_socket), after=["first"])
    third = listener("third", tmp_path, 0, str(tmp_path / "third-saw-first"), first_socket)
    supervisor = Supervisor(plan_of([first, second, third]))

    async def scenario() -> None:
        try:
            await supervisor.start_together(supervisor.plan.processes)
            assert all(daemon.running for daemon in supervisor.daemons)
        finally:
            await supervisor.stop_all()

    asyncio.run(scenario())
    assert marker.exists()  # second started after first's socket answered
    assert not (tmp_path / "third-saw-first").exists()  # third did not wait for first
    assert not any(alive(daemon.pid) for daemon in supervisor.daemons)


def test_a_failed_start_is_raised_its_dependents_never_start_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    failing = Process("failing", ["sh", "-c", "exit 3"], dict(os.environ), [Probe("unix", "x")])
    marker = tmp_path / "dependent-ran"
    dependent = Process(
        "dependent", ["touch", str(marker)], dict(os.environ), [], after=["failing"]
    )
    independent = listener("independent", tmp_path, 0.2)
    supervisor = Supervisor(plan_of([failing, dependent, independent]))

    async def scenario() -> None:
        try:
            with pytest.raises(DaemonError, match="failing"):
                await supervisor.start_together(supervisor.plan.processes)
            by_name = {daemon.name: daemon for daemon in supervisor.daemons}
            assert by_name["independent"].running  # its start was let finish
        finally:
            await supervisor.stop_all()

    asyncio.run(scenario())
    assert not marker.exists()
    assert not any(alive(daemon.pid) for daemon in supervisor.daemons)
