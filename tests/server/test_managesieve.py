"""The ManageSieve server against real clients, a real SQLite store and the real sievec.

Clients: the `managesieve` Python package, Debian's `sieve-connect` (Perl, STARTTLS with
certificate verification), and a raw socket for what no polite client sends. Every server
runs on 127.0.0.1 on its own event loop thread and is stopped in the fixture's teardown.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import managesieve
import pytest
import trustme
from server_harness import LoopThread
from sqlalchemy import text

from mailstack.managesieve import ManageSieveServer
from mailstack.sieve import SIEVE_EXTENSIONS, SieveCheckUnavailable, check_script
from mailstack.store import MailStore
from mailstack.throttle import LoginThrottle

PASSWORD = "correct horse battery"
ALICE = "alice@example.com"
BOB = "bob@example.com"  # disabled
GOOD_SCRIPT = """\
require ["fileinto", "mailbox", "envelope", "vacation", "imap4flags", "regex",
         "variables", "body", "date", "relational"];
if header :regex "subject" "^\\\\[list\\\\]" { fileinto :create "Lists"; stop; }
if envelope :is "from" "boss@example.net" { addflag "\\\\Flagged"; }
if body :contains "unsubscribe" { fileinto "Bulk"; }
if currentdate :value "ge" "hour" "18" { set "late" "yes"; }
vacation :days 3 "Away (\u00e9t\u00e9)";
"""
BAD_SCRIPT = 'require "fileinto";\nkeep;\nfileinto2 "x";\n'
COMPILER_MESSAGE = "line 3: unknown command 'fileinto2'"

Serve = Callable[..., ManageSieveServer]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def seeded_store(sqlite_store: MailStore) -> MailStore:
    """example.com with alice (enabled) and bob (disabled)."""
    sqlite_store.add_domain("example.com")
    sqlite_store.add_user(ALICE, PASSWORD)
    sqlite_store.add_user(BOB, PASSWORD, enabled=False)
    return sqlite_store


@pytest.fixture
def serve(seeded_store: MailStore) -> Iterator[Serve]:
    """Start servers on 127.0.0.1:0; all of them are stopped at teardown, also on failure."""
    loop = LoopThread()
    servers: list[ManageSieveServer] = []

    def start(**options: Any) -> ManageSieveServer:
        options.setdefault("auth_failure_delay", 0)
        options.setdefault("throttle", LoginThrottle(base_delay=0, max_delay=0))
        server = ManageSieveServer(seeded_store, **options)
        servers.append(server)
        loop.run(server.start("127.0.0.1", 0))
        return server

    try:
        yield start
    finally:
        try:
            for server in servers:
                loop.run(server.stop())
        finally:
            loop.close()


@pytest.fixture
def plain_port(serve: Serve) -> int:
    """A server without TLS (loopback), where logins in clear text are fine."""
    return serve().port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A self-signed CA, a server context for 127.0.0.1, and the CA file for clients."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


@pytest.fixture
def tls_port(serve: Serve, tls: tuple[ssl.SSLContext, Path]) -> int:
    return serve(ssl_context=tls[0]).port


@contextlib.contextmanager
def client(port: int, **options: Any) -> Iterator[managesieve.MANAGESIEVE]:
    """The `managesieve` package's client; its socket is closed however the test ends."""
    conn = managesieve.MANAGESIEVE("127.0.0.1", port, timeout=20, **options)
    try:
        yield conn
    finally:
        conn.sock.close()


