"""The sender milter behind a real Postfix: SASL logins checked by a real Dovecot, the
datastore read through the lookup service's gateway, every accepted message relayed to a
sink. A user may put in From: only addresses the store says they own.

Every daemon (lookup service with the milter on its loop, Dovecot, Postfix, the sink) is
stopped in its fixture's teardown, also when a test fails.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from milter_harness import PrivatePostfix, running_postfix
from server_harness import DovecotServer, RunningLookup, free_port, shared_tempdir
from tests.helpers import Sink, smtp_sink, wait_for

from mailstack.lookup.gateway import StoreGateway
from mailstack.lookup.resolver import Resolver
from mailstack.milter import SenderMilter, protocol
from mailstack.store import MailStore, create_engine_for

PASSWORD = "correct horse battery"
ALICE = "alice@a.example"
BOB = "bob@a.example"
CEO = "ceo@b.example"
SALES = "sales@b.example"  # an alias in the other hosted domain, delivering to alice
FRIEND = "friend@remote.test"


@pytest.fixture
def mail(sqlite_store: MailStore) -> MailStore:
    """Two hosted domains: a.example (alice, bob) and b.example (ceo; sales -> alice)."""
    sqlite_store.add_domain("a.example")
    sqlite_store.add_domain("b.example")
    for user in (ALICE, BOB, CEO):
        sqlite_store.add_user(user, PASSWORD)
    sqlite_store.add_alias(SALES, ALICE)
    return sqlite_store


@pytest.fixture
def milter(mail: MailStore, lookup: RunningLookup) -> Iterator[SenderMilter]:
    """The milter on the lookup service's loop and gateway, as the worker runs it."""
    folder = shared_tempdir("mailstack-milter-")
    server = SenderMilter(lookup.service.gateway)
    try:
        lookup.loop.run(server.start(path=folder / "sender.sock", mode=0o666))
        yield server
    finally:
        lookup.loop.run(server.stop())
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def submission(
    lookup: RunningLookup, dovecot: DovecotServer, milter: SenderMilter, sink: Sink
) -> Iterator[PrivatePostfix]:
    """Postfix as on the submission port: SASL required, envelope sender checked against
    the login, then the sender milter; mail goes to the sink."""
    # The test Dovecot has no listener for Postfix; its client socket speaks the same
    # protocol, and smtpd runs as postfix.
    (dovecot.root / "run" / "auth-client").chmod(0o666)
    socketmap = f"socketmap:inet:127.0.0.1:{lookup.socketmap_port}"
    options = {
        "relayhost": f"[127.0.0.1]:{sink.port}",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": str(dovecot.root / "run" / "auth-client"),
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sender_login_maps": f"{socketmap}:senderlogin",
        # clients here are remote users: Postfix must not add a missing From: for them
        "local_header_rewrite_clients": "",
        "milter_protocol": "6",
        "milter_default_action": "tempfail",
    }
    smtpd_options = {
        "syslog_name": "postfix/submission",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_client_restrictions": "permit_sasl_authenticated,reject",
        "smtpd_sender_restrictions": "reject_non_fqdn_sender,reject_sender_login_mismatch",
        "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
        "milter_macro_daemon_name": "ORIGINATING",
        "smtpd_milters": f"unix:{milter.address}",
    }
    with running_postfix(options, smtpd_options) as postfix:
        yield postfix


def message(header_from: str | None, subject: str) -> bytes:
    lines = [f"From: {header_from}"] if header_from is not None else []
    lines += [
        f"To: {FRIEND}",
        f"Subject: {subject}",
        "Date: Sat, 21 Nov 2026 12:00:00 +0000",
        f"Message-ID: <{time.monotonic_ns()}@client.test>",
        "",
        "Hello.",
    ]
    return "\r\n".join(lines).encode() + b"\r\n"


def send(
    client: smtplib.SMTP, envelope_from: str, header_from: str | None, subject: str
) -> tuple[int, str]:
    """(250, "") when Postfix took the message, else the first refusal's code and text."""
    try:
        client.sendmail(envelope_from, [FRIEND], message(header_from, subject))
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode()
    return 250, ""


def submit(
    postfix: PrivatePostfix,
    login: str,
    envelope_from: str,
    header_from: str | None,
    subject: str,
) -> tuple[int, str]:
    with postfix.smtp() as client:
        try:
            client.login(login, PASSWORD)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        return send(client, envelope_from, header_from, subject)


