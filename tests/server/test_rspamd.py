"""rspamd behind a real Postfix, as on the server's port 25: the rendered configuration, a
real Redis and rspamd on Unix sockets, a private Postfix whose smtpd has
`smtpd_milters = unix:<rspamd's milter socket>` and relays what it accepts to a sink.

rspamd's test patterns decide the verdict (XJS... rejects, YJS... adds the spam header), so
no real spam and no DNS are needed. Every daemon is stopped in its fixture's teardown, also
when a test fails.
"""

from __future__ import annotations

import email.utils
import os
import signal
import smtplib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from email.message import Message
from pathlib import Path

import pytest
from milter_harness import PrivatePostfix, running_postfix
from rspamd_harness import (
    SpamStack,
    listening_tcp_inodes,
    redis_keys,
    running_spam,
    socket_inodes,
    unix_http,
    wait_gone,
)
from tests.helpers import Sink, smtp_outcome, smtp_sink, wait_for

from mailstack.render.rspamd import RSPAMD_USER, SpamPaths
from mailstack.runtime.spam import is_running, rspamd_processes, stop_leftover_rspamd

pytestmark = pytest.mark.daemons

MX_NAME = "mx.mailstack.test"
REJECT_PATTERN = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEADER_PATTERN = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SENDER = "friend@remote.test"
#: Where the test client appears to connect from (XCLIENT): an internet address. rspamd
#: skips SPF, DKIM and DMARC for loopback and private ("local") addresses.
CLIENT_ADDRESS = "203.0.113.25"
CLIENT_NAME = "mail.remote.test"
RECIPIENT = "alice@a.example"


def mx_postfix(spam: SpamPaths, sink: Sink) -> AbstractContextManager[PrivatePostfix]:
    """Postfix as the server's port 25 sees rspamd: the milter on the smtpd, a 4xx while
    it cannot be asked; accepted mail is relayed to the sink."""
    options = {
        "myhostname": MX_NAME,
        # the MX takes mail for its domain from anywhere and hands it to the sink
        "relay_domains": RECIPIENT.partition("@")[2],
        "relay_transport": f"smtp:[127.0.0.1]:{sink.port}",
        "relayhost": f"[127.0.0.1]:{sink.port}",
        "milter_protocol": "6",
        "milter_default_action": "tempfail",
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    }
    return running_postfix(options, {"smtpd_milters": f"unix:{spam.milter_socket}"})


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture(scope="module")
def stack(rspamd_cache: Path) -> Iterator[SpamStack]:
    with running_spam(rspamd_cache) as running:
        yield running


@pytest.fixture(scope="module")
def mx(stack: SpamStack, sink: Sink) -> Iterator[PrivatePostfix]:
    with mx_postfix(stack.spam, sink) as postfix:
        yield postfix


def message(subject: str, body: str = "Shall we meet for lunch on Friday?") -> bytes:
    lines = [
        f"From: Friend <{SENDER}>",
        f"To: Alice <{RECIPIENT}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{time.monotonic_ns()}@remote.test>",
        "",
        body,
    ]
    return "\r\n".join(lines).encode() + b"\r\n"


def remote_client(postfix: PrivatePostfix) -> smtplib.SMTP:
    """An SMTP session Postfix (and so rspamd) sees as coming from CLIENT_ADDRESS."""
    client = postfix.smtp()
    client.ehlo()
    code, text = client.docmd("XCLIENT", f"ADDR={CLIENT_ADDRESS} NAME={CLIENT_NAME}")
    assert code == 220, (code, text)
    client.ehlo_resp = None
    client.ehlo(CLIENT_NAME)
    return client


def send_raw(postfix: PrivatePostfix, data: bytes) -> tuple[int, str]:
    """(250, "") when Postfix took the message, else the refusal's code and text."""
    with remote_client(postfix) as client:
        return smtp_outcome(client, SENDER, RECIPIENT, data)


def send(postfix: PrivatePostfix, subject: str, body: str | None = None) -> tuple[int, str]:
    return send_raw(postfix, message(subject) if body is None else message(subject, body))


def received(sink: Sink, subject: str) -> Message:
    """The message with `subject` once it reached the sink."""

    def found() -> Message | None:
        return next((m for _, m in sink.messages if m["Subject"] == subject), None)

    wait_for(lambda: found() is not None, 60, f"{subject!r} at the sink")
    msg = found()
    assert msg is not None
    return msg


def subjects(sink: Sink) -> list[str]:
    return [str(m["Subject"]) for _, m in sink.messages]


# -- verdicts -----------------------------------------------------------------------------------


def test_spam_pattern_is_refused_at_data_and_never_delivered(
    mx: PrivatePostfix, sink: Sink
) -> None:
    code, text = send(mx, "reject pattern", f"Buy now.\r\n{REJECT_PATTERN}")

    assert (code, text.split()[0]) == (554, "5.7.1"), (code, text)
    assert mx.queued() == []
    # a clean message sent after it arrives; the refused one was never queued, so it
    # cannot arrive later
    assert send(mx, "after the reject pattern") == (250, "")
    received(sink, "after the reject pattern")
    assert "reject pattern" not in subjects(sink)