class Raw:
    """A bare socket speaking just enough ManageSieve to read replies, literals included."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        self.greeting = self.reply()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        """One logical line: a literal announced at its end is read into it."""
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"connection closed; unread: {self.buffer!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        literal = re.search(rb"\{(\d+)\+?\}$", line)
        if literal:
            size = int(literal.group(1))
            while len(self.buffer) < size:
                if not self._fill():
                    raise EOFError("connection closed inside a literal")
            line, self.buffer = line + b"\r\n" + self.buffer[:size], self.buffer[size:]
            line += self.line()
        return line

    def reply(self) -> list[bytes]:
        """Lines up to and including the OK/NO/BYE that ends a reply."""
        lines = [self.line()]
        while not lines[-1].startswith((b"OK", b"NO", b"BYE")):
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, data: bytes) -> bytes:
        """Send one command (CRLF added) and return its final status line."""
        self.send(data + b"\r\n")
        return self.reply()[-1]

    def login(self, user: str = ALICE, password: str = PASSWORD) -> bytes:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"'.encode())

    def closed(self) -> bool:
        """True once the server has closed the connection (reads what is left first)."""
        with contextlib.suppress(ConnectionError):
            while self._fill():
                pass
        return True


@contextlib.contextmanager
def raw(port: int) -> Iterator[Raw]:
    conn = Raw(port)
    try:
        yield conn
    finally:
        conn.close()


def sieve_connect(
    port: int, ca_file: Path, *args: str, user: str = ALICE, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    """Debian's sieve-connect: STARTTLS verified against our CA, then PLAIN."""
    return subprocess.run(
        ["sieve-connect", "--server", "127.0.0.1", "--port", str(port), "--nosrv",
         "--user", user, "--passwordfd", "0", "--tlscafile", str(ca_file), *args],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip


def scripts(store: MailStore, user: str = ALICE) -> dict[str, bool]:
    """The user's scripts as the store sees them: name -> active."""
    return {s.name: s.active for s in store.list_scripts(user)}


# -- the checker ----------------------------------------------------------------------------


def test_checker_accepts_a_script_using_common_extensions() -> None:
    assert check_script(GOOD_SCRIPT) is None
    assert check_script("") is None


@pytest.mark.parametrize("extension", SIEVE_EXTENSIONS)
def test_checker_accepts_every_advertised_extension(extension: str) -> None:
    """The SIEVE capability promises only what sievec really compiles (extracttext needs
    variables and foreverypart alongside)."""
    script = f'require ["variables", "foreverypart", "{extension}"];\nkeep;\n'
    assert check_script(script) is None


def test_checker_returns_the_compiler_message_without_temp_paths() -> None:
    assert check_script(BAD_SCRIPT) == COMPILER_MESSAGE
    several = check_script('require "nosuchext";\nkeep;\nredirect;\n')
    assert several is not None
    lines = several.splitlines()
    assert lines[0].startswith("line 1: require command: unknown Sieve capability")
    assert (
        lines[1]
        == "line 3: the redirect command requires 1 positional argument(s), but 0 is/are specified"
    )
    unclosed = check_script("if true { stop")
    assert unclosed == (
        "line 1: expected end of command ';' or the beginning of a compound block '{', "
        "but found end of file"
    )
    assert "/tmp" not in several
    assert "script.sieve" not in several
    assert check_script("keep;\n" * 200_000) == "sieve script is too large (max 1048576 bytes)"


def test_checker_refuses_include_since_scripts_live_in_the_database() -> None:
    problem = check_script('require "include";\ninclude :personal "other";\n')
    assert problem is not None
    assert problem.startswith("line 2: include:")


def test_checker_without_sievec_says_so() -> None:
    with pytest.raises(SieveCheckUnavailable, match="dovecot-sieve"):
        check_script("keep;", sievec="mailstack-no-such-sievec")


# -- upload, activate, read back ------------------------------------------------------------


def test_upload_and_activate_shows_in_the_store(seeded_store: MailStore, plain_port: int) -> None:
    with client(plain_port) as conn:
        assert "fileinto" in conn.capabilities
        assert conn.implementation.startswith("mailstack")
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.havespace("main", len(GOOD_SCRIPT)) == "OK"
        assert conn.putscript("main", GOOD_SCRIPT) == "OK"
        assert conn.putscript("spare", "keep;\n") == "OK"
        assert conn.setactive("main") == "OK"
        assert conn.listscripts() == ("OK", [("main", True), ("spare", False)])
        assert conn.getscript("main") == ("OK", GOOD_SCRIPT)
        assert conn.logout() == "OK"
    assert scripts(seeded_store) == {"main": True, "spare": False}
    assert seeded_store.get_script(ALICE, "main").content == GOOD_SCRIPT


def test_invalid_script_is_refused_with_the_compiler_message(
    seeded_store: MailStore, plain_port: int
) -> None:
    with client(plain_port) as conn:
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.putscript("broken", BAD_SCRIPT) == "NO"
        assert conn.response_text == COMPILER_MESSAGE
        assert conn.putscript("main", "keep;\n") == "OK"
        assert conn.putscript("main", BAD_SCRIPT) == "NO"  # replacing keeps the old one
    assert scripts(seeded_store) == {"main": False}
    assert seeded_store.get_script(ALICE, "main").content == "keep;\n"
    with raw(plain_port) as conn:
        assert conn.login().startswith(b"OK")
        bad = BAD_SCRIPT.encode()
        reply = conn.command(b"CHECKSCRIPT {%d+}\r\n%s" % (len(bad), bad))
        assert reply == b'NO "' + COMPILER_MESSAGE.encode() + b'"'
        good = b"keep;\r\n"
        assert conn.command(b"CHECKSCRIPT {%d+}\r\n%s" % (len(good), good)).startswith(b"OK")
        several = b"redirect;\r\nfoo;\r\n"
        reply = conn.command(b"CHECKSCRIPT {%d}\r\n%s" % (len(several), several))
        assert reply.startswith(b"NO {")  # two lines of errors travel as a literal
        assert b"line 2: unknown command 'foo'" in reply
    assert scripts(seeded_store) == {"main": False}


def test_sieve_connect_over_starttls(
    seeded_store: MailStore, tls_port: int, tls: tuple[ssl.SSLContext, Path], tmp_path: Path
) -> None:
    ca_file = tls[1]
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text(GOOD_SCRIPT)
    bad.write_text(BAD_SCRIPT)
    upload = sieve_connect(
        tls_port, ca_file, "--localsieve", str(good), "--remotesieve", "main", "--upload"
    )
    assert upload.returncode == 0, upload.stderr
    activate = sieve_connect(tls_port, ca_file, "--remotesieve", "main", "--activate")
    assert activate.returncode == 0, activate.stderr
    listing = sieve_connect(tls_port, ca_file, "--list")
    assert listing.stdout.splitlines() == ['"main" ACTIVE']
    download = sieve_connect(
        tls_port, ca_file, "--remotesieve", "main", "--localsieve", "-", "--download"
    )
    assert download.stdout == GOOD_SCRIPT
    refused = sieve_connect(
        tls_port, ca_file, "--localsieve", str(bad), "--remotesieve", "bad", "--upload"
    )
    assert refused.returncode != 0
    assert COMPILER_MESSAGE in refused.stderr
    check = sieve_connect(tls_port, ca_file, "--localsieve", str(bad), "--checkscript")
    assert check.returncode != 0
    assert COMPILER_MESSAGE in check.stderr
    deactivate = sieve_connect(tls_port, ca_file, "--deactivate")
    assert deactivate.returncode == 0, deactivate.stderr
    assert scripts(seeded_store) == {"main": False}
    wrong = sieve_connect(tls_port, ca_file, "--list", password="wrong password")
    assert wrong.returncode != 0
    assert "Authentication refused" in wrong.stderr


# -- TLS and logins -------------------------------------------------------------------------


def test_starttls_then_login(
    seeded_store: MailStore, tls_port: int, tls: tuple[ssl.SSLContext, Path], monkeypatch
) -> None:
    """Before TLS no mechanism is offered and AUTHENTICATE is refused; after it, both work."""
    with raw(tls_port) as conn:
        assert b'"STARTTLS"' in conn.greeting
        assert b'"SASL" ""' in conn.greeting
        assert conn.login().startswith(b"NO (ENCRYPT-NEEDED)")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[1]))  # the client trusts the system store
    with client(tls_port, use_tls=True) as conn:
        assert isinstance(conn.sock, managesieve.SSLFakeSocket)
        assert conn.supports_tls == 0  # STARTTLS is not offered again inside TLS
        assert conn.loginmechs == ["PLAIN", "LOGIN"]
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.putscript("main", "keep;\n") == "OK"
    assert scripts(seeded_store) == {"main": False}