def subjects(sink: Sink) -> list[str]:
    return [str(msg["Subject"]) for _, msg in sink.messages]


def test_own_address_is_accepted_and_delivered(submission: PrivatePostfix, sink: Sink) -> None:
    assert submit(submission, ALICE, ALICE, f"Alice <{ALICE}>", "own") == (250, "")
    ((envelope, delivered),) = sink.wait_messages(1)
    assert envelope.mail_from == ALICE
    assert delivered["From"] == f"Alice <{ALICE}>"
    assert delivered["Subject"] == "own"


def test_another_hosted_users_address_is_refused(submission: PrivatePostfix, sink: Sink) -> None:
    """The envelope is alice's own (Postfix's check passes); the From: is the CEO's, in
    the other hosted domain. Refused at the end of DATA; each message of the session is
    judged with the session's login."""
    with submission.smtp() as client:
        client.login(ALICE, PASSWORD)
        assert send(client, ALICE, ALICE, "before") == (250, "")
        code, text = send(client, ALICE, f"The CEO <{CEO}>", "forged")
        assert code == 550
        assert text.startswith("5.7.1 ")
        assert f"<{CEO}> not owned by user {ALICE}" in text
        # the next message of the same session is judged afresh
        assert send(client, ALICE, ALICE, "after") == (250, "")
    sink.wait_messages(2)
    # whatever was queued has left the queue: a wrongly accepted message would be at the sink
    wait_for(lambda: submission.queued() == [], 30, "an empty queue")
    assert sorted(subjects(sink)) == ["after", "before"]
    assert "milter-reject: END-OF-MESSAGE" in submission.log()


def test_alias_owner_may_send_as_the_alias(submission: PrivatePostfix, sink: Sink) -> None:
    assert submit(submission, ALICE, ALICE, f"Sales <{SALES}>", "alias") == (250, "")
    assert submit(submission, ALICE, SALES, SALES, "alias envelope") == (250, "")
    sink.wait_messages(2)
    assert sorted(subjects(sink)) == ["alias", "alias envelope"]
    # bob receives nothing for sales@, so he may not use it
    code, text = submit(submission, BOB, BOB, SALES, "not bob's")
    assert code == 550
    assert "not owned by user bob@a.example" in text


def test_every_from_address_must_be_owned(submission: PrivatePostfix, sink: Sink) -> None:
    code, text = submit(submission, ALICE, ALICE, f"Alice <{ALICE}>, {CEO}", "two")
    assert (code, CEO in text) == (550, True)
    code, text = submit(submission, ALICE, ALICE, None, "no from")
    assert code == 550
    assert "no From: header" in text
    code, text = submit(submission, ALICE, ALICE, f"{CEO} <{ALICE}>", "ambiguous")
    assert code == 550
    assert "cannot be parsed" in text
    assert submit(submission, ALICE, ALICE, f'"{CEO}" <{ALICE}>', "quoted name") == (250, "")
    sink.wait_messages(1)
    assert subjects(sink) == ["quoted name"]


def test_envelope_check_still_applies(submission: PrivatePostfix) -> None:
    """Postfix's own check runs first: the envelope sender must be owned too."""
    code, text = submit(submission, ALICE, CEO, ALICE, "envelope")
    assert code == 553
    assert "not owned by user" in text


