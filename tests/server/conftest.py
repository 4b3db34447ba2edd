"""Fixtures for the server profile's store and lookup tests: real daemons, loopback only.

Every daemon started here (the lookup service, Dovecot, PostgreSQL) is stopped in the
fixture's teardown, also when the test fails. Waits poll a condition against a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_harness import (
    DICT_AUTH_CONF,
    DOVECOT_CONF,
    PG_BIN,
    DovecotServer,
    PostgresServer,
    RunningLookup,
    as_postgres,
    free_port,
    port_open,
    running_lookup,
    shared_tempdir,
    stop_process,
    wait_for,
)

from mailstack.store import MailStore, open_engine


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL: initdb into a temp folder, pg_ctl on a loopback high port."""
    folder = shared_tempdir("mailstack-pg-")
    data = folder / "data"
    shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        as_postgres(
            str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N"
        ),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    started = False
    try:
        subprocess.run(
            as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
                "-l", str(folder / "postgres.log"), "-w", "-t", "30", "start",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        started = True
        yield PostgresServer(port)
    finally:
        if started:
            subprocess.run(
                as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(folder, ignore_errors=True)


# -- the store ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against SQLite (a file) and a private PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()
        return str(tmp_path / "db" / "mailstack.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[MailStore]:
    mail_store = MailStore(open_engine(store_url))
    try:
        yield mail_store
    finally:
        mail_store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[MailStore]:
    """A store on SQLite only, for the lookup tests (the daemons are the point there)."""
    mail_store = MailStore.open(tmp_path / "mailstack.db")
    try:
        yield mail_store
    finally:
        mail_store.close()


@pytest.fixture
def lookup(sqlite_store: MailStore) -> Iterator[RunningLookup]:
    with running_lookup(str(sqlite_store.engine.url)) as running:
        yield running


# -- Postfix's postmap as a socketmap client ------------------------------------------------


@pytest.fixture(scope="session")
def postfix_config() -> Iterator[Path]:
    """postmap only needs a main.cf to exist; nothing in it matters for `postmap -q`."""
    folder = Path(tempfile.mkdtemp(prefix="mailstack-postmap-"))
    (folder / "main.cf").write_text("compatibility_level = 3.6\n")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class PostmapResult:
    returncode: int
    value: str
    stderr: str

    @property
    def found(self) -> bool:
        return self.returncode == 0


@pytest.fixture
def postmap(postfix_config: Path, lookup: RunningLookup) -> Callable[[str, str], PostmapResult]:
    """`postmap -q KEY socketmap:inet:127.0.0.1:PORT:MAP` against the running lookup."""

    def query(map_name: str, key: str) -> PostmapResult:
        table = f"socketmap:inet:127.0.0.1:{lookup.socketmap_port}:{map_name}"
        proc = subprocess.run(
            ["postmap", "-c", str(postfix_config), "-q", key, table],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return PostmapResult(proc.returncode, proc.stdout.strip(), proc.stderr)

    return query


# -- Dovecot --------------------------------------------------------------------------------


@pytest.fixture
def dovecot(lookup: RunningLookup) -> Iterator[DovecotServer]:
    """A private Dovecot whose passdb, userdb and sieve come from the lookup service."""
    root = shared_tempdir("mailstack-dovecot-")
    (root / "mail").mkdir()
    shutil.chown(root / "mail", "dovecot", "dovecot")
    ports = {"port_imap": free_port(), "port_lmtp": free_port()}
    config = root / "dovecot.conf"
    config.write_text(DOVECOT_CONF.format(root=root, dict_socket=lookup.dict_socket, **ports))
    (root / "dict-auth.conf.ext").write_text(DICT_AUTH_CONF.format(dict_socket=lookup.dict_socket))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(config)], stderr=subprocess.PIPE)
    server = DovecotServer(root, config, ports["port_imap"], ports["port_lmtp"])
    try:
        wait_for(
            lambda: (
                proc.poll() is None
                and (root / "run" / "auth-client").exists()
                and port_open(server.imap_port)
                and port_open(server.lmtp_port)
            ),
            timeout=20,
            what="dovecot to listen",
        )
        yield server
    except BaseException:
        print(server.log()[-4000:])  # shown by pytest with the failure
        raise
    finally:
        stop_process(proc)  # SIGTERM to the master stops all of its children
        shutil.rmtree(root, ignore_errors=True)


# -- rspamd ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rspamd_cache() -> Iterator[Path]:
    """rspamd's compiled regex cache, shared by every rspamd of the session so that only the
    first start is cold. MAILSTACK_TEST_RSPAMD_CACHE names a folder kept between sessions."""
    kept = os.environ.get("MAILSTACK_TEST_RSPAMD_CACHE")
    if kept:
        yield Path(kept)
        return
    base = os.environ.get("MAILSTACK_TEST_DIR", "/var/tmp")
    folder = Path(tempfile.mkdtemp(prefix="mailstack-rspamd-cache-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
