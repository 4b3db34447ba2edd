"""The server profile's settings: listeners, TLS, datastore, outbound relay, DKIM.

Same conventions as the relay (see environ.py): one typed field per environment variable,
`*_FILE` secrets, `POSTFIX_<param>`/`OPENDKIM_<Key>` pass-through, every problem reported at
once. Domains, users, aliases and sieve scripts are not settings: they live in the datastore
and are managed with `mailstack domain|user|alias|sieve`.
"""

from __future__ import annotations

import pwd
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from mailstack.errors import ConfigError, Problem
from mailstack.paths import Paths
from mailstack.settings import values
from mailstack.settings.environ import (
    _OPENDKIM_KEY,
    _POSTFIX_PARAM,
    _dedupe,
    _problems_from,
    collect_prefixed,
    myhostname,
    refuse_control_characters,
    resolve_secrets,
)
from mailstack.settings.model import LogFormat, TlsLevel
from mailstack.settings.values import DkimSelectors, HostPort, RelayHost

#: Listener name -> (environment variable, default address). An empty variable disables it.
LISTENERS: dict[str, tuple[str, HostPort]] = {
    "smtp": ("MAILSTACK_LISTEN_SMTP", HostPort("0.0.0.0", 25)),
    "submission": ("MAILSTACK_LISTEN_SUBMISSION", HostPort("0.0.0.0", 587)),
    "submissions": ("MAILSTACK_LISTEN_SUBMISSIONS", HostPort("0.0.0.0", 465)),
    "imap": ("MAILSTACK_LISTEN_IMAP", HostPort("0.0.0.0", 143)),
    "imaps": ("MAILSTACK_LISTEN_IMAPS", HostPort("0.0.0.0", 993)),
    "managesieve": ("MAILSTACK_LISTEN_MANAGESIEVE", HostPort("0.0.0.0", 4190)),
}

DEFAULT_MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024

#: POSTFIX_<param> variables that are first-class settings here.
_POSTFIX_SETTINGS = {"myhostname", "message_size_limit", "smtp_tls_security_level"}

#: Variables used as text (secrets are checked as they are resolved): no control characters.
_SINGLE_LINE = (
    "RELAYHOST",
    "POSTFIX_message_size_limit",
    "DKIM_SELECTOR",
    "TZ",
    "MAILSTACK_DATABASE_URL",
    "MAILSTACK_MAIL_USER",
    "POSTFIX_smtp_tls_security_level",
    "MAILSTACK_STOP_TIMEOUT",
    "LOG_FORMAT",
    "MAILSTACK_ROOT",
    "POSTFIX_myhostname",
    "MAILSTACK_TLS_CERT_FILE",
    "MAILSTACK_TLS_KEY_FILE",
    "MAILSTACK_METRICS_LISTEN",
    *(variable for variable, _ in LISTENERS.values()),
)