def test_plaintext_login_can_be_allowed(serve: Serve, tls: tuple[ssl.SSLContext, Path]) -> None:
    port = serve(ssl_context=tls[0], allow_plaintext_auth=True).port
    with client(port) as conn:
        assert conn.supports_tls
        assert conn.login("", ALICE, PASSWORD) == "OK"


def test_starttls_with_pipelined_data_is_refused(tls_port: int) -> None:
    """Bytes sent in clear after STARTTLS must not count as sent inside TLS."""
    with raw(tls_port) as conn:
        conn.send(b"STARTTLS\r\nCAPABILITY\r\n")
        assert conn.reply()[-1].startswith(b"BYE")
        assert conn.closed()


def test_wrong_password_unknown_and_disabled_users_are_refused(
    seeded_store: MailStore, plain_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailstack.managesieve")
    with client(plain_port) as conn:
        assert conn.login("", ALICE, "not the password") == "NO"
        assert conn.login("", "nobody@example.com", PASSWORD) == "NO"
        assert conn.login("", ALICE, PASSWORD) == "OK"
    with client(plain_port) as conn:
        assert conn.login("", BOB, PASSWORD) == "NO"
        assert conn.response_text == "authentication failed"
    seeded_store.enable_user(BOB)
    with client(plain_port) as conn:
        assert conn.login("", BOB, PASSWORD) == "OK"
    assert "authentication failed for 'alice@example.com'" in caplog.text
    assert PASSWORD not in caplog.text
    assert "not the password" not in caplog.text


def test_repeated_failures_end_the_connection(plain_port: int) -> None:
    with raw(plain_port) as conn:
        assert conn.login(password="x").startswith(b"NO")
        assert conn.login(password="y").startswith(b"NO")
        conn.send(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0a@example.com\0z") + b'"\r\n')
        assert conn.reply()[-1].startswith(b"NO")
        assert conn.line().startswith(b"BYE")
        assert conn.closed()


def test_sasl_continuations_login_and_cancel(plain_port: int) -> None:
    """AUTHENTICATE without initial response, LOGIN step by step, `*` to cancel."""
    plain = base64.b64encode(f"{ALICE}\0{ALICE}\0{PASSWORD}".encode())
    with raw(plain_port) as conn:
        conn.send(b'AUTHENTICATE "PLAIN"\r\n')
        assert conn.line() == b'""'
        conn.send(b"{%d+}\r\n%s\r\n" % (len(plain), plain))
        assert conn.reply()[-1].startswith(b"OK")
        assert conn.command(b"LISTSCRIPTS").startswith(b"OK")
        assert conn.command(b"UNAUTHENTICATE").startswith(b"OK")
        assert conn.command(b"LISTSCRIPTS").startswith(b"NO")
    with raw(plain_port) as conn:
        conn.send(b'AUTHENTICATE "LOGIN"\r\n')
        assert base64.b64decode(conn.line().strip(b'"')) == b"Username:"
        conn.send(b'"' + base64.b64encode(ALICE.encode()) + b'"\r\n')
        assert base64.b64decode(conn.line().strip(b'"')) == b"Password:"
        conn.send(b'"' + base64.b64encode(PASSWORD.encode()) + b'"\r\n')
        assert conn.reply()[-1].startswith(b"OK")
        conn.send(b"CAPABILITY\r\n")
        assert b'"OWNER" "alice@example.com"' in conn.reply()
    with raw(plain_port) as conn:
        conn.send(b'AUTHENTICATE "PLAIN"\r\n')
        assert conn.line() == b'""'
        assert conn.command(b'"*"') == b'NO "authentication cancelled"'
        assert conn.command(b'AUTHENTICATE "CRAM-MD5"').startswith(b"NO")
        assert conn.command(b'AUTHENTICATE "PLAIN" "not base64!"').startswith(b"NO")
        assert conn.login().startswith(b"OK")


# -- script rules ---------------------------------------------------------------------------


def test_rename_and_delete_rules(seeded_store: MailStore, plain_port: int) -> None:
    seeded_store.put_script(ALICE, "one", "keep;\n", activate=True)
    seeded_store.put_script(ALICE, "two", "discard;\n")
    with raw(plain_port) as conn:
        assert conn.login().startswith(b"OK")
        assert conn.command(b'DELETESCRIPT "one"').startswith(b"NO (ACTIVE)")
        assert conn.command(b'RENAMESCRIPT "one" "two"').startswith(b"NO (ALREADYEXISTS)")
        assert conn.command(b'RENAMESCRIPT "nope" "three"').startswith(b"NO (NONEXISTENT)")
        assert conn.command(b'RENAMESCRIPT "one" "a/b"').startswith(b"NO")
        assert conn.command(b'RENAMESCRIPT "one" "main"').startswith(b"OK")
        assert scripts(seeded_store) == {"main": True, "two": False}  # still the active one
        assert conn.command(b'DELETESCRIPT "nope"').startswith(b"NO (NONEXISTENT)")
        assert conn.command(b'GETSCRIPT "nope"').startswith(b"NO (NONEXISTENT)")
        assert conn.command(b'SETACTIVE "nope"').startswith(b"NO (NONEXISTENT)")
        assert conn.command(b'DELETESCRIPT "two"').startswith(b"OK")
        assert conn.command(b'SETACTIVE ""').startswith(b"OK")
        assert conn.command(b'DELETESCRIPT "main"').startswith(b"OK")
        assert conn.command(b'HAVESPACE "x" 99999999').startswith(b"NO (QUOTA/MAXSIZE)")
        assert conn.command(b'NOOP "tag-1"') == b'OK (TAG "tag-1") "Done"'
    assert scripts(seeded_store) == {}


def test_unicode_names_and_content_round_trip(seeded_store: MailStore, plain_port: int) -> None:
    content = 'require "fileinto";\n# caf\u00e9 \u2603\nfileinto "Archiv/\u00dcbersicht";\n'
    with client(plain_port) as conn:
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.putscript("r\u00e8gles", content) == "OK"
        assert conn.setactive("r\u00e8gles") == "OK"
        assert conn.getscript("r\u00e8gles") == ("OK", content)
    assert scripts(seeded_store) == {"r\u00e8gles": True}


def test_store_outage_answers_trylater(seeded_store: MailStore, plain_port: int) -> None:
    """While the database cannot answer, clients are told to retry; then all works again."""
    with client(plain_port) as conn:
        assert conn.login("", ALICE, PASSWORD) == "OK"
        with seeded_store.engine.begin() as db:
            db.execute(text("ALTER TABLE sieve_scripts RENAME TO sieve_scripts_away"))
        try:
            assert conn.listscripts()[0] == "NO"
            assert conn.response_code == "TRYLATER"
            assert conn.putscript("main", "keep;\n") == "NO"
            assert conn.response_code == "TRYLATER"
        finally:
            with seeded_store.engine.begin() as db:
                db.execute(text("ALTER TABLE sieve_scripts_away RENAME TO sieve_scripts"))
        assert conn.putscript("main", "keep;\n") == "OK"
    with seeded_store.engine.begin() as db:
        db.execute(text("ALTER TABLE users RENAME TO users_away"))
    try:
        with client(plain_port) as conn:
            assert conn.login("", ALICE, PASSWORD) == "NO"
            assert conn.response_code == "TRYLATER"
    finally:
        with seeded_store.engine.begin() as db:
            db.execute(text("ALTER TABLE users_away RENAME TO users"))


def test_without_sievec_uploads_are_deferred_not_stored(
    seeded_store: MailStore, serve: Serve
) -> None:
    """No compiler, no verdict: NO (TRYLATER), and nothing unchecked reaches the store."""
    port = serve(checker=functools.partial(check_script, sievec="mailstack-no-such-sievec")).port
    with client(port) as conn:
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.putscript("main", "keep;\n") == "NO"
        assert conn.response_code == "TRYLATER"
        assert conn.listscripts() == ("OK", [])
    assert scripts(seeded_store) == {}


# -- robustness -----------------------------------------------------------------------------


def test_garbage_huge_literals_and_half_lines_leave_the_server_working(
    seeded_store: MailStore, plain_port: int
) -> None:
    with raw(plain_port) as conn:  # binary noise: NO answers, then the connection is dropped
        conn.send(os.urandom(4096).replace(b"\n", b"") + b"\r\n")
        assert conn.reply()[-1].startswith((b"NO", b"BYE"))
    with raw(plain_port) as conn:
        for junk in (b"GET / HTTP/1.1", b'"quoted" first', b'PUTSCRIPT "open', b"\xff\xfe"):
            assert conn.command(junk).startswith(b"NO")
        assert conn.command(b"CAPABILITY").startswith(b"OK")
    with raw(plain_port) as conn:
        for _ in range(9):
            assert conn.command(b"BOGUS").startswith(b"NO")
        assert conn.command(b"BOGUS").startswith(b"NO")
        assert conn.line() == b'BYE "too many invalid commands, closing the connection"'
    with raw(plain_port) as conn:  # a line longer than any command
        conn.send(b"NOOP " + b"x" * 100_000 + b"\r\n")
        assert conn.reply()[-1].startswith(b'BYE "line longer than')
    with raw(plain_port) as conn:  # a literal no script could need
        assert conn.login().startswith(b"OK")
        assert conn.command(b'PUTSCRIPT "x" {99999999999+}').startswith(b"BYE")
    with raw(plain_port) as conn:  # over the script limit but skippable: NO, and go on
        assert conn.login().startswith(b"OK")
        big = b"#" * (2 * 1024 * 1024)
        reply = conn.command(b'PUTSCRIPT "big" {%d+}\r\n%s' % (len(big), big))
        assert reply.startswith(b"NO (QUOTA/MAXSIZE)")
        assert conn.command(b"NOOP").startswith(b"OK")
    for half in (b"LISTSCR", b'PUTSCRIPT "x" {100+}\r\nkeep;', b'AUTHENTICATE "PLAIN"\r\n'):
        with raw(plain_port) as conn:
            conn.send(half)  # and hang up mid-command
    with socket.create_connection(("127.0.0.1", plain_port), timeout=20):
        pass  # connect and leave without reading the greeting
    with client(plain_port) as conn:
        assert conn.login("", ALICE, PASSWORD) == "OK"
        assert conn.putscript("main", "keep;\n") == "OK"
    assert scripts(seeded_store) == {"main": False}


def test_idle_clients_are_disconnected(serve: Serve) -> None:
    """A silent client is dropped: before login after the short pre-login timeout, after
    login only after the long one."""
    port = serve(prelogin_idle_timeout=0.2, idle_timeout=60).port
    with raw(port) as conn:
        assert conn.line() == b'BYE "no command for too long, closing the connection"'
        assert conn.closed()
    with raw(port) as conn:
        assert conn.login().startswith(b"OK")
        time.sleep(0.6)  # three pre-login timeouts: a logged-in session stays
        assert conn.command(b"NOOP").startswith(b"OK")
    port = serve(idle_timeout=0.2).port
    with raw(port) as conn:
        assert conn.login().startswith(b"OK")
        assert conn.line() == b'BYE "no command for too long, closing the connection"'


def test_big_literals_before_login_end_the_connection(serve: Serve) -> None:
    """Before login nobody needs more than a few KB: a bigger literal ends the connection at
    once instead of being read (an attacker cannot park megabytes in the worker)."""
    port = serve().port
    with raw(port) as conn:
        conn.send(b'AUTHENTICATE "PLAIN" {10000+}\r\n')
        assert conn.reply()[-1].startswith(b"BYE")
        assert conn.closed()
    with raw(port) as conn:  # the same after login is read, refused with NO, and skipped
        assert conn.login().startswith(b"OK")
        reply = conn.command(b"CHECKSCRIPT {10000+}\r\n" + b"#" * 10000)
        assert reply.startswith(b"OK") or reply.startswith(b"NO"), reply
        assert conn.command(b"NOOP").startswith(b"OK")


def test_connections_are_limited_per_client_and_in_all(serve: Serve) -> None:
    """One client address cannot hold more than its share; the rest get BYE and a close."""
    port = serve(max_per_client=2, max_connections=50).port
    first, second = Raw(port), Raw(port)
    try:
        third = socket.create_connection(("127.0.0.1", port), timeout=20)
        with third:
            assert b'BYE "too many connections' in third.recv(4096)
        second.close()
        again = Raw(port)  # a freed place is free again
        assert again.command(b"NOOP").startswith(b"OK")
        again.close()
    finally:
        first.close()
        second.close()
    port = serve(max_per_client=10, max_connections=1).port
    with raw(port) as conn:
        other = socket.create_connection(
            ("127.0.0.1", port), timeout=20, source_address=("127.0.0.2", 0)
        )
        with other:
            assert b'BYE "too many connections' in other.recv(4096)
        assert conn.command(b"NOOP").startswith(b"OK")


def test_failed_logins_slow_down_the_address_and_the_account(serve: Serve) -> None:
    """Failures are counted across connections, for the client address and the account
    (known or not), in the throttle every login path shares."""
    throttle = LoginThrottle(base_delay=0.01, max_delay=0.05)
    port = serve(throttle=throttle).port
    assert throttle.delay("127.0.0.1", ALICE) == 0
    with raw(port) as conn:
        assert conn.login(password="wrong").startswith(b"NO")
    assert throttle.delay("127.0.0.9", ALICE) > 0  # the account, from anywhere
    assert throttle.delay("127.0.0.1", "carol@example.com") > 0  # the address, any account
    with raw(port) as conn:  # an unknown account counts the same way
        conn.send(
            b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0nobody@example.com\0x") + b'"\r\n'
        )
        assert conn.reply()[-1].startswith(b"NO")
    assert throttle.delay("127.0.0.9", "nobody@example.com") > 0
    with raw(port) as conn:  # the right password still works, only later
        assert conn.login().startswith(b"OK")


def test_stop_closes_open_sessions(seeded_store: MailStore) -> None:
    loop = LoopThread()
    server = ManageSieveServer(seeded_store, auth_failure_delay=0)
    try:
        loop.run(server.start("127.0.0.1", 0))
        with raw(server.port) as conn:
            assert conn.login().startswith(b"OK")
            loop.run(server.stop())
            assert conn.closed()
        loop.run(server.stop())  # a second stop is harmless
    finally:
        try:
            loop.run(server.stop())
        finally:
            loop.close()