def test_store_outage_defers(submission: PrivatePostfix, milter: SenderMilter, sink: Sink) -> None:
    """A store the milter cannot read gives 451 4.3.0 (the client retries), never a pass."""
    dead = StoreGateway(
        Resolver(create_engine_for(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")),
        workers=1,
        timeout=5,
    )
    healthy, milter.gateway = milter.gateway, dead
    try:
        code, text = submit(submission, ALICE, ALICE, f"The CEO <{CEO}>", "outage")
        assert code == 451
        assert text.startswith("4.3.0 ")
        assert submit(submission, ALICE, ALICE, ALICE, "outage own") == (451, text)
    finally:
        milter.gateway = healthy
        dead.close()
    assert submit(submission, ALICE, ALICE, ALICE, "recovered") == (250, "")
    sink.wait_messages(1)
    assert subjects(sink) == ["recovered"]


def test_milter_down_defers(
    submission: PrivatePostfix, milter: SenderMilter, lookup: RunningLookup, sink: Sink
) -> None:
    """milter_default_action = tempfail: without the milter nothing is accepted, whether
    it dies during a session or is gone when one starts."""
    with submission.smtp() as client:
        client.login(ALICE, PASSWORD)
        assert send(client, ALICE, ALICE, "before") == (250, "")
        sink.wait_messages(1)
        lookup.loop.run(milter.stop())  # closes the open milter connection too
        code, text = send(client, ALICE, ALICE, "during")
        assert 400 <= code < 500, (code, text)
    assert not Path(str(milter.address)).exists()
    code, text = submit(submission, ALICE, ALICE, ALICE, "after")
    assert 400 <= code < 500, (code, text)
    assert "milter-reject: CONNECT from localhost[127.0.0.1]: 451 4.7.1" in submission.log()
    wait_for(lambda: submission.queued() == [], 30, "an empty queue")
    assert subjects(sink) == ["before"]


# -- the milter alone, spoken to as Postfix would -------------------------------------------


class MilterClient:
    """A raw milter connection: send packets, read replies."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.decoder = protocol.PacketDecoder()
        self.replies: list[protocol.Packet] = []

    def send(self, command: bytes, data: bytes = b"") -> None:
        self.sock.sendall(protocol.encode_packet(command, data))

    def reply(self) -> protocol.Packet | None:
        """The next reply, or None when the milter closed the connection."""
        while not self.replies:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.replies += self.decoder.feed(chunk)
        return self.replies.pop(0)

    def negotiate(self) -> protocol.Options:
        self.send(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        answer = self.reply()
        assert answer is not None
        assert answer.command == b"O"
        return protocol.decode_optneg(answer.data)

    def message(self, login: str | None, *from_values: str) -> protocol.Packet | None:
        """MAIL with the login macro, the headers, EOH: the verdict."""
        macros = f"{{auth_authen}}\0{login}\0" if login else ""
        self.send(b"D", b"M" + macros.encode())
        self.send(b"M", f"<{login}>\0".encode())
        assert self.reply() == protocol.Packet(b"c")
        for value in ("To", FRIEND), *(("From", v) for v in from_values):
            self.send(b"L", f"{value[0]}\0{value[1]}\0".encode())  # no reply: NR_HDR
        self.send(b"D", b"Ni\0ABC123\0")
        self.send(b"N")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(milter: SenderMilter) -> Iterator[MilterClient]:
    connection = MilterClient(Path(str(milter.address)))
    try:
        yield connection
    finally:
        connection.close()


def test_a_session_of_several_messages(client: MilterClient) -> None:
    options = client.negotiate()
    assert options.protocol & protocol.NO_REPLY_HEADER
    refused = client.message(ALICE, CEO)
    assert refused is not None
    assert refused.command == b"y"
    assert refused.data.startswith(b"550 5.7.1 From: address <ceo@b.example>")
    client.send(b"A")  # ABORT: no reply, the message is forgotten
    assert client.message(ALICE, ALICE) == protocol.Packet(b"a")
    client.send(b"A")
    assert client.message(None, CEO) == protocol.Packet(b"a")  # not authenticated
    client.send(b"K")  # QUIT_NC: a new SMTP session follows, its own login
    assert client.message(BOB, BOB) == protocol.Packet(b"a")
    client.send(b"Q")
    assert client.reply() is None  # QUIT closes


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # absurd length
        b"\x00\x00\x00\x00",  # empty packet
        protocol.encode_packet(b"N"),  # a command before negotiation
        protocol.encode_packet(b"O", b"\x00\x00\x00\x06"),  # truncated OPTNEG
    ],
)
def test_garbage_closes_the_connection(
    client: MilterClient, milter: SenderMilter, junk: bytes
) -> None:
    client.sock.sendall(junk)
    assert client.reply() is None
    second = MilterClient(Path(str(milter.address)))  # the server goes on
    try:
        assert second.negotiate().version == 6
    finally:
        second.close()


def test_unknown_command_or_bad_header_closes_the_connection(milter: SenderMilter) -> None:
    for command, data in ((b"Z", b""), (b"L", b"From\0no terminator")):
        connection = MilterClient(Path(str(milter.address)))
        try:
            connection.negotiate()
            connection.send(command, data)
            assert connection.reply() is None
        finally:
            connection.close()


def test_socket_mode(milter: SenderMilter) -> None:
    assert (Path(str(milter.address)).stat().st_mode & 0o777) == 0o666
