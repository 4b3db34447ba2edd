"""`python -m mailstack.worker` with the lookup service, as the supervisor runs it: a real
process, a real signal."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from server_harness import shared_tempdir, stop_process

from mailstack.store import MailStore


def line_reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The child's output lines, read by a thread so that waits can have a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def read_until(lines: queue.Queue[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in {seen!r}")


def test_process_serves_and_stops_on_sigterm(sqlite_store: MailStore, postfix_config: Path) -> None:
    """It reports the port it got, answers Postfix, and exits 0 on SIGTERM, cleaning up."""
    sqlite_store.add_domain("example.com")
    folder = shared_tempdir("mailstack-proc-")
    dict_socket = folder / "dict.sock"
    argv = [sys.executable, "-m", "mailstack.worker", "--database", str(sqlite_store.engine.url)]
    argv += ["--socketmap", "inet:127.0.0.1:0", "--dict", f"unix:{dict_socket}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = line_reader(proc)
    try:
        port = int(read_until(lines, r"socketmap listening on inet:127\.0\.0\.1:(\d+)", 20)[1])
        read_until(lines, r"dict listening on unix:", 20)
        table = f"socketmap:inet:127.0.0.1:{port}:domain"
        found = subprocess.run(
            ["postmap", "-c", str(postfix_config), "-q", "example.com", table],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert found.stdout.strip() == "example.com"
        proc.terminate()
        assert proc.wait(20) == 0
        assert not dict_socket.exists()
    finally:
        stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)
