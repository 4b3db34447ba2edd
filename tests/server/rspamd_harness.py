"""Real Redis and rspamd for the spam tests: mailstack's rendered configuration in a private
root, Unix sockets only, no DNS (DNS lists and host checks off, the resolver on a loopback
port nothing answers, with short time-outs).

rspamd compiles its regex and public-suffix cache at a cold start (20-30 s here); the tests
share one cache folder per session, so only the first start is cold. Each daemon runs in a
new session: stopping kills its whole process group, and rspamd workers left by a killed
main process are found by their control socket. Imported by the spam tests (pytest puts
this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from milter_harness import stop_group
from server_harness import wait_for
from tests.helpers import private_root

from mailstack.paths import Paths
from mailstack.render.rspamd import RspamdOptions, SpamPaths
from mailstack.runtime.plan import Process
from mailstack.runtime.prepare import child_environment
from mailstack.runtime.probes import unix_socket_accepts
from mailstack.runtime.spam import (
    is_running,
    prepare_spam,
    redis_process,
    rspamd_process,
    stop_leftover_rspamd,
)

#: What the tests run with: test patterns on, nothing that needs DNS or the internet.
TEST_OPTIONS = RspamdOptions(
    test_patterns=True,
    dns_lists=(),
    host_checks=False,
    nameservers=("127.0.0.1:53",),
    dns_timeout=0.1,
    dns_retransmits=1,
)

#: A cold start compiles the cache; allow for a slow, busy machine.
START_TIMEOUT = 180.0


@dataclass
class Daemon:
    process: Process
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.process.argv,
                env=self.process.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.process.name} exited:\n{self.log()[-6000:]}")
            return all(unix_socket_accepts(Path(p.target)) for p in self.process.probes)

        wait_for(ready, timeout, f"{self.process.name} to accept on its sockets")

    def stop(self) -> None:
        """SIGTERM (rspamd's main process stops its workers), then kill what is left."""
        if self.proc is not None:
            stop_group(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class SpamStack:
    """Redis and rspamd of one private root."""

    root: Path
    spam: SpamPaths
    redis: Daemon
    rspamd: Daemon
    started: list[Daemon] = field(default_factory=list)

    def start(self, daemon: Daemon, timeout: float = START_TIMEOUT) -> None:
        daemon.start()
        if daemon not in self.started:
            self.started.append(daemon)
        daemon.wait_ready(timeout)

    def stop_all(self) -> None:
        for daemon in reversed(self.started):
            daemon.stop()
        stop_leftover_rspamd(self.spam)

    def logs(self) -> str:
        return "\n".join(
            f"--- {d.process.name}\n{d.log()[-6000:]}" for d in (self.redis, self.rspamd)
        )


@contextlib.contextmanager
def running_spam(cache_dir: Path, options: RspamdOptions = TEST_OPTIONS) -> Iterator[SpamStack]:
    """Redis, then rspamd, ready on their sockets; both stopped however the test ends."""
    with private_root() as root:
        paths = Paths(root)
        spam = prepare_spam(paths, replace(options, cache_dir=cache_dir))
        env = child_environment(None, paths)
        stack = SpamStack(
            root,
            spam,
            Daemon(redis_process(spam, env), root / "redis.log"),
            Daemon(rspamd_process(spam, env), root / "rspamd.log"),
        )
        try:
            stack.start(stack.redis)
            stack.start(stack.rspamd)
            yield stack
        except BaseException:
            print(stack.logs())  # shown by pytest with the failure
            raise
        finally:
            stack.stop_all()


def unix_http(socket_path: Path, path: str, timeout: float = 10) -> tuple[int, bytes]:
    """GET `path` from an HTTP server on a Unix socket (rspamd's controller)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def listening_tcp_inodes() -> set[str]:
    """Socket inodes of every TCP listener on the machine (state 0A)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A":
                    found.add(fields[9])
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = str(fd.readlink())
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    return inodes


def redis_keys(spam: SpamPaths) -> list[str]:
    result = subprocess.run(
        ["redis-cli", "-s", str(spam.redis_socket), "--scan"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.split()


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(is_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