def test_header_pattern_is_delivered_marked_as_spam(mx: PrivatePostfix, sink: Sink) -> None:
    assert send(mx, "header pattern", f"Cheap pills.\r\n{HEADER_PATTERN}") == (250, "")

    msg = received(sink, "header pattern")
    # a test pattern ends the scan at once: the proxy's verdict header is there, the
    # milter_headers module never ran (the clean message's test shows those)
    assert msg.get_all("X-Spam") == ["Yes"]


def test_a_sender_cannot_bring_its_own_verdict(mx: PrivatePostfix, sink: Sink) -> None:
    body = "Hello again."
    forged = message("forged verdict", body).replace(
        b"Subject:", b"X-Spam: No\r\nX-Spam-Status: No, score=-50\r\nSubject:", 1
    )
    assert send_raw(mx, forged) == (250, "")

    msg = received(sink, "forged verdict")
    assert msg.get_all("X-Spam") is None
    assert msg.get_all("X-Spam-Status") == [msg["X-Spam-Status"]]
    assert str(msg["X-Spam-Status"]).startswith("No, score=")
    assert "-50" not in str(msg["X-Spam-Status"])


def test_clean_message_is_delivered_with_authentication_results(
    mx: PrivatePostfix, sink: Sink, stack: SpamStack
) -> None:
    assert send(mx, "clean") == (250, "")

    msg = received(sink, "clean")
    results = str(msg["Authentication-Results"])
    # rspamd names the MTA (Postfix's myhostname) as the one that checked
    assert results.startswith(f"{MX_NAME};"), results
    for method in ("dkim=", "spf=", "dmarc="):
        assert method in results, results
    assert msg["X-Spam"] is None
    assert msg["X-Rspamd-Action"] == "no action"
    assert str(msg["X-Spam-Status"]).startswith("No, score=")
    assert msg["X-Rspamd-Queue-Id"]
    # rspamd keeps its history in the private Redis, over the Unix socket
    assert any(key.startswith("rs_history") for key in redis_keys(stack.spam))


# -- sockets, processes -------------------------------------------------------------------------


def test_rspamd_and_redis_listen_on_unix_sockets_only(stack: SpamStack) -> None:
    pids = rspamd_processes(stack.spam)
    assert len(pids) >= 4, pids  # main, proxy, normal, controller (and the regex compiler)
    assert stack.redis.proc is not None
    owned = set().union(*(socket_inodes(p) for p in [*pids, stack.redis.proc.pid]))
    assert owned, "no sockets found"
    assert not owned & listening_tcp_inodes()
    # the controller answers over its socket, without a password
    status, body = unix_http(stack.spam.controller_socket, "/ping")
    assert (status, body.strip()) == (200, b"pong")
    # workers run as _rspamd, not root
    workers = [p for p in pids if p != stack.rspamd.proc.pid] if stack.rspamd.proc else []
    assert workers
    for pid in workers:
        assert Path(f"/proc/{pid}").owner() == RSPAMD_USER


# -- rspamd down --------------------------------------------------------------------------------


def test_mail_waits_with_4xx_while_rspamd_is_down(rspamd_cache: Path) -> None:
    """milter_default_action = tempfail: nothing is accepted unchecked, nothing is lost; the
    sender's retry goes through once rspamd is back."""
    with (
        running_spam(rspamd_cache) as stack,
        smtp_sink() as sink,
        mx_postfix(stack.spam, sink) as mx,
    ):
        assert send(mx, "before the stop") == (250, "")
        received(sink, "before the stop")

        stack.rspamd.stop()
        code, text = send(mx, "while rspamd is down")
        assert (code, text.split()[0]) == (451, "4.7.1"), (code, text)  # at MAIL FROM
        assert mx.queued() == []

        stack.start(stack.rspamd)
        assert send(mx, "while rspamd is down") == (250, "")  # the sender's retry
        received(sink, "while rspamd is down")
        assert subjects(sink).count("while rspamd is down") == 1


def test_workers_of_a_killed_rspamd_are_found_and_stopped(rspamd_cache: Path) -> None:
    """rspamd's workers outlive a main process killed with SIGKILL and keep the sockets;
    the next start's preparation finds them by the control socket and stops them."""
    with running_spam(rspamd_cache) as stack:
        assert stack.rspamd.proc is not None
        main = stack.rspamd.proc.pid
        workers = [p for p in rspamd_processes(stack.spam) if p != main]
        os.kill(main, signal.SIGKILL)
        stack.rspamd.proc.wait(10)
        orphans = [p for p in workers if is_running(p)]
        assert orphans, workers  # still serving

        found = stop_leftover_rspamd(stack.spam)
        assert set(orphans) <= set(found), (orphans, found)
        wait_gone(workers)
        assert not any(is_running(p) for p in workers)
