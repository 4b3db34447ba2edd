"""Relay and MX abuse from outside: a client bound to 127.0.0.2.

Two targets, each with an aiosmtpd sink as RELAYHOST that records whatever would leave:
the relay profile with `POSTFIX_mynetworks=127.0.0.1/32` (so 127.0.0.2 is a stranger) on
both its listeners, and the server profile's MX (port 25, where nobody logs in). Every
address trick that has opened relays (address literals, the percent hack, source routes,
quoted local parts, bang paths, UTF-8 with SMTPUTF8), CR/LF injected into commands,
pipelined commands before the greeting and before the replies, and SMTP smuggling in the
message data must not get mail to a foreign domain, and no hosted sender address may be
used from outside.
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import (
    Relay,
    Sink,
    base_env,
    free_port,
    message,
    private_root,
    running_relay,
    smtp_sink,
    wait_for,
)
from tests.security.harness import server_profile
from tests.server.mailserver import MailServer, Ports, deliver, wait_for_subject

OUTSIDE = "127.0.0.2"
TIMEOUT = 30

#: (recipient, MAIL FROM parameters): each must be refused at RCPT from outside.
FOREIGN_RECIPIENTS = [
    ("victim@elsewhere.test", ""),
    ("VICTIM@ELSEWHERE.TEST", ""),
    ("victim@elsewhere.test.", ""),
    ("victim@[127.0.0.1]", ""),  # our own address literal
    ("postmaster@[127.0.0.1]", ""),
    ("victim@[127.0.0.2]", ""),
    ("victim@[IPv6:::1]", ""),
    ("victim@localhost", ""),
    ("victim%elsewhere.test@example.com", ""),  # percent hack through a hosted domain
    ("victim%elsewhere.test@[127.0.0.1]", ""),
    ("@example.com:victim@elsewhere.test", ""),  # source route through a hosted domain
    ("@example.com,@mx.example.com:victim@elsewhere.test", ""),
    ('"victim@elsewhere.test"@example.com', ""),  # quoted local part holding an address
    ('"victim%elsewhere.test"@example.com', ""),
    ("elsewhere.test!victim@example.com", ""),  # bang path
    ("victim@elsewhere.test@example.com", ""),
    ("alice@example.com@elsewhere.test", ""),
    ("jos\u00e9@elsewhere.test", " SMTPUTF8"),  # UTF-8
    ("victim@\u00e9lsewhere.test", " SMTPUTF8"),
    ("victim@xn--lsewhere-gya.test", ""),
]

#: Envelope senders in the hosted domain (example.com): refused from outside.
HOSTED_SENDERS = [
    ("alice@example.com", ""),
    ("ALICE@Example.COM", ""),
    ("alice@example.com.", ""),
    ("nobody@example.com", ""),
    ('"alice"@example.com', ""),
    ('"alice smith"@example.com', ""),  # quoted local part
    ("alice..smith@example.com", ""),
    ("x" * 70 + "@example.com", ""),  # a local part longer than RFC 5321 allows
    ("@remote.test:alice@example.com", ""),  # source route
    ("alice%remote.test@example.com", ""),
    ("jos\u00e9@example.com", " SMTPUTF8"),  # UTF-8
]


@dataclass
class Target:
    """One listener under attack and the sink behind it."""

    name: str
    port: int
    sink: Sink
    daemon: Relay
    hosted_recipient: str  # an address the listener accepts mail for, or any for the relay


def smtp_from_outside(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP(
        "127.0.0.1",
        port,
        local_hostname="mail.remote.test",
        timeout=TIMEOUT,
        source_address=(OUTSIDE, 0),
    )
    client.command_encoding = "utf-8"  # SMTPUTF8 addresses go out as they are
    client.ehlo()
    return client


def rcpt_reply(target: Target, sender: str, params: str, recipient: str) -> tuple[int, bytes]:
    """MAIL and RCPT exactly as given; the reply to RCPT (or to MAIL, if that was refused)."""
    with smtp_from_outside(target.port) as client:
        code, text = client.docmd(f"MAIL FROM:<{sender}>{params}")
        if code != 250:
            return code, text
        code, text = client.docmd(f"RCPT TO:<{recipient}>")
        if code == 250:  # finish the transaction, as a spammer would
            client.docmd("DATA")
            client.send(message(sender, recipient, "abuse").replace(b"\r\n.", b"\r\n..") + b".\r\n")
            client.getreply()
        return code, text


Wait = Callable[[bytes], bool]  # is this step's reply complete?


def line(pattern: bytes) -> Wait:
    return lambda data: re.search(pattern, data) is not None


def replies(count: int) -> Wait:
    """`count` final reply lines (`250 ...`, not `250-...`)."""
    return lambda data: len(re.findall(rb"(?m)^\d{3}[ \r]", data)) >= count


GREETING = line(rb"^220 .*\r\n")
EHLO_DONE = line(rb"(?m)^250 .*\r\n")
EHLO = b"EHLO mail.remote.test\r\n"


def converse(port: int, steps: list[tuple[bytes, Wait | None]]) -> bytes:
    """Each step writes its bytes in one go, then reads until its reply is complete (None:
    until the server closes). The transcript of everything the server said until the end
    or until it hung up."""
    transcript = b""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=TIMEOUT, source_address=(OUTSIDE, 0)
    ) as sock:
        for data, done in steps:
            try:
                sock.sendall(data)
            except OSError:  # it hung up before this step
                return transcript
            said = b""
            while done is None or not done(said):
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:  # the server may hang up on abuse at any point
                    return transcript + said
                said += chunk
            transcript += said
    return transcript


def queued(transcript: bytes) -> list[str]:
    """Queue ids of the messages a session got accepted."""
    return [qid.decode() for qid in re.findall(rb"250 2\.0\.0 Ok: queued as (\w+)", transcript)]


def recipients(daemon: Relay, transcript: bytes) -> list[str]:
    """Whom the messages a session got accepted went to, once Postfix has dealt with them
    (delivered, deferred or bounced: each recipient gets a `to=` line)."""
    found = []
    for qid in queued(transcript):
        pattern = re.compile(rf"{qid}: to=<([^>]*)>")
        wait_for(lambda p=pattern: p.search(daemon.log) is not None, 30, f"the fate of {qid}")
        found += pattern.findall(daemon.log)
    return found


def assert_nothing_foreign(target: Target, transcript: bytes) -> None:
    """A stranger gets nothing at all into the relay; into the MX only mail for hosted
    mailboxes."""
    if target.name.startswith("relay"):
        assert queued(transcript) == [], transcript
    else:
        assert all(r.endswith("@example.com") for r in recipients(target.daemon, transcript)), (
            recipients(target.daemon, transcript),
            transcript,
        )


ENVELOPE = (
    b"MAIL FROM:<friend@remote.test>\r\n"
    b"RCPT TO:<victim@elsewhere.test>\r\n"
    b"RCPT TO:<victim%elsewhere.test@example.com>\r\n"
    b"RCPT TO:<@example.com:victim@elsewhere.test>\r\n"
    b"DATA\r\n"
)
BODY = b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n"
#: Several commands in one write: before the greeting, before the EHLO reply, and (as
#: PIPELINING allows) the whole envelope before any of its replies.
PIPELINED = {
    "before greeting": [(EHLO + ENVELOPE + BODY, None)],
    "before EHLO reply": [(b"", GREETING), (EHLO + ENVELOPE + BODY, None)],
    "before envelope replies": [
        (b"", GREETING),
        (EHLO, EHLO_DONE),
        (ENVELOPE, replies(5)),
        (BODY, None),
    ],
}

#: Commands with CR, LF or NUL inside; none may smuggle a foreign recipient in.
INJECTED = [
    b"MAIL FROM:<friend@remote.test>\nRCPT TO:<victim@elsewhere.test>\r\n",
    b"MAIL FROM:<friend@remote.test>\rRCPT TO:<victim@elsewhere.test>\r\n",
    b"MAIL FROM:<friend@remote.test>\r\nRCPT TO:<alice@example.com>\rRCPT TO:<v@else.test>\r\n",
    b"MAIL FROM:<friend@remote.test>\r\nRCPT TO:<alice@example.com>\nRCPT TO:<v@else.test>\r\n",
    b"MAIL FROM:<friend@remote.test>\r\nRCPT TO:<v@elsewhere.test>\x00@example.com>\r\n",
    b"MAIL FROM:<friend@remote.test>\r\nRCPT TO:<v@elsewhere.test\r\n>\r\n",
    b"MAIL FROM:<alice@example.com>\nRCPT TO:<alice@example.com>\r\n",
]

#: A message whose data hides a second transaction behind a non-standard end of data.
SMUGGLED = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
]


def smuggling(recipient: str, end: bytes) -> list[tuple[bytes, Wait | None]]:
    """A well-behaved client (EHLO, then MAIL, RCPT and DATA pipelined as PIPELINING
    allows) whose message hides a second transaction behind a non-standard end of data."""
    envelope = f"MAIL FROM:<friend@remote.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
    data = (
        b"Subject: carrier\r\n\r\nfirst message" + end + b"MAIL FROM:<alice@example.com>\r\n"
        b"RCPT TO:<victim@elsewhere.test>\r\n"
        b"DATA\r\n"
        b"From: alice@example.com\r\nSubject: smuggled\r\n\r\nsecond message\r\n.\r\n"
        b"QUIT\r\n"
    )
    return [(b"", GREETING), (EHLO, EHLO_DONE), (envelope.encode(), replies(3)), (data, None)]


# -- the two targets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay_profile() -> Iterator[tuple[Relay, Sink, int, int]]:
    with private_root() as root, smtp_sink() as sink:
        submission, smtp = free_port(), free_port()
        env = base_env(
            root,
            submission,
            ALLOWED_SENDER_DOMAINS="example.com",
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            POSTFIX_mynetworks="127.0.0.1/32",
            MAILSTACK_LISTEN_SMTP=f"127.0.0.1:{smtp}",
        )
        with running_relay(root, env) as relay:
            yield relay, sink, submission, smtp


@pytest.fixture(scope="module")
def mx() -> Iterator[tuple[MailServer, Sink, Ports]]:
    ports = Ports()
    with smtp_sink() as sink, server_profile(ports, RELAYHOST=f"[127.0.0.1]:{sink.port}") as server:
        yield server, sink, ports


@pytest.fixture(params=["relay 587", "relay 25", "mx 25"])
def target(
    request: pytest.FixtureRequest,
) -> Target:
    if request.param.startswith("relay"):
        relay, sink, submission, smtp = request.getfixturevalue("relay_profile")
        port = submission if request.param.endswith("587") else smtp
        return Target(request.param, port, sink, relay, "someone@example.net")
    server, sink, ports = request.getfixturevalue("mx")
    return Target(request.param, ports.smtp, sink, server, "alice@example.com")


# -- address tricks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("recipient", "params"), FOREIGN_RECIPIENTS)
def test_no_relaying_to_foreign_addresses(target: Target, recipient: str, params: str) -> None:
    for sender in ("friend@remote.test", "alice@example.com"):
        code, text = rcpt_reply(target, sender, params, recipient)
        assert code >= 500, f"{target.name}: {sender} -> {recipient}: {code} {text!r}"


@pytest.mark.parametrize(("sender", "params"), HOSTED_SENDERS)
def test_no_hosted_sender_from_outside(target: Target, sender: str, params: str) -> None:
    code, text = rcpt_reply(target, sender, params, target.hosted_recipient)
    assert code >= 500, f"{target.name}: {sender} -> {target.hosted_recipient}: {code} {text!r}"


# -- raw protocol abuse ------------------------------------------------------------------------


@pytest.mark.parametrize("when", list(PIPELINED))
def test_pipelined_commands_relay_nothing(target: Target, when: str) -> None:
    transcript = converse(target.port, PIPELINED[when])
    assert_nothing_foreign(target, transcript)


@pytest.mark.parametrize("data", INJECTED, ids=range(len(INJECTED)))
def test_cr_lf_nul_injected_into_commands_relay_nothing(target: Target, data: bytes) -> None:
    noop_done = line(rb"250 2\.0\.0 Ok\r\n")  # every reply to the injected lines is in
    transcript = converse(
        target.port,
        [
            (b"", GREETING),
            (EHLO, EHLO_DONE),
            (data + b"NOOP\r\n", noop_done),
            (b"DATA\r\n", replies(1)),
            (b"Subject: x\r\n\r\ny\r\n.\r\nQUIT\r\n", None),
        ],
    )
    assert_nothing_foreign(target, transcript)


@pytest.mark.parametrize("end", SMUGGLED, ids=[repr(e) for e in SMUGGLED])
def test_smuggled_second_message_relays_nothing(target: Target, end: bytes) -> None:
    transcript = converse(target.port, smuggling(target.hosted_recipient, end))
    assert_nothing_foreign(target, transcript)
    # the MX takes the carrier (to a hosted mailbox), never a second message
    assert len(queued(transcript)) == (0 if target.name.startswith("relay") else 1), transcript


# -- what left -------------------------------------------------------------------------------


def settled(daemon: Relay) -> bool:
    """Nothing in the incoming or active queue any more."""
    return not daemon.queue_ids("incoming") and not daemon.queue_ids("active")


def outbound_lines(log: str) -> list[str]:
    """Delivery attempts by Postfix's SMTP client, i.e. towards the relay host."""
    return [line for line in log.splitlines() if re.search(r"postfix/smtp\[\d+\]: \w+: to=", line)]