class ServerSettings(BaseModel):
    """Everything `mailstack run --profile server` needs; built by `load_server_settings`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    root: Path = Field(Path("/"), alias="MAILSTACK_ROOT")
    tz: str | None = Field(None, alias="TZ")
    force_color: bool = Field(False, alias="FORCE_COLOR")
    log_format: LogFormat = Field("plain", alias="LOG_FORMAT")
    database_url: str | None = Field(None, alias="MAILSTACK_DATABASE_URL")
    myhostname: str = Field(..., alias="POSTFIX_myhostname")
    mail_user: str = Field("vmail", alias="MAILSTACK_MAIL_USER")
    message_size_limit: int = Field(
        DEFAULT_MESSAGE_SIZE_LIMIT, ge=0, alias="POSTFIX_message_size_limit"
    )

    listen_smtp: HostPort | None = Field(LISTENERS["smtp"][1], alias="MAILSTACK_LISTEN_SMTP")
    listen_submission: HostPort | None = Field(
        LISTENERS["submission"][1], alias="MAILSTACK_LISTEN_SUBMISSION"
    )
    listen_submissions: HostPort | None = Field(
        LISTENERS["submissions"][1], alias="MAILSTACK_LISTEN_SUBMISSIONS"
    )
    listen_imap: HostPort | None = Field(LISTENERS["imap"][1], alias="MAILSTACK_LISTEN_IMAP")
    listen_imaps: HostPort | None = Field(LISTENERS["imaps"][1], alias="MAILSTACK_LISTEN_IMAPS")
    listen_managesieve: HostPort | None = Field(
        LISTENERS["managesieve"][1], alias="MAILSTACK_LISTEN_MANAGESIEVE"
    )

    metrics_listen: HostPort | None = Field(None, alias="MAILSTACK_METRICS_LISTEN")

    tls_cert_file: Path | None = Field(None, alias="MAILSTACK_TLS_CERT_FILE")
    tls_key_file: Path | None = Field(None, alias="MAILSTACK_TLS_KEY_FILE")

    # outbound: straight to the recipient's MX, or through a smarthost
    relayhost: RelayHost | None = Field(None, alias="RELAYHOST")
    relayhost_username: str | None = Field(None, alias="RELAYHOST_USERNAME")
    relayhost_password: SecretStr | None = Field(None, alias="RELAYHOST_PASSWORD")
    smtp_tls_security_level: TlsLevel = Field("may", alias="POSTFIX_smtp_tls_security_level")

    # DKIM: one key per hosted domain, same layout as the relay
    dkim_selectors: DkimSelectors = Field(default_factory=DkimSelectors, alias="DKIM_SELECTOR")
    dkim_autogenerate: bool = Field(True, alias="DKIM_AUTOGENERATE")
    dkim_sign_subdomains: bool = Field(False, alias="DKIM_SIGN_SUBDOMAINS")

    postfix_overrides: dict[str, str | None] = Field(default_factory=dict, alias="POSTFIX_*")
    opendkim_overrides: dict[str, str | None] = Field(default_factory=dict, alias="OPENDKIM_*")
    stop_timeout: float = Field(8.0, ge=0, le=3600, alias="MAILSTACK_STOP_TIMEOUT")

    #: the OpenDKIM renderer shares these with the relay
    inbound_debugging: bool = False

    @property
    def relay_auth(self) -> tuple[str, str, str] | None:
        """(sasl_passwd key, username, password) when the smarthost wants a password."""
        if self.relayhost is None or not self.relayhost_username:
            return None
        if self.relayhost_password is None:
            return None
        password = self.relayhost_password.get_secret_value()
        return self.relayhost.text, self.relayhost_username, password

    def listeners(self) -> dict[str, HostPort]:
        """The enabled listeners by name."""
        found = {name: getattr(self, f"listen_{name}") for name in LISTENERS}
        return {name: address for name, address in found.items() if address is not None}


def _listeners(env: Mapping[str, str], raw: dict[str, Any], problems: list[Problem]) -> None:
    in_effect: dict[str, HostPort | None] = dict(LISTENERS.values())
    in_effect["MAILSTACK_METRICS_LISTEN"] = None
    for variable in in_effect:
        if variable not in env:
            continue
        text = env[variable].strip()
        try:
            raw[variable] = in_effect[variable] = values.parse_listen(text) if text else None
        except ValueError as exc:
            problems.append(Problem(variable, str(exc)))
    for name, other in values.listener_clashes(in_effect):
        problems.append(Problem(name, f"{in_effect[name]} clashes with {other}={in_effect[other]}"))


def _tls_files(env: Mapping[str, str], raw: dict[str, Any], problems: list[Problem]) -> None:
    cert = env.get("MAILSTACK_TLS_CERT_FILE", "").strip()
    key = env.get("MAILSTACK_TLS_KEY_FILE", "").strip()
    if bool(cert) != bool(key):
        missing = "MAILSTACK_TLS_KEY_FILE" if cert else "MAILSTACK_TLS_CERT_FILE"
        problems.append(Problem(missing, "set both the certificate and the key file, or neither"))
        return
    for variable, text in (("MAILSTACK_TLS_CERT_FILE", cert), ("MAILSTACK_TLS_KEY_FILE", key)):
        if text and not Path(text).is_file():
            problems.append(Problem(variable, f"file {text} does not exist"))
        elif text:
            raw[variable] = Path(text)


def _mail_user(name: str, problems: list[Problem]) -> None:
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        problems.append(
            Problem(
                "MAILSTACK_MAIL_USER",
                f"no system user {name!r}: mailboxes need an owner "
                "(scripts/install.sh --server creates 'vmail')",
            )
        )
        return
    if account.pw_uid == 0:
        problems.append(Problem("MAILSTACK_MAIL_USER", "must not be root"))


def load_server_settings(environ: Mapping[str, str]) -> ServerSettings:
    """Validate the environment into ServerSettings, or raise ConfigError with every problem."""
    env = dict(environ)
    problems: list[Problem] = []
    refuse_control_characters(env, _SINGLE_LINE, problems)
    resolve_secrets(env, problems)
    raw: dict[str, Any] = {}
    parsers = {
        "RELAYHOST": values.parse_relayhost,
        "POSTFIX_message_size_limit": values.parse_size,
        "DKIM_SELECTOR": values.parse_selectors,
    }
    for name, parser in parsers.items():
        text = env.get(name, "")
        if text.strip():
            try:
                raw[name] = parser(text)
            except ValueError as exc:
                problems.append(Problem(name, str(exc)))
    for name in ("FORCE_COLOR", "DKIM_SIGN_SUBDOMAINS"):
        raw[name] = values.parse_flag(env.get(name))
    if env.get("DKIM_AUTOGENERATE", "").strip():
        raw["DKIM_AUTOGENERATE"] = values.parse_flag(env["DKIM_AUTOGENERATE"])
    for name in (
        "TZ",
        "MAILSTACK_DATABASE_URL",
        "MAILSTACK_MAIL_USER",
        "RELAYHOST_USERNAME",
        "POSTFIX_smtp_tls_security_level",
        "MAILSTACK_STOP_TIMEOUT",
    ):
        if env.get(name, "").strip():
            raw[name] = env[name].strip()
    if env.get("RELAYHOST_PASSWORD"):
        raw["RELAYHOST_PASSWORD"] = env["RELAYHOST_PASSWORD"]
    if env.get("LOG_FORMAT", "").strip():
        raw["LOG_FORMAT"] = env["LOG_FORMAT"].strip().lower()
    root = Path(env.get("MAILSTACK_ROOT", "").strip() or "/")
    if not root.is_absolute():
        problems.append(Problem("MAILSTACK_ROOT", f"must be an absolute path (got {root})"))
    raw["MAILSTACK_ROOT"] = root
    raw["POSTFIX_myhostname"] = myhostname(env, problems) or socket.getfqdn()
    _listeners(env, raw, problems)
    _tls_files(env, raw, problems)
    _mail_user(raw.get("MAILSTACK_MAIL_USER", "vmail"), problems)
    if raw.get("RELAYHOST_USERNAME") and not raw.get("RELAYHOST"):
        problems.append(Problem("RELAYHOST_USERNAME", "is set but RELAYHOST is not"))

    raw["POSTFIX_*"] = collect_prefixed(
        env, "POSTFIX_", _POSTFIX_PARAM, problems, settings=_POSTFIX_SETTINGS
    )
    raw["OPENDKIM_*"] = collect_prefixed(env, "OPENDKIM_", _OPENDKIM_KEY, problems)
    settings: ServerSettings | None = None
    try:
        settings = ServerSettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
    if problems:
        raise ConfigError(_dedupe(problems))
    assert settings is not None  # noqa: S101 - no problems means validation succeeded
    return settings


def database_location(settings: ServerSettings) -> str:
    """The datastore URL or SQLite path: MAILSTACK_DATABASE_URL, else a file under the root."""
    return settings.database_url or str(Paths(settings.root).database)


def default_database(environ: Mapping[str, str]) -> str:
    """The same choice from the bare environment, for the admin commands (they must find the
    datastore of the server that runs with the same MAILSTACK_ROOT)."""
    url = environ.get("MAILSTACK_DATABASE_URL", "").strip()
    root = Path(environ.get("MAILSTACK_ROOT", "").strip() or "/")
    return url or str(Paths(root).database)
