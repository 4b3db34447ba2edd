"""The relay-host password travels only inside TLS.

With the default smtp_tls_security_level=may, anyone between the relay and its relay host can
strip STARTTLS from the EHLO reply. The relay must then not send AUTH PLAIN/LOGIN (the
password in clear) but keep the mail queued; with STARTTLS offered, it authenticates inside
TLS and delivers.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword

from mailstack.errors import ConfigError
from mailstack.paths import Paths
from mailstack.render.postfix import main_cf_parameters
from mailstack.settings.environ import load_relay_settings
from tests.helpers import base_env, free_port, message, running_relay, wait_for

USER, PASSWORD = "relayuser", "s3cret-relay-pass"


@dataclass
class RelayHost:
    """An upstream relay host on loopback that requires AUTH and records every AUTH command."""

    port: int
    auths: list[tuple[str, bool]] = field(default_factory=list)  # (mechanism, inside TLS)
    logins: list[tuple[str, str]] = field(default_factory=list)
    ehlos: int = 0
    messages: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: object, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 accepted by the relay host"

    def authenticate(
        self, server: SMTP, session: object, envelope: object, mechanism: str, data: object
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == (USER, PASSWORD), handled=False)


class _RecordingSMTP(SMTP):
    def __init__(self, host: RelayHost, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.relay_host = host

    async def smtp_EHLO(self, hostname: str) -> None:
        self.relay_host.ehlos += 1
        await super().smtp_EHLO(hostname)

    async def smtp_AUTH(self, arg: str) -> None:
        mechanism = (arg or "").split(" ", 1)[0].upper()
        self.relay_host.auths.append((mechanism, self._tls_protocol is not None))
        await super().smtp_AUTH(arg)


class _Controller(Controller):
    def __init__(self, host: RelayHost, **kwargs: object) -> None:
        super().__init__(host, hostname="127.0.0.1", port=host.port, **kwargs)  # type: ignore[arg-type]
        self.relay_host = host

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.relay_host, self.handler, **self.SMTP_kwargs)


@contextlib.contextmanager
def relay_host(tls_context: ssl.SSLContext | None = None) -> Iterator[RelayHost]:
    """AUTH PLAIN LOGIN is advertised with or without TLS (the relay must judge, not the
    server); with `tls_context` STARTTLS is offered too. Mail is accepted only after AUTH."""
    host = RelayHost(free_port())
    controller = _Controller(
        host,
        authenticator=host.authenticate,
        auth_required=True,
        auth_require_tls=False,
        tls_context=tls_context,
    )
    controller.start()
    try:
        yield host
    finally:
        controller.stop()


def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    return context


def relay_env(root: Path, port: int, host: RelayHost) -> dict[str, str]:
    return base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{host.port}",
        RELAYHOST_USERNAME=USER,
        RELAYHOST_PASSWORD=PASSWORD,
    )


def send(port: int, recipient: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("app@example.com", [recipient], message("app@example.com", recipient))


def test_stripped_starttls_gets_no_auth_and_the_mail_stays_queued(root: Path, port: int) -> None:
    """A relay host (or a man in the middle) offering AUTH PLAIN LOGIN without STARTTLS."""
    with relay_host() as host, running_relay(root, relay_env(root, port, host)) as relay:
        send(port, "someone@example.net")
        wait_for(lambda: "status=" in relay.log, 60, f"a delivery attempt\n{relay.log}")
        assert host.auths == [], "AUTH was sent without TLS"
        assert host.logins == []
        assert host.messages == []
        assert "status=deferred" in relay.log
        assert "no mechanism available" in relay.log, "deferred for another reason"
        assert host.ehlos >= 1, "the relay host was never asked"
        # smtp logs the deferral before qmgr moves the file into the deferred queue.
        wait_for(lambda: bool(relay.queue_ids("deferred")), 10, "a deferred queue file")
        assert "status=sent" not in relay.log
        assert "status=bounced" not in relay.log
        assert PASSWORD not in relay.log
        assert relay.postconf("-h", "smtp_sasl_security_options").strip() == (
            "noplaintext, noanonymous"
        )
        assert relay.postconf("-h", "smtp_sasl_tls_security_options").strip() == "noanonymous"


def test_with_starttls_auth_succeeds_and_the_mail_is_delivered(root: Path, port: int) -> None:
    """The same relay host offering STARTTLS: AUTH inside TLS, and the mail goes out."""
    with (
        relay_host(server_context()) as host,
        running_relay(root, relay_env(root, port, host)) as relay,
    ):
        send(port, "someone@example.net")
        wait_for(lambda: "status=" in relay.log, 60, f"a delivery attempt\n{relay.log}")
        assert "status=sent" in relay.log, relay.log
        assert "TLS connection established to" in relay.log
        assert PASSWORD not in relay.log
        assert host.auths, "the relay never authenticated"
        assert all(inside_tls for _, inside_tls in host.auths), host.auths
        assert host.logins == [(USER, PASSWORD)]
        assert [e.rcpt_tos for e in host.messages] == [["someone@example.net"]]


def test_opting_out_by_name_and_refusing_a_level_that_could_never_authenticate() -> None:
    """POSTFIX_smtp_sasl_security_options wins (applied last); `none` plus a password that
    may only travel inside TLS would keep every message queued, so it is refused up front."""
    env = {
        "ALLOWED_SENDER_DOMAINS": "example.com",
        "POSTFIX_myhostname": "relay.example.com",
        "RELAYHOST": "[smtp.example.com]:587",
        "RELAYHOST_USERNAME": USER,
        "RELAYHOST_PASSWORD": PASSWORD,
    }
    settings = load_relay_settings(env)
    params = main_cf_parameters(settings, Paths(settings.root), dkim_enabled=False)
    assert params["smtp_sasl_security_options"] == "noplaintext, noanonymous"
    assert params["smtp_sasl_tls_security_options"] == "noanonymous"

    opted_out = load_relay_settings({**env, "POSTFIX_smtp_sasl_security_options": "noanonymous"})
    params = main_cf_parameters(opted_out, Paths(opted_out.root), dkim_enabled=False)
    assert params["smtp_sasl_security_options"] == "noanonymous"

    for level in ("POSTFIX_smtp_tls_security_level", "RELAYHOST_TLS_LEVEL"):
        with pytest.raises(ConfigError) as refused:
            load_relay_settings({**env, level: "none"})
        # named as the user spelled it (the deprecated alias, when that is what was set)
        assert [p.variable for p in refused.value.problems] == [level]
        assert "POSTFIX_smtp_sasl_security_options=noanonymous" in str(refused.value)
    load_relay_settings(
        {
            **env,
            "POSTFIX_smtp_tls_security_level": "none",
            "POSTFIX_smtp_sasl_security_options": "noanonymous",
        }
    )
    load_relay_settings({k: v for k, v in env.items() if k != "RELAYHOST_PASSWORD"})
