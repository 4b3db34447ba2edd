"""Settings reach the daemons: pass-through, secrets from files, init scripts, refusals."""

from __future__ import annotations

import json
import smtplib
import subprocess
from pathlib import Path

from tests.helpers import MAILSTACK, Relay, Sink, base_env, message, running_relay


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILSTACK, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_refuses_to_start_without_sender_domains(root: Path, port: int) -> None:
    """No ALLOWED_SENDER_DOMAINS and no ALLOW_EMPTY_SENDER_DOMAINS: exit 78, variable named."""
    relay = Relay(root, base_env(root, port))
    relay.start(wait=False)
    try:
        assert relay.wait_exit() == 78
    finally:
        relay.cleanup()
    assert "ALLOWED_SENDER_DOMAINS" in relay.log
    assert not (root / "etc/postfix/main.cf").exists(), "nothing is written for a bad config"


def test_check_lists_every_problem(root: Path, port: int) -> None:
    env = base_env(
        root,
        port,
        LOG_FORMAT="xml",
        RELAYHOST="[::1:25",
        RELAYHOST_PASSWORD="a",
        RELAYHOST_PASSWORD_FILE=str(root / "pw"),
        POSTFIX_message_size_limit="lots",
    )
    result = run_cli("check", env=env)
    assert result.returncode == 78
    for variable in (
        "LOG_FORMAT",
        "RELAYHOST",
        "RELAYHOST_PASSWORD",
        "POSTFIX_message_size_limit",
        "ALLOWED_SENDER_DOMAINS",
    ):
        assert f"error: {variable}:" in result.stderr, result.stderr
    ok = run_cli("check", env=base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com"))
    assert ok.returncode == 0, ok.stderr


def test_postfix_and_opendkim_pass_through(root: Path, port: int) -> None:
    """POSTFIX_x / OPENDKIM_x set a parameter; an empty value removes it; k8s links ignored."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        DKIM_AUTOGENERATE="1",
        POSTFIX_smtpd_banner="$myhostname ESMTP ready",
        POSTFIX_header_size_limit="",
        POSTFIX_MAIL_SERVICE_PORT="tcp://10.0.0.1:587",
        OPENDKIM_Canonicalization="relaxed/relaxed",
        OPENDKIM_OversignHeaders="",
    )
    with running_relay(root, env) as relay:
        assert relay.postconf("-n", "smtpd_banner").strip() == (
            "smtpd_banner = $myhostname ESMTP ready"
        )
        assert relay.postconf("-n", "header_size_limit").strip() == "", "removed from main.cf"
        assert relay.postconf("-h", "header_size_limit").strip() == "102400", "built-in default"
        assert "MAIL_SERVICE_PORT" not in relay.postconf("-n")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            banner = client.connect("127.0.0.1", port)[1]
        assert banner == b"relay.mailstack.test ESMTP ready"
        conf = (root / "etc/opendkim/opendkim.conf").read_text()
    lines = {
        line.split()[0]: line.split()[1]
        for line in conf.splitlines()
        if line and not line.startswith("#")
    }
    assert lines["Canonicalization"] == "relaxed/relaxed"
    assert "OversignHeaders" not in lines


def test_secret_from_file_and_init_scripts(root: Path, port: int, sink: Sink) -> None:
    """RELAYHOST_PASSWORD_FILE is read; init scripts run in order, before the daemons."""
    secret = root / "secrets/relay-password"
    secret.parent.mkdir()
    secret.write_text("from-a-file\n")
    init = root / "docker-init.d"
    init.mkdir()
    (init / "10-first.sh").write_text('echo first >> "$MAILSTACK_ROOT/order"\n')
    (init / "20-second.sh").write_text(
        "echo second >> \"$MAILSTACK_ROOT/order\"\npostconf -e 'smtpd_banner = $myhostname init'\n"
    )
    (init / "notes.txt").write_text("not a script\n")
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        RELAYHOST_USERNAME="u",
        RELAYHOST_PASSWORD_FILE=str(secret),
    )
    with running_relay(root, env) as relay:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.ehlo()[0] == 250
        banner = relay.postconf("-h", "smtpd_banner").strip()
        passwd = (root / "etc/postfix/sasl_passwd").read_text()
        pid = relay.proc.pid if relay.proc else 0
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert (root / "order").read_text().split() == ["first", "second"]
    assert banner == "$myhostname init"
    assert "u:from-a-file" in passwd
    assert oct((root / "etc/postfix/sasl_passwd").stat().st_mode & 0o777) == "0o600"
    assert b"from-a-file" not in environ


def test_failing_init_script_stops_start_up(root: Path, port: int) -> None:
    init = root / "docker-init.d"
    init.mkdir()
    (init / "50-broken.sh").write_text("echo about to fail\nexit 3\n")
    relay = Relay(root, base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com"))
    relay.start(wait=False)
    try:
        assert relay.wait_exit() == 78
    finally:
        relay.cleanup()
    assert "50-broken.sh" in relay.log
    assert "exit code 3" in relay.log
    assert "started postfix" not in relay.log


def test_autogenerated_key_is_kept_across_restarts(root: Path, port: int) -> None:
    env = base_env(root, port, ALLOWED_SENDER_DOMAINS="example.com", DKIM_AUTOGENERATE="1")
    with running_relay(root, env) as relay:
        key = (root / "etc/opendkim/keys/example.com.private").read_bytes()
        record = (root / "etc/opendkim/keys/example.com.txt").read_text()
        assert "v=DKIM1" in record
        assert "publish this DNS record" in relay.log
    with running_relay(root, env) as relay:
        assert (root / "etc/opendkim/keys/example.com.private").read_bytes() == key
        assert "generated a new DKIM key" not in relay.log


def test_json_logs_parse_line_by_line(root: Path, port: int, sink: Sink) -> None:
    """LOG_FORMAT=json: every line is one object; delivery lines carry parsed fields."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        LOG_FORMAT="JSON",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        DKIM_AUTOGENERATE="1",
        MYNETWORKS="127.0.0.0/8",
    )
    with running_relay(root, env) as relay:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(
                "app@example.com", ["to@example.net"], message("app@example.com", "to@example.net")
            )
        sink.wait_messages(1)
        from tests.helpers import wait_for

        wait_for(lambda: "status=sent" in relay.log, 30, "the delivery log line")
    records = [json.loads(line) for line in relay.log.splitlines()]
    for record in records:
        assert {"time", "level", "service", "pid", "message"} <= record.keys()
    sent = [r for r in records if r.get("status") == "sent"]
    assert len(sent) == 1
    assert sent[0]["to"] == "to@example.net"
    assert sent[0]["relay"].startswith("127.0.0.1")
    assert sent[0]["dsn"] == "2.0.0"
    assert sent[0]["queue_id"]
    services = {r["service"] for r in records}
    assert "opendkim" in services
    assert any(s.startswith("postfix/") for s in services)
    assert any("MYNETWORKS is deprecated" in r["message"] for r in records)
