"""Garbage, broken stores and dead databases: error replies, never a crashed server."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import free_port, running_lookup
from mailstack.lookup import netstring
from mailstack.store import MailStore

Postmap = Callable[[str, str], Any]
PASSWORD = "correct horse battery"
HELLO = b"H3\t2\t0\t\tmailstack\n"


def recv_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """Read until `done(data)` or the peer closes; the socket's timeout is the deadline."""
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def socketmap_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        return recv_until(sock, lambda d: netstring.decode(d, 200_000) is not None)


def dict_exchange(path: Path, payload: bytes, lines: int) -> list[bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        data = recv_until(sock, lambda d: d.count(b"\n") >= lines)
    return data.splitlines(keepends=True)


def test_socketmap_garbage_gets_an_error_reply(sqlite_store: MailStore, lookup, postmap) -> None:
    """Bad framing gets PERM (then close); odd requests get NOTFOUND; service goes on."""
    sqlite_store.add_domain("example.com")
    port = lookup.socketmap_port
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"99999999999:", b"3:abc;", b"\xff\xfe\x00"):
        assert socketmap_exchange(port, junk) == netstring.encode(b"PERM malformed request")
    for request in (b"nospace", b"domain ", b"\xff\xfe domain", b"domain \xff\xfe"):
        assert socketmap_exchange(port, netstring.encode(request)) == b"9:NOTFOUND ,"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        contextlib.suppress(ConnectionResetError, BrokenPipeError),  # a reset is a close too
    ):
        sock.sendall(os.urandom(64 * 1024))
        recv_until(sock, lambda d: False)  # a reply or a close, but never a hang
    assert postmap("domain", "example.com").value == "example.com"


def test_socketmap_pipelined_requests(sqlite_store: MailStore, lookup) -> None:
    """Several requests in one packet get their replies in order, on one connection."""
    sqlite_store.add_domain("example.com")
    requests = b"".join(netstring.encode(r) for r in (b"domain example.com", b"domain x.org") * 3)
    expected = (b"14:OK example.com," + b"9:NOTFOUND ,") * 3
    with socket.create_connection(("127.0.0.1", lookup.socketmap_port), timeout=10) as sock:
        sock.sendall(requests)
        assert recv_until(sock, lambda d: len(d) >= len(expected)) == expected


def test_dict_garbage_gets_an_error_reply(sqlite_store: MailStore, lookup) -> None:
    """Unknown commands and bad bytes get `F` replies; the same connection keeps serving."""
    sqlite_store.add_domain("example.com")
    sqlite_store.add_user("alice@example.com", PASSWORD)
    payload = (
        b"Lshared/userdb/alice@example.com\n"  # before HELLO
        + b"\x00\x01garbage\tbytes\n"
        + b"\xff\xfe\xfd\n"
        + HELLO
        + b"I\tnot-a-number\n"
        + b"Lshared/userdb/alice@example.com\talice@example.com\n"
        + b"Lpriv/sieve/name/active\n"
        + b"Lsomewhere/else\n"
    )
    replies = dict_exchange(lookup.dict_socket, payload, lines=7)
    assert [r[:1] for r in replies] == [b"F", b"F", b"F", b"F", b"O", b"N", b"N"]
    # the userdb answer (alice has no Sieve script: personal scripts off)
    assert replies[4] == b'O{"user": "alice@example.com", "sieve": ""}\n'

    assert dict_exchange(lookup.dict_socket, b"H9\t0\t0\t\tx\nLk\n", lines=1)[0].startswith(
        b"Funsupported dict protocol major version 9"
    )
    long_line = b"L" + b"x" * (70 * 1024) + b"\n"
    assert dict_exchange(lookup.dict_socket, HELLO + long_line, lines=1) == [b"Fline too long\n"]
    again = dict_exchange(
        lookup.dict_socket, HELLO + b"Lshared/passdb/alice@example.com\t\n", lines=1
    )
    assert again[0].startswith(b'O{"password": "{ARGON2ID}$argon2id$')


def test_dict_writes_are_refused(sqlite_store: MailStore, lookup) -> None:
    """Transactions get no reply until COMMIT, which fails: the store is read-only here."""
    payload = HELLO + b"B1\talice@example.com\nS1\tpriv/x\ty\nU1\tpriv/z\nC1\n"
    assert dict_exchange(lookup.dict_socket, payload, lines=1) == [b"F1\tread-only dict\n"]


