"""The hop's configuration: a plain dataclass, so the hop does not depend on settings/.

`config_from_settings` is the one place that knows how RELAYHOST, RELAYHOST_USERNAME and
the XOAUTH2_* variables map onto it; tests and other callers build `HopConfig` directly.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailstack.xoauth2.tokens import Tokens, token_file_path
from mailstack.xoauth2.upstream import TlsMode

if TYPE_CHECKING:
    from mailstack.settings.model import RelaySettings

GOOGLE_TOKEN_ENDPOINT = "https://accounts.google.com/o/oauth2/token"  # noqa: S105 - a URL
MICROSOFT_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
DEFAULT_HOP_PORT = 10587
SMTPS_PORT = 465
#: The hop holds a message in memory while the relay host takes it: its limit when
#: POSTFIX_message_size_limit is 0 (unlimited), above any big provider's own.
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class InitialTokens:
    """XOAUTH2_INITIAL_ACCESS_TOKEN and _REFRESH_TOKEN: seed the token file once."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)

    def as_tokens(self) -> Tokens:
        # expiry 0: the first delivery refreshes, as sasl-xoauth2 does with these.
        return Tokens(self.access_token, self.refresh_token, 0.0)


@dataclass(frozen=True)
class HopConfig:
    """Everything the XOAUTH2 hop needs; secrets are left out of repr()."""

    upstream_host: str
    upstream_port: int
    username: str
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    token_file: Path
    upstream_tls: TlsMode = "starttls"
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_HOP_PORT  # 0 picks a free port; XOAuth2Hop.port tells which
    token_endpoint: str = GOOGLE_TOKEN_ENDPOINT
    scope: str | None = None  # Microsoft 365 needs MICROSOFT_SCOPE; Google needs none
    initial_tokens: InitialTokens | None = field(default=None, repr=False)
    full_trace: bool = False  # log the upstream conversation (redacted) when a delivery fails
    syslog_on_failure: bool = False  # also send failure lines to syslog_address
    syslog_address: str = "/dev/log"
    refresh_margin: float = 300.0  # refresh this many seconds before the token expires
    refresh_retry_after: float = 10.0  # after an endpoint outage, defer without asking
    upstream_timeout: float = 60.0
    tls_verify: bool = True
    ca_file: Path | None = None
    helo_name: str = "localhost"  # used when Postfix's own EHLO name is not known
    #: When set, clients must AUTH PLAIN with this password (Postfix has it in sasl_passwd):
    #: other processes that can reach loopback cannot send as the account.
    client_password: str | None = field(default=None, repr=False)
    #: Bigger messages get 552 at DATA (Postfix bounces them) instead of filling memory.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for the relay host (None for plain connections)."""
        if self.upstream_tls == "none":
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def tls_mode_for(port: int, security_level: str) -> TlsMode:
    """Port 465 means implicit TLS; level `none` means plain; anything else needs STARTTLS.

    Postfix's `may` would fall back to plain text, but a bearer token must not cross the
    network in clear, so the hop insists on STARTTLS there.
    """
    if port == SMTPS_PORT:
        return "tls"
    return "none" if security_level == "none" else "starttls"


def scope_for(token_endpoint: str) -> str | None:
    """Microsoft's v2.0 endpoint wants an explicit scope; Google's refresh does not."""
    return MICROSOFT_SCOPE if "login.microsoftonline.com" in token_endpoint else None


def config_from_settings(
    settings: RelaySettings,
    queue_dir: Path,
    *,
    listen_port: int = DEFAULT_HOP_PORT,
    helo_name: str | None = None,
    client_password: str | None = None,
) -> HopConfig:
    """Build the hop's config from the relay settings (XOAUTH2 must be enabled)."""
    relay = settings.relayhost
    username = settings.relayhost_username
    if not settings.xoauth2_enabled or relay is None or not username:
        raise ValueError("XOAUTH2_CLIENT_ID: XOAUTH2 needs RELAYHOST and RELAYHOST_USERNAME")
    port = relay.port or 25
    initial = None
    access, refresh = settings.xoauth2_initial_access_token, settings.xoauth2_initial_refresh_token
    if access is not None and refresh is not None:
        initial = InitialTokens(access.get_secret_value(), refresh.get_secret_value())
    client_id = settings.xoauth2_client_id
    secret = settings.xoauth2_secret
    return HopConfig(
        upstream_host=relay.host,
        upstream_port=port,
        upstream_tls=tls_mode_for(port, settings.smtp_tls_security_level),
        username=username,
        client_id=client_id.get_secret_value() if client_id else "",
        client_secret=secret.get_secret_value() if secret else "",
        token_file=token_file_path(queue_dir, username),
        listen_port=listen_port,
        token_endpoint=settings.xoauth2_token_endpoint,
        scope=scope_for(settings.xoauth2_token_endpoint),
        initial_tokens=initial,
        full_trace=settings.xoauth2_full_trace,
        syslog_on_failure=settings.xoauth2_syslog_on_failure,
        helo_name=helo_name or settings.myhostname,
        client_password=client_password,
        max_message_bytes=settings.message_size_limit or DEFAULT_MAX_MESSAGE,
    )


def config_to_json(config: HopConfig) -> str:
    """The config as JSON, secrets included: written only to a 0600 file for the worker."""
    data = asdict(config)
    data["token_file"] = str(config.token_file)
    data["ca_file"] = str(config.ca_file) if config.ca_file else None
    return json.dumps(data)


def config_from_json(text: str) -> HopConfig:
    data = json.loads(text)
    data["token_file"] = Path(data["token_file"])
    data["ca_file"] = Path(data["ca_file"]) if data["ca_file"] else None
    initial = data.pop("initial_tokens")
    return HopConfig(**data, initial_tokens=InitialTokens(**initial) if initial else None)
