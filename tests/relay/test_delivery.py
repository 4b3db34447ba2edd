"""Mail through the relay arrives upstream, DKIM-signed with the key in <domain>.txt."""

from __future__ import annotations

import smtplib
import subprocess
from email.message import Message
from pathlib import Path

from tests.helpers import Sink, base_env, message, running_relay, verify_dkim, wait_for


def signature_tags(msg: Message) -> dict[str, str]:
    header = str(msg["DKIM-Signature"]).replace("\r\n", "").replace("\n", "")
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def send(port: int, sender: str, recipient: str, body: bytes | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [recipient], body or message(sender, recipient))


def test_mail_is_relayed_and_signed_per_domain_selector(root: Path, port: int, sink: Sink) -> None:
    """Each allowed domain signs with its own selector, and the signature verifies."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com example.org",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        DKIM_AUTOGENERATE="1",
        DKIM_SELECTOR="fallback,example.org=orgsel",
    )
    with running_relay(root, env) as relay:
        send(port, "app@example.com", "someone@example.net")
        send(port, "app@example.org", "someone@example.net")
        received = sink.wait_messages(2)
        # OpenDKIM's line reaches the log through the syslog socket, beside the mail
        wait_for(lambda: "DKIM-Signature field added" in relay.log, 10, "OpenDKIM's log")
    keys = root / "etc/opendkim/keys"
    by_sender = {env_.mail_from: msg for env_, msg in received}
    for sender, domain, selector in (
        ("app@example.com", "example.com", "fallback"),
        ("app@example.org", "example.org", "orgsel"),
    ):
        msg = by_sender[sender]
        tags = signature_tags(msg)
        assert tags["d"] == domain
        assert tags["s"] == selector
        raw = next(e.original_content for e, _ in received if e.mail_from == sender)
        assert verify_dkim(raw, keys), f"signature of {sender} does not verify"
    assert [e.rcpt_tos for e, _ in received] == [["someone@example.net"]] * 2


def test_subdomain_sender_signed_with_parent_key_only_when_asked(
    root: Path, port: int, sink: Sink
) -> None:
    """app@mail.example.com gets d=example.com with DKIM_SIGN_SUBDOMAINS, none without."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        DKIM_AUTOGENERATE="1",
    )
    with running_relay(root, env):
        send(port, "app@mail.example.com", "someone@example.net")
        ((_, unsigned),) = sink.wait_messages(1)
    assert unsigned["DKIM-Signature"] is None

    env["DKIM_SIGN_SUBDOMAINS"] = "1"
    with running_relay(root, env):
        send(port, "app@mail.example.com", "someone@example.net")
        _, (envelope, signed) = sink.wait_messages(2)
    assert signature_tags(signed)["d"] == "example.com"
    assert verify_dkim(envelope.original_content, root / "etc/opendkim/keys")


def test_existing_key_volume_is_used_unchanged(root: Path, port: int, sink: Sink) -> None:
    """Keys made by opendkim-genkey in the boky/postfix layout sign as they are."""
    keys = root / "etc/opendkim/keys"
    keys.mkdir(parents=True)
    subprocess.run(
        [
            "opendkim-genkey",
            "-b",
            "2048",
            "-h",
            "rsa-sha256",
            "-r",
            "--subdomains",
            "-s",
            "legacy",
            "-d",
            "example.com",
            "-D",
            str(keys),
        ],
        check=True,
    )
    (keys / "legacy.private").rename(keys / "example.com.private")
    (keys / "legacy.txt").rename(keys / "example.com.txt")
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        DKIM_SELECTOR="legacy",
    )
    with running_relay(root, env):
        send(port, "app@example.com", "someone@example.net")
        ((envelope, msg),) = sink.wait_messages(1)
    assert signature_tags(msg)["s"] == "legacy"
    assert verify_dkim(envelope.original_content, keys)