def test_broken_store_gives_temporary_failures(
    sqlite_store: MailStore, lookup, postmap: Postmap
) -> None:
    """While the store cannot answer, Postfix gets TEMP and Dovecot a dict failure; once it
    answers again, so does the service, without a restart."""
    sqlite_store.add_domain("example.com")
    sqlite_store.add_user("alice@example.com", PASSWORD)
    with sqlite_store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE users RENAME TO users_away"))
        conn.execute(text("ALTER TABLE domains RENAME TO domains_away"))
    try:
        result = postmap("domain", "example.com")
        assert not result.found
        assert "temporary error: store unavailable" in result.stderr
        replies = dict_exchange(
            lookup.dict_socket, HELLO + b"Lshared/passdb/alice@example.com\t\n", lines=1
        )
        assert replies == [b"Flookup failed: store unavailable\n"]
    finally:
        with sqlite_store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE users_away RENAME TO users"))
            conn.execute(text("ALTER TABLE domains_away RENAME TO domains"))
    assert postmap("domain", "example.com").found
    assert postmap("mailbox", "alice@example.com").found


def test_missing_database_then_created(tmp_path: Path, postfix_config: Path) -> None:
    """A lookup service started before its database exists answers TEMP, then recovers."""
    path = tmp_path / "later" / "mailstack.db"
    with running_lookup(str(path), timeout=5) as running:
        table = f"socketmap:inet:127.0.0.1:{running.socketmap_port}:domain"
        argv = ["postmap", "-c", str(postfix_config), "-q", "example.com", table]
        first = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        assert "temporary error" in first.stderr
        store = MailStore.open(path)
        try:
            store.add_domain("example.com")
            second = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
            assert second.stdout.strip() == "example.com"
        finally:
            store.close()


def test_unreachable_postgres_gives_temp(postfix_config: Path) -> None:
    """A PostgreSQL that refuses connections means TEMP, promptly."""
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/mailstack"
    with running_lookup(url, timeout=5) as running:
        table = f"socketmap:inet:127.0.0.1:{running.socketmap_port}:mailbox"
        argv = ["postmap", "-c", str(postfix_config), "-q", "a@example.com", table]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        assert "temporary error: store unavailable" in result.stderr
        replies = dict_exchange(
            running.dict_socket, HELLO + b"Lshared/userdb/a@example.com\t\n", lines=1
        )
        assert replies == [b"Flookup failed: store unavailable\n"]


def test_lookups_from_postgres(postgres, postfix_config: Path) -> None:
    """The same answers come from a private PostgreSQL as from SQLite."""
    url = postgres.new_database()
    store = MailStore.open(url)
    try:
        store.add_domain("example.com")
        store.add_user("alice@example.com", PASSWORD)
        store.add_alias("@example.com", "alice@example.com")
        with running_lookup(url) as running:

            def query(map_name: str, key: str) -> str:
                table = f"socketmap:inet:127.0.0.1:{running.socketmap_port}:{map_name}"
                argv = ["postmap", "-c", str(postfix_config), "-q", key, table]
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
                return proc.stdout.strip()

            assert query("domain", "example.com") == "example.com"
            assert query("alias", "whoever@example.com") == "alice@example.com"
            assert query("senderlogin", "whoever@example.com") == "alice@example.com"
            store.remove_alias("@example.com")
            assert query("alias", "whoever@example.com") == ""
    finally:
        store.close()


def test_hung_database_hits_the_deadline(
    postfix_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that accepts connections but never answers costs one deadline, then TEMP."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)  # the kernel completes handshakes; nobody ever answers
        port = black_hole.getsockname()[1]
        caplog.set_level(logging.WARNING, logger="mailstack.lookup")
        with running_lookup(f"postgresql://nobody@127.0.0.1:{port}/x", timeout=0.5) as running:
            table = f"socketmap:inet:127.0.0.1:{running.socketmap_port}:domain"
            argv = ["postmap", "-c", str(postfix_config), "-q", "example.com", table]
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        assert "temporary error: store unavailable" in result.stderr
        assert "store did not answer within 0.5s" in caplog.text


def test_a_client_that_never_reads_cannot_grow_the_service(sqlite_store: MailStore, lookup) -> None:
    """Requests sent without ever reading a reply: once the replies back up, the service
    stops reading, so the client cannot push more than the socket buffers (without it
    would take all 40 MB and keep every reply in memory); others are still served."""
    sqlite_store.add_domain("example.com")
    request = netstring.encode(b"domain example.com")
    chunk = request * 4096
    sent = 0
    with socket.create_connection(("127.0.0.1", lookup.socketmap_port), timeout=10) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.settimeout(3)
        with contextlib.suppress(TimeoutError):
            while sent < 40 * 1024 * 1024:
                sent += hog.send(chunk)
        assert sent < 20 * 1024 * 1024, f"the service read {sent} bytes from a non-reader"
        with socket.create_connection(("127.0.0.1", lookup.socketmap_port), timeout=10) as ok:
            ok.sendall(request)
            assert ok.recv(100) == netstring.encode(b"OK example.com")
