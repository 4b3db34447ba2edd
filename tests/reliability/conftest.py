"""Fixtures of the reliability suite: a private root that is swept of leftover processes,
and a private PostgreSQL the test may kill and start again."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, private_root
from tests.reliability.harness import reap

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def root() -> Iterator[Path]:
    """A MAILSTACK_ROOT; whatever still runs from it after the test is killed."""
    with private_root() as path:
        try:
            yield path
        finally:
            left = reap(path)
            if left:
                print(f"killed leftover processes of {path}: {left}")


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class Postgres:
    """A PostgreSQL of the test's own: `kill()` ends it like a crash, `start()` brings it
    back on the same port with the same data."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args),
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        log = str(self.folder / "postgres.log")
        self._pg_ctl("-o", options, "-l", log, "-w", "-t", "30", "start")

    def kill(self) -> None:
        """`pg_ctl stop -m immediate`: every backend gets SIGQUIT, no shutdown checkpoint,
        crash recovery at the next start, as after a crash."""
        self._pg_ctl("-m", "immediate", "stop")

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    folder = Path(tempfile.mkdtemp(prefix="mailstack-reliability-pg-"))
    folder.chmod(0o755)
    shutil.chown(folder, "postgres", "postgres")
    server = Postgres(folder, free_port())
    try:
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
            ),
            check=True,
            capture_output=True,
        )
        server.start()
        yield server
    finally:
        if server.running():
            server._pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)
