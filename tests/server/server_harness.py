"""Helpers for the server tests: free ports, deadlines, and handles on real daemons.

Imported by conftest.py and by tests (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from tests.helpers import free_port, wait_for

from mailstack.lookup.service import Endpoint, LookupService
from mailstack.store import create_engine_for

__all__ = ["free_port", "wait_for"]  # shared with tests/helpers.py, re-exported for conftest

T = TypeVar("T")

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def shared_tempdir(prefix: str) -> Path:
    """A folder daemons running as other users (dovecot, postgres) can enter.

    pytest's tmp_path is mode 0700 under a 0700 parent, which those users cannot traverse.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# -- the lookup service, run on its own event loop thread ---------------------------------


class LoopThread:
    """An event loop in a background thread, so sync tests can run blocking clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class RunningLookup:
    service: LookupService
    loop: LoopThread
    dict_socket: Path

    @property
    def socketmap_port(self) -> int:
        return self.service.socketmap_server.port


@contextlib.contextmanager
def running_lookup(url: str, *, timeout: float = 5.0) -> Iterator[RunningLookup]:
    """Start a lookup service (socketmap on 127.0.0.1:0, dict on a Unix socket)."""
    folder = shared_tempdir("mailstack-lookup-")
    dict_socket = folder / "dict.sock"
    loop = LoopThread()
    engine = create_engine_for(url)
    service = LookupService(
        engine,
        socketmap=Endpoint(host="127.0.0.1", port=0),
        dict=Endpoint(path=dict_socket, mode=0o666),
        timeout=timeout,
    )
    try:
        loop.run(service.start())
        yield RunningLookup(service, loop, dict_socket)
    finally:
        try:
            loop.run(service.stop())
        finally:
            loop.close()
            engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)


# -- PostgreSQL -----------------------------------------------------------------------------


@dataclass
class PostgresServer:
    port: int
    _counter: int = 0

    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database per test."""
        self._counter += 1
        name = f"mailstack_{os.getpid()}_{self._counter}"
        engine = create_engine_for(self.admin_url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


# -- Dovecot -----------------------------------------------------------------------------

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailstack-test-{port_imap}
log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_failure_delay = 0
auth_verbose = yes
auth_debug = yes
mail_location = maildir:~/Maildir
mail_home = {root}/mail/%d/%n
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port_imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port_lmtp}
  }}
}}
passdb {{
  driver = dict
  args = {root}/dict-auth.conf.ext
}}
userdb {{
  driver = dict
  args = {root}/dict-auth.conf.ext
}}
protocol lmtp {{
  mail_plugins = sieve
}}
plugin {{
  sieve = dict:proxy:{dict_socket}:sieve;name=active
  sieve_user_log = {root}/sieve.log
}}
"""

DICT_AUTH_CONF = """\
uri = proxy:{dict_socket}:mailstack
password_key = passdb/%u
user_key = userdb/%u
iterate_prefix = userdb/
default_pass_scheme = ARGON2ID
"""


@dataclass
class DovecotServer:
    root: Path
    config: Path
    imap_port: int
    lmtp_port: int

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["doveadm", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def auth_test(self, user: str, password: str) -> subprocess.CompletedProcess[str]:
        """`doveadm auth test`, without the anvil penalty that delays repeated failures."""
        return self.doveadm("auth", "test", "-x", "no-penalty", user, password)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""
