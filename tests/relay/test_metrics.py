"""MAILSTACK_METRICS_LISTEN: /metrics of a real relay, counting real mail; an emptied
/etc/postfix refilled so pcre: tables work."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from mailstack import __version__
from mailstack.runtime.logparse import mail_event, parse_postfix_line, parse_syslog_message
from tests.helpers import Relay, Sink, base_env, free_port, message, running_relay, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str = "/metrics") -> tuple[int, str]:
    """GET over plain http.client: no proxy from the environment can get in the way."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by sample name and sorted labels."""
    status, text = get(port)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for_metric(port: int, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until `name` reaches `expected` (log lines are counted as they arrive)."""
    seen: list[Samples] = []

    def reached() -> bool:
        seen[:] = [scrape(port)]
        found = value(seen[0], name, **labels)
        return found is not None and found >= expected

    wait_for(reached, 30, f"{name}{labels} >= {expected}; last scrape: {seen}")
    return seen[0]


def send(port: int, sender: str, recipient: str, subject: str = "hello") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [recipient], message(sender, recipient, subject))


def metrics_env(root: Path, port: int, metrics_port: int, **extra: str) -> dict[str, str]:
    """A relay for example.com with its metrics on `metrics_port`."""
    return base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        MAILSTACK_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        **extra,
    )


def exit_code(root: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a relay expected to stop on its own: its exit code and log."""
    relay = Relay(root, env)
    relay.start(wait=False)
    try:
        return relay.wait_exit(), relay.log
    finally:
        relay.cleanup()


class _TempFail:
    """An upstream that answers every RCPT with 451, so Postfix must defer."""

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        return "451 4.3.0 try again later"


@contextlib.contextmanager
def tempfail_sink() -> Iterator[int]:
    port = free_port()
    controller = Controller(_TempFail(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("postfix/cleanup[9]: 4ABC12: message-id=<1@test>", "received"),
        ("postfix/cleanup[9]: 4ABC12: message-id=<>", "received"),
        ("postfix/qmgr[9]: 4ABC12: from=<a@example.com>, size=300, nrcpt=1 (queue active)", None),
        (
            "postfix/smtp[9]: 4ABC12: to=<b@x.net>, relay=h[1.2.3.4]:25, status=sent (ok)",
            "sent",
        ),
        (
            "postfix/lmtp[9]: 4ABC12: to=<b@x.net>, dsn=4.3.0, status=deferred (451 later)",
            "deferred",
        ),
        (
            "postfix/relay/smtp[9]: 4ABC12: to=<b@x.net>, dsn=5.1.1, status=bounced (550 no)",
            "bounced",
        ),
        ("postfix/error[9]: 4ABC12: to=<b@x.net>, dsn=4.4.1, status=deferred (suspended)", None),
        (
            "postfix/submission/smtpd[9]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 "
            "5.7.1 <a@elsewhere.test>: Sender address rejected: Access denied",
            "rejected",
        ),
        (
            "postfix/submission/smtpd[9]: NOQUEUE: milter-reject: CONNECT from localhost"
            "[127.0.0.1]: 451 4.7.1 Service unavailable - try again later",
            "rejected",
        ),
        ("postfix/smtpd[9]: NOQUEUE: reject_warning: RCPT from x[1.2.3.4]: 554 no", None),
        ("postfix/submission/smtpd[9]: 4ABC12: client=localhost[127.0.0.1]", None),
    ],
)
def test_mail_event_names_the_counted_postfix_lines(line: str, event: str | None) -> None:
    """The lines the counters see, in the form postlogd writes them (pure parsing)."""
    assert mail_event(parse_postfix_line(line)) == event


def test_mail_event_counts_opendkim_signatures() -> None:
    signed = parse_syslog_message(
        "<22>Nov 21 12:00:00 opendkim[7]: 4ABC12: DKIM-Signature field added (s=mail, d=a.test)"
    )
    other = parse_syslog_message("<22>Nov 21 12:00:00 opendkim[7]: OpenDKIM Filter starting")
    assert (mail_event(signed), mail_event(other)) == ("dkim_signed", None)


def test_metrics_count_sent_signed_and_rejected_mail(root: Path, port: int, sink: Sink) -> None:
    """Sent, received and DKIM-signed match the mail sent; a foreign sender is rejected."""
    metrics_port = free_port()
    env = metrics_env(
        root, port, metrics_port, RELAYHOST=f"[127.0.0.1]:{sink.port}", DKIM_AUTOGENERATE="1"
    )
    with running_relay(root, env) as relay:
        for number in range(3):
            send(port, "app@example.com", "someone@example.net", f"mail {number}")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(port, "app@elsewhere.test", "someone@example.net")
        sink.wait_messages(3)
        wait_for_metric(metrics_port, "mailstack_messages_sent_total", 3)
        wait_for_metric(metrics_port, "mailstack_dkim_signed_total", 3)
        samples = wait_for_metric(metrics_port, "mailstack_messages_rejected_total", 1)
        assert "serving metrics on http://127.0.0.1:" in relay.log
        assert get(metrics_port, "/")[0] == 404
    assert value(samples, "mailstack_messages_sent_total") == 3
    assert value(samples, "mailstack_dkim_signed_total") == 3
    assert value(samples, "mailstack_messages_received_total") == 3
    assert value(samples, "mailstack_messages_rejected_total") == 1
    assert value(samples, "mailstack_messages_deferred_total") == 0
    assert value(samples, "mailstack_messages_bounced_total") == 0
    for daemon in ("postfix", "opendkim"):
        assert value(samples, "mailstack_daemon_up", daemon=daemon) == 1
        assert value(samples, "mailstack_daemon_restarts_total", daemon=daemon) == 0
    assert value(samples, "mailstack_info", version=__version__, profile="relay") == 1
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        assert value(samples, "mailstack_queue_messages", queue=queue) is not None, queue
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", metrics_port), 2):
        pass  # the endpoint went away with mailstack


def test_deferred_mail_counted_and_seen_in_the_queue(root: Path, port: int) -> None:
    """An upstream answering 451: the deferral is counted and the mail waits in deferred/."""
    metrics_port = free_port()
    with tempfail_sink() as upstream:
        env = metrics_env(root, port, metrics_port, RELAYHOST=f"[127.0.0.1]:{upstream}")
        with running_relay(root, env):
            send(port, "app@example.com", "someone@example.net")
            wait_for_metric(metrics_port, "mailstack_messages_deferred_total", 1)
            samples = wait_for_metric(metrics_port, "mailstack_queue_messages", 1, queue="deferred")
    assert value(samples, "mailstack_messages_sent_total") == 0
    assert value(samples, "mailstack_messages_received_total") == 1
    assert value(samples, "mailstack_daemon_up", daemon="postfix") == 1
    assert value(samples, "mailstack_daemon_up", daemon="opendkim") is None, "no DKIM keys"


def test_restarted_daemon_is_counted(root: Path, port: int) -> None:
    """A killed OpenDKIM is restarted: its restart counter goes to 1 and it is up again."""
    metrics_port = free_port()
    env = metrics_env(root, port, metrics_port, DKIM_AUTOGENERATE="1")
    with running_relay(root, env) as relay:
        pid = int(re.findall(r"started opendkim \(pid (\d+)\)", relay.log)[-1])
        os.kill(pid, signal.SIGKILL)
        wait_for_metric(metrics_port, "mailstack_daemon_restarts_total", 1, daemon="opendkim")
        wait_for(lambda: relay.log.count("opendkim is ready") >= 2, 30, "opendkim restarted")
        samples = scrape(metrics_port)
    assert value(samples, "mailstack_daemon_restarts_total", daemon="opendkim") == 1
    assert value(samples, "mailstack_daemon_up", daemon="opendkim") == 1
    assert value(samples, "mailstack_daemon_restarts_total", daemon="postfix") == 0


@pytest.mark.parametrize("bad", ["9090", "127.0.0.1:70000", "localhost:metrics"])
def test_bad_metrics_listen_is_a_config_error(root: Path, port: int, bad: str) -> None:
    env = base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com", MAILSTACK_METRICS_LISTEN=bad)
    code, log = exit_code(root, env)
    assert code == 78
    assert "MAILSTACK_METRICS_LISTEN" in log
    assert "started postfix" not in log


def test_busy_metrics_port_stops_start_up(root: Path, port: int) -> None:
    """Another process on the metrics port: exit 69 naming it, before any daemon starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        code, log = exit_code(root, metrics_env(root, port, busy))
    assert code == 69
    assert f"metrics: cannot listen on 127.0.0.1:{busy}" in log
    assert "started postfix" not in log


def test_empty_etc_postfix_is_refilled_for_pcre_tables(root: Path, port: int, sink: Sink) -> None:
    """An empty /etc/postfix (tmpfs, emptyDir) gets dynamicmaps.cf back, so pcre: works.

    meta_directory points Postfix at the root's folder, as it is in the container (where the
    root is /); without the restored dynamicmaps.cf the pcre: table below would be refused.
    """
    config = root / "etc/postfix"
    config.mkdir(parents=True)
    rules = root / "rewrite.pcre"
    rules.write_text("/^Subject: secret plans$/ REPLACE Subject: rewritten by pcre\n")
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        SMTP_HEADER_CHECKS=f"pcre:{rules}",
        POSTFIX_meta_directory=str(config),
    )
    with running_relay(root, env) as relay:
        assert "pcre" in (config / "dynamicmaps.cf").read_text()
        assert (config / "postfix-files").is_file()
        assert relay.postconf("-h", "meta_directory").strip() == str(config)
        send(port, "app@example.com", "someone@example.net", "secret plans")
        ((_, received),) = sink.wait_messages(1)
    assert received["Subject"] == "rewritten by pcre"
