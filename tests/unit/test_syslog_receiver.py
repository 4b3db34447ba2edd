"""mailstack's syslog receiver (a stream socket) takes every line syslog clients write.

Real clients: glibc's syslog(3) (what OpenDKIM calls) in a child given a private /dev by
the same launcher OpenDKIM runs under, util-linux's `logger`, Python's SysLogHandler.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import socket
import subprocess
import sys
from pathlib import Path

from mailstack.runtime import devlog
from mailstack.runtime.logparse import LogRecord
from mailstack.runtime.syslog import MAX_CONNECTIONS, SyslogReceiver
from tests.helpers import eventually

GLIBC_CHILD = (
    "import syslog\n"
    "syslog.openlog('opendkim', syslog.LOG_PID, syslog.LOG_MAIL)\n"
    "for i in range(500): syslog.syslog(syslog.LOG_INFO, f'message {i:03d} signed')\n"
)


async def _receiver(tmp_path: Path) -> tuple[SyslogReceiver, list[LogRecord]]:
    seen: list[LogRecord] = []
    receiver = SyslogReceiver(tmp_path / "dev/log", observe=seen.append)
    await receiver.start()
    return receiver, seen


async def test_glibc_syslog_lines_arrive_whole_in_order_and_parsed(tmp_path: Path) -> None:
    receiver, seen = await _receiver(tmp_path)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", devlog.__file__, str(tmp_path / "dev"), "--",
            sys.executable, "-c", GLIBC_CHILD,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await child.communicate()
        assert child.returncode == 0, err
        assert b"lines are lost" not in err  # the private /dev was given
        await eventually(lambda: len(seen) >= 500, what="500 lines")
    finally:
        await receiver.stop()
    assert [record.message for record in seen] == [f"message {i:03d} signed" for i in range(500)]
    assert {record.service for record in seen} == {"opendkim"}
    assert {record.pid for record in seen} == {child.pid}
    assert {record.level for record in seen} == {"info"}


async def test_logger_and_python_handlers_reach_it_and_stop_loses_nothing(
    tmp_path: Path,
) -> None:
    receiver, seen = await _receiver(tmp_path)
    path = str(tmp_path / "dev/log")
    handler = logging.handlers.SysLogHandler(address=path, socktype=None)
    try:
        logger = await asyncio.create_subprocess_exec(
            "logger", "-u", path, "-t", "init-script", "-p", "mail.warning", "from logger"
        )
        assert await logger.wait() == 0
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "hop: %s", ("x",), None)
        handler.setFormatter(logging.Formatter("hop[7]: %(message)s"))
        for i in range(200):
            record.args = (f"line {i}",)
            handler.emit(record)
    finally:
        handler.close()
        await receiver.stop()  # at once: what was written must still come out
    messages = [record.message for record in seen]
    assert "from logger" in messages
    assert [m for m in messages if m.startswith("hop")] == [f"hop: line {i}" for i in range(200)]
    levels = {record.message: record.level for record in seen}
    assert levels["from logger"] == "warning"
    assert not (tmp_path / "dev/log").exists()  # the socket is removed at stop


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def test_a_local_user_cannot_use_up_its_descriptors_with_idle_connections(
    tmp_path: Path,
) -> None:
    """The socket is open to every local user: connections past the cap are closed at once,
    and a client that connected before still logs."""
    receiver, seen = await _receiver(tmp_path)
    path = str(tmp_path / "dev/log")
    first = socket.socket(socket.AF_UNIX)
    first.connect(path)
    hoard: list[socket.socket] = []
    try:
        await asyncio.sleep(0.05)
        fds_before = _open_fds()

        def connect() -> None:  # in a thread: the receiver's loop must go on accepting
            sock = socket.socket(socket.AF_UNIX)
            hoard.append(sock)
            sock.settimeout(5)
            sock.connect(path)

        for _ in range(MAX_CONNECTIONS + 50):
            await asyncio.to_thread(connect)
        await asyncio.sleep(0.2)
        # the test holds its own ends (one per connection); the receiver at most the cap
        assert _open_fds() - fds_before - len(hoard) <= MAX_CONNECTIONS
        assert hoard[-1].recv(1) == b""  # one past the cap: closed by the receiver
        first.sendall(b"<22>opendkim[9]: still heard\0")
        await eventually(
            lambda: any(record.message == "still heard" for record in seen), what="the line"
        )
    finally:
        for sock in [first, *hoard]:
            sock.close()
        await receiver.stop()
    assert [record.message for record in seen] == ["still heard"]
