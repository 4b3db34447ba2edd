"""Start, stop, crash and restart: no mail lost, none delivered twice."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import socket
from pathlib import Path

import pytest

from tests.helpers import (
    Relay,
    base_env,
    free_port,
    message,
    running_relay,
    smtp_sink,
    wait_for,
)


def test_queue_survives_graceful_stop_and_is_delivered_once(root: Path, port: int) -> None:
    upstream = free_port()
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{upstream}",
        DKIM_AUTOGENERATE="1",
    )
    relay = Relay(root, env).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for n in range(3):
                client.sendmail(
                    "app@example.com",
                    [f"r{n}@example.net"],
                    message("app@example.com", f"r{n}@example.net", subject=f"m{n}"),
                )
        wait_for(lambda: relay.log.count("status=deferred") >= 3, 30, "3 deferrals")
        # smtp logs a deferral before qmgr moves the file into the deferred queue.
        wait_for(lambda: len(relay.queue_ids("deferred")) == 3, 10, "3 deferred files")
        assert relay.stop() == 0
    finally:
        relay.cleanup()
    assert len(relay.queue_ids("deferred")) == 3
    assert "postfix stopped" in relay.log

    with smtp_sink(port=upstream) as sink, running_relay(root, env) as again:
        sink.wait_messages(3)
        wait_for(lambda: again.log.count("status=sent") >= 3, 30, "3 deliveries")
        wait_for(lambda: not again.queue_ids("deferred"), 10, "an empty queue")
        subjects = sorted(msg["Subject"] for _, msg in sink.messages)
    assert subjects == ["m0", "m1", "m2"], "each message exactly once"


def test_running_session_finishes_during_stop(root: Path, port: int) -> None:
    """SIGTERM mid-transaction: that message is still accepted, new clients get 421."""
    with smtp_sink() as sink:
        env = base_env(
            root,
            port,
            ALLOWED_SENDER_DOMAINS="example.com",
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            MAILSTACK_STOP_TIMEOUT="20",
        )
        relay = Relay(root, env).start()
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            client.ehlo("app.test")
            client.mail("app@example.com")
            client.rcpt("late@example.net")
            assert relay.proc is not None
            relay.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "waiting up to" in relay.log, 20, "the drain to begin")
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP("127.0.0.1", port, timeout=10)
            assert refused.value.smtp_code == 421
            code, _ = client.data(message("app@example.com", "late@example.net"))
            assert code == 250
            client.quit()
            assert relay.wait_exit(40) == 0
        finally:
            relay.cleanup()
    queued = relay.queue_ids("active") + relay.queue_ids("incoming") + relay.queue_ids("deferred")
    assert queued or sink.messages, "the accepted message is queued or delivered"


def test_crashed_opendkim_is_restarted(root: Path, port: int) -> None:
    env = base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com", DKIM_AUTOGENERATE="1")
    with running_relay(root, env) as relay:
        pid = int((root / "run/mailstack/opendkim/opendkim.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "opendkim exited unexpectedly" in relay.log, 20, "the crash to be seen")
        wait_for(lambda: relay.log.count("opendkim is ready") >= 2, 20, "opendkim restarted")
        new_pid = int((root / "run/mailstack/opendkim/opendkim.pid").read_text().split()[0])
        assert new_pid != pid


def test_busy_port_stops_start_up_with_a_clear_error(root: Path, port: int) -> None:
    """A Postfix that cannot listen (port taken) ends mailstack with 69, naming the address."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        relay = Relay(root, base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com"))
        relay.start(wait=False)
        try:
            assert relay.wait_exit(60) == 69
        finally:
            relay.cleanup()
    assert "postfix" in relay.log
    assert "Address already in use" in relay.log
    assert f"cannot listen on 127.0.0.1:{port}" in relay.log


def test_daemon_that_keeps_crashing_stops_mailstack(root: Path, port: int) -> None:
    """Restarts have a budget: the sixth crash within five minutes ends mailstack with 69."""
    env = base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com", DKIM_AUTOGENERATE="1")
    relay = Relay(root, env).start()
    try:
        for crash in range(1, 7):
            wait_for(lambda n=crash: relay.log.count("opendkim is ready") >= n, 60, "opendkim")
            pid = int(re.findall(r"started opendkim \(pid (\d+)\)", relay.log)[-1])
            os.kill(pid, signal.SIGKILL)
            if crash < 6:
                wait_for(
                    lambda n=crash: relay.log.count("opendkim exited unexpectedly") >= n,
                    20,
                    f"crash {crash} to be seen",
                )
        assert relay.wait_exit(60) == 69
    finally:
        relay.cleanup()
    assert "opendkim: exited 6 times within 300 s" in relay.log
    assert "postfix stopped" in relay.log, "Postfix is stopped cleanly on the way out"


def _ours(root: Path) -> list[int]:
    """Processes whose command line names this test's root (every daemon mailstack starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_killed_mailstack_leaves_nothing_in_the_way_of_the_next_start(
    root: Path, port: int
) -> None:
    """SIGKILL on the supervisor (a host install killed by the OOM killer, say): the next
    start stops what the killed one left (Postfix's master, OpenDKIM), gets the same ports
    and socket, and signs mail again; nothing of the first run is left after it."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        DKIM_AUTOGENERATE="1",
        RELAYHOST=f"[127.0.0.1]:{free_port()}",  # nobody there: the mail waits in the queue
    )
    relay = Relay(root, env).start()
    assert relay.proc is not None
    os.kill(relay.proc.pid, signal.SIGKILL)
    relay.proc.wait(10)
    first_run = set(_ours(root))
    try:
        assert first_run, "a daemon the kernel does not stop outlives its parent"
        with running_relay(root, env) as again:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(
                    "app@example.com", ["x@example.net"], message("app@example.com", "x")
                )
            wait_for(lambda: "DKIM-Signature field added" in again.log, 30, "a signature")
            assert not first_run & set(_ours(root))
    finally:
        for pid in first_run:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sighup_stops_gracefully(root: Path, port: int) -> None:
    """SIGHUP (a closed terminal) stops like SIGTERM: exit 0, no daemon left behind."""
    env = base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com", DKIM_AUTOGENERATE="1")
    relay = Relay(root, env).start()
    try:
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGHUP)
        assert relay.wait_exit(40) == 0
        assert "received SIGHUP: stopping" in relay.log
        wait_for(lambda: not _ours(root), 20, "every daemon to end")
    finally:
        relay.cleanup()
