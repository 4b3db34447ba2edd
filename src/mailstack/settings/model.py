"""The relay profile's settings, one typed field per variable.

Each field's alias is the environment variable that sets it, so a validation error names the
variable, and `grep ALIAS` leads from the README to the field and on to the renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mailstack.settings.values import DkimSelectors, HostPort, RelayHost

ALLOWED_SENDER_DOMAINS_MISSING = (
    "must list the domains you send from (e.g. 'example.com example.org'), "
    "or set ALLOW_EMPTY_SENDER_DOMAINS=true to accept any sender"
)
XOAUTH2_NEEDS_RELAYHOST = "XOAUTH2 needs RELAYHOST and RELAYHOST_USERNAME to be set"

LogFormat = Literal["plain", "json"]
TlsLevel = Literal["none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"]


class RelaySettings(BaseModel):
    """Everything `mailstack run` needs to configure and run the relay.

    Rules across several variables are checked by `load_relay_settings`, the only way in,
    so that they are reported even when single fields fail too.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    # general
    tz: str | None = Field(None, alias="TZ", description="Time zone, e.g. Europe/Amsterdam.")
    force_color: bool = Field(False, alias="FORCE_COLOR", description="Colour plain logs.")
    inbound_debugging: bool = Field(
        False, alias="INBOUND_DEBUGGING", description="Verbose logs for clients in mynetworks."
    )
    allowed_sender_domains: tuple[str, ...] = Field((), alias="ALLOWED_SENDER_DOMAINS")
    allow_empty_sender_domains: bool = Field(False, alias="ALLOW_EMPTY_SENDER_DOMAINS")
    log_format: LogFormat = Field("plain", alias="LOG_FORMAT")

    # relay host
    relayhost: RelayHost | None = Field(None, alias="RELAYHOST")
    sasl_relayhost: str | None = Field(None, alias="SASL_RELAYHOST")
    relayhost_username: str | None = Field(None, alias="RELAYHOST_USERNAME")
    relayhost_password: SecretStr | None = Field(None, alias="RELAYHOST_PASSWORD")
    smtp_tls_security_level: TlsLevel = Field("may", alias="POSTFIX_smtp_tls_security_level")

    # XOAUTH2 (the relay authenticates with OAuth2 tokens instead of a password)
    xoauth2_client_id: SecretStr | None = Field(None, alias="XOAUTH2_CLIENT_ID")
    xoauth2_secret: SecretStr | None = Field(None, alias="XOAUTH2_SECRET")
    xoauth2_initial_access_token: SecretStr | None = Field(
        None, alias="XOAUTH2_INITIAL_ACCESS_TOKEN"
    )
    xoauth2_initial_refresh_token: SecretStr | None = Field(
        None, alias="XOAUTH2_INITIAL_REFRESH_TOKEN"
    )
    xoauth2_token_endpoint: str = Field(
        "https://accounts.google.com/o/oauth2/token", alias="XOAUTH2_TOKEN_ENDPOINT"
    )
    xoauth2_syslog_on_failure: bool = Field(False, alias="XOAUTH2_SYSLOG_ON_FAILURE")
    xoauth2_full_trace: bool = Field(False, alias="XOAUTH2_FULL_TRACE")

    # postfix
    myhostname: str = Field(..., alias="POSTFIX_myhostname")
    mynetworks: tuple[str, ...] = Field(
        ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        alias="POSTFIX_mynetworks",
    )
    message_size_limit: int = Field(0, ge=0, alias="POSTFIX_message_size_limit")
    masqueraded_domains: tuple[str, ...] = Field((), alias="MASQUERADED_DOMAINS")
    smtp_header_checks: str | None = Field(None, alias="SMTP_HEADER_CHECKS")
    postfix_overrides: dict[str, str | None] = Field(default_factory=dict, alias="POSTFIX_*")

    # dkim
    dkim_selectors: DkimSelectors = Field(default_factory=DkimSelectors, alias="DKIM_SELECTOR")
    dkim_autogenerate: bool = Field(False, alias="DKIM_AUTOGENERATE")
    dkim_sign_subdomains: bool = Field(False, alias="DKIM_SIGN_SUBDOMAINS")
    opendkim_overrides: dict[str, str | None] = Field(default_factory=dict, alias="OPENDKIM_*")

    # mailstack
    root: Path = Field(Path("/"), alias="MAILSTACK_ROOT")
    listen_submission: HostPort = Field(
        HostPort("0.0.0.0", 587), alias="MAILSTACK_LISTEN_SUBMISSION"
    )
    listen_smtp: HostPort | None = Field(HostPort("0.0.0.0", 25), alias="MAILSTACK_LISTEN_SMTP")
    xoauth2_hop_port: int = Field(10587, ge=1, le=65535, alias="MAILSTACK_XOAUTH2_PORT")
    stop_timeout: float = Field(8.0, ge=0, le=3600, alias="MAILSTACK_STOP_TIMEOUT")
    metrics_listen: HostPort | None = Field(None, alias="MAILSTACK_METRICS_LISTEN")

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