def test_nothing_reached_the_relay_host_from_the_mx(mx: tuple[MailServer, Sink, Ports]) -> None:
    """After every attack above (in this module's order, this runs last): no delivery
    attempt to the relay host at all, neither relayed mail nor bounces to forged senders;
    and mail from outside to a hosted user still arrives."""
    server, sink, ports = mx
    assert deliver(ports.smtp, "friend@remote.test", ["alice@example.com"], "still fine") == {}
    wait_for_subject(server, ports.imap, "alice@example.com", "still fine")
    wait_for(lambda: settled(server), 30, "the MX's queue to settle")
    assert sink.messages == [], [(e.mail_from, e.rcpt_tos) for e, _ in sink.messages]
    assert outbound_lines(server.log) == []


def test_only_mynetworks_mail_reached_the_relay_host(
    relay_profile: tuple[Relay, Sink, int, int],
) -> None:
    relay, sink, submission, _ = relay_profile
    with smtplib.SMTP("127.0.0.1", submission, timeout=TIMEOUT) as client:
        client.sendmail(
            "app@example.com", ["x@example.net"], message("app@example.com", "x@example.net")
        )
    sink.wait_messages(1)
    wait_for(lambda: settled(relay), 30, "the relay's queue to settle")
    assert [(e.mail_from, e.rcpt_tos) for e, _ in sink.messages] == [
        ("app@example.com", ["x@example.net"])
    ]
    assert relay.queue_ids("deferred") == []


def test_utf8_mail_from_outside_is_delivered_not_bounced_out(
    mx: tuple[MailServer, Sink, Ports],
) -> None:
    """SMTPUTF8 from a foreign UTF-8 sender to a hosted user: it reaches the mailbox (or is
    refused at SMTP time); accepting it and bouncing it later would send a notice to
    whatever address the client claimed (backscatter through the relay host)."""
    server, _, ports = mx
    sender = "jos\u00e9@remote.test"
    before = len(outbound_lines(server.log))
    with smtp_from_outside(ports.smtp) as client:
        try:
            refused = client.sendmail(
                sender,
                ["alice@example.com"],
                message(sender, "alice@example.com", "utf-8 sender").decode().encode("utf-8"),
                mail_options=["SMTPUTF8"],
            )
        except (smtplib.SMTPNotSupportedError, smtplib.SMTPSenderRefused):
            refused = None  # refused at SMTP time: the client knows, nothing is bounced
    wait_for(lambda: settled(server), 30, "the MX's queue to settle")
    assert outbound_lines(server.log)[before:] == []
    if refused is not None:
        assert refused == {}
        wait_for_subject(server, ports.imap, "alice@example.com", "utf-8 sender", timeout=10)
