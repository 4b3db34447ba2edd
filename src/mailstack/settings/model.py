"""The relay profile's settings: the common ones (base.py) and the relay's own, the variables
and behaviour of the boky/postfix image."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from mailstack.errors import Problem
from mailstack.paths import Paths
from mailstack.settings import values
from mailstack.settings.base import ProfileSettings
from mailstack.settings.fields import (
    Domains,
    Flag,
    Listen,
    Networks,
    OptionalText,
    Port,
    Secret,
    Text,
)
from mailstack.settings.values import HostPort

log = logging.getLogger(__name__)

ALLOWED_SENDER_DOMAINS_MISSING = (
    "must list the domains you send from (e.g. 'example.com example.org'), "
    "or set ALLOW_EMPTY_SENDER_DOMAINS=true to accept any sender"
)
XOAUTH2_NEEDS_RELAYHOST = "XOAUTH2 needs RELAYHOST and RELAYHOST_USERNAME to be set"
AUTH_NEEDS_TLS = (
    "is none, but the relay-host password is sent only inside TLS, so mail would wait in the "
    "queue for ever; use may or a stronger level, or allow the password in clear with "
    "POSTFIX_smtp_sasl_security_options=noanonymous"
)
TOKEN_ENDPOINT_NOT_HTTPS = (
    "must be an https:// URL: the client secret and refresh token travel in it "  # noqa: S105
    "(plain http is accepted only to a loopback address)"
)


class RelaySettings(ProfileSettings):
    """Everything `mailstack run` needs to configure and run the relay; built by
    `load_relay_settings`."""

    deprecated_names: ClassVar[Mapping[str, str]] = {
        "mynetworks": "MYNETWORKS",
        "message_size_limit": "MESSAGE_SIZE_LIMIT",
        "smtp_tls_security_level": "RELAYHOST_TLS_LEVEL",
    }
    listening: ClassVar[tuple[str, ...]] = ("listen_submission", "listen_smtp", "metrics_listen")

    inbound_debugging: Flag = Field(
        False, alias="INBOUND_DEBUGGING", description="Verbose logs for clients in mynetworks."
    )
    allowed_sender_domains: Domains = Field((), alias="ALLOWED_SENDER_DOMAINS")
    allow_empty_sender_domains: Flag = Field(False, alias="ALLOW_EMPTY_SENDER_DOMAINS")
    sasl_relayhost: OptionalText = Field(None, alias="SASL_RELAYHOST")

    # XOAUTH2 (the relay authenticates with OAuth2 tokens instead of a password)
    xoauth2_client_id: Secret = Field(None, alias="XOAUTH2_CLIENT_ID")
    xoauth2_secret: Secret = Field(None, alias="XOAUTH2_SECRET")
    xoauth2_initial_access_token: Secret = Field(None, alias="XOAUTH2_INITIAL_ACCESS_TOKEN")
    xoauth2_initial_refresh_token: Secret = Field(None, alias="XOAUTH2_INITIAL_REFRESH_TOKEN")
    xoauth2_token_endpoint: Text = Field(
        "https://accounts.google.com/o/oauth2/token", alias="XOAUTH2_TOKEN_ENDPOINT"
    )
    xoauth2_syslog_on_failure: Flag = Field(False, alias="XOAUTH2_SYSLOG_ON_FAILURE")
    xoauth2_full_trace: Flag = Field(False, alias="XOAUTH2_FULL_TRACE")

    # postfix
    mynetworks: Networks = Field(
        ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        alias="POSTFIX_mynetworks",
    )
    masqueraded_domains: Domains = Field((), alias="MASQUERADED_DOMAINS")
    smtp_header_checks: str | None = Field(None, alias="SMTP_HEADER_CHECKS")

    # mailstack
    listen_submission: Listen = Field(HostPort("0.0.0.0", 587), alias="MAILSTACK_LISTEN_SUBMISSION")
    xoauth2_hop_port: Port = Field(10587, alias="MAILSTACK_XOAUTH2_PORT")

    @field_validator("xoauth2_token_endpoint")
    @classmethod
    def _secure_endpoint(cls, endpoint: str) -> str:
        if not values.secure_url(endpoint):
            raise ValueError(TOKEN_ENDPOINT_NOT_HTTPS)
        return endpoint

    @field_validator("smtp_header_checks", mode="before")
    @classmethod
    def _header_checks(cls, raw: Any, info: ValidationInfo) -> str | None:
        """`1` -> the bundled file; `type:path` as given; a bare path means `regexp:path`."""
        text = str(raw).strip()
        if not text or text.lower() in {"0", "false", "no", "off"}:
            return None
        if text == "1":
            config = Paths(info.data.get("root", Path("/"))).postfix_config
            return f"regexp:{config / 'smtp_header_checks'}"
        if ":" in text and not text.startswith("/"):
            table_type, _, path = text.partition(":")
        else:
            log.warning("SMTP_HEADER_CHECKS=%s has no table type; using regexp:%s", text, text)
            table_type, path = "regexp", text
        file_based = table_type in {"regexp", "pcre", "texthash"} or path.startswith("/")
        if file_based and not Path(path).is_file():
            raise ValueError(f"file {path} does not exist")
        return f"{table_type}:{path}"

    @property
    def xoauth2_enabled(self) -> bool:
        return self.xoauth2_client_id is not None or self.xoauth2_secret is not None

    @property
    def relay_auth(self) -> tuple[str, str, str] | None:
        """(sasl_passwd key, username, password) when password auth to the relay is on."""
        if self.relayhost is None or self.xoauth2_enabled:
            return None
        if not self.relayhost_username or self.relayhost_password is None:
            return None
        key = self.sasl_relayhost or self.relayhost.text
        return key, self.relayhost_username, self.relayhost_password.get_secret_value()

    def rules(self) -> Iterator[Problem]:
        if not self.allowed_sender_domains and not self.allow_empty_sender_domains:
            yield Problem(self.variable("allowed_sender_domains"), ALLOWED_SENDER_DOMAINS_MISSING)
        if self.xoauth2_enabled and not (self.relayhost and self.relayhost_username):
            yield Problem(self.variable("xoauth2_client_id"), XOAUTH2_NEEDS_RELAYHOST)
        if self.smtp_tls_security_level == "none" and self._password_needs_tls():
            yield Problem(self.variable("smtp_tls_security_level"), AUTH_NEEDS_TLS)
        yield from super().rules()

    def _password_needs_tls(self) -> bool:
        """Whether the relay-host password is sent only inside TLS, as rendered by default
        (see render.postfix.relay_auth_parameters) unless POSTFIX_smtp_sasl_security_options
        allows plaintext mechanisms."""
        override = self.postfix_overrides.get("smtp_sasl_security_options")
        return self.relay_auth is not None and (override is None or "noplaintext" in override)
