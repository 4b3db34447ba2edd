"""Read the relay's settings from environment variables, the boky/postfix way.

This is the one place that knows the image's conventions: `*_FILE` secrets, the deprecated
aliases, `POSTFIX_<param>` and `OPENDKIM_<Key>` pass-through (an empty value removes the
parameter), and the variables Kubernetes injects that look like ours but are not.
Every problem is collected, so `mailstack check` can report them all at once.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailstack.errors import ConfigError, Problem
from mailstack.paths import Paths
from mailstack.settings import values
from mailstack.settings.model import (
    ALLOWED_SENDER_DOMAINS_MISSING,
    XOAUTH2_NEEDS_RELAYHOST,
    RelaySettings,
)

log = logging.getLogger(__name__)

#: Variables that may be given as `<NAME>_FILE` pointing at a file holding the value.
SECRET_VARIABLES = (
    "RELAYHOST_USERNAME",
    "RELAYHOST_PASSWORD",
    "XOAUTH2_CLIENT_ID",
    "XOAUTH2_SECRET",
    "XOAUTH2_INITIAL_ACCESS_TOKEN",
    "XOAUTH2_INITIAL_REFRESH_TOKEN",
)

#: Deprecated name -> current name. The old name wins when both are set, as in boky/postfix.
DEPRECATED_ALIASES = {
    "MYNETWORKS": "POSTFIX_mynetworks",
    "MESSAGE_SIZE_LIMIT": "POSTFIX_message_size_limit",
    "RELAYHOST_TLS_LEVEL": "POSTFIX_smtp_tls_security_level",
}

#: POSTFIX_<param> variables that are first-class settings; empty means "use the default".
_POSTFIX_SETTINGS = {
    "myhostname": "POSTFIX_myhostname",
    "mynetworks": "POSTFIX_mynetworks",
    "message_size_limit": "POSTFIX_message_size_limit",
    "smtp_tls_security_level": "POSTFIX_smtp_tls_security_level",
}

_POSTFIX_PARAM = re.compile(r"^[a-z][A-Za-z0-9_]*$")
_OPENDKIM_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_ALL_CAPS = re.compile(r"^[A-Z0-9_]+$")

_PARSERS: dict[str, Callable[[str], Any]] = {
    "ALLOWED_SENDER_DOMAINS": values.parse_domain_list,
    "MASQUERADED_DOMAINS": values.parse_domain_list,
    "RELAYHOST": values.parse_relayhost,
    "POSTFIX_mynetworks": values.parse_networks,
    "POSTFIX_message_size_limit": values.parse_size,
    "DKIM_SELECTOR": values.parse_selectors,
    "MAILSTACK_LISTEN_SUBMISSION": values.parse_listen,
    "MAILSTACK_METRICS_LISTEN": values.parse_listen,  # empty: no metrics endpoint
}
_FLAGS = (
    "FORCE_COLOR",
    "INBOUND_DEBUGGING",
    "ALLOW_EMPTY_SENDER_DOMAINS",
    "DKIM_AUTOGENERATE",
    "DKIM_SIGN_SUBDOMAINS",
    "XOAUTH2_SYSLOG_ON_FAILURE",
    "XOAUTH2_FULL_TRACE",
)
_PLAIN = (
    "TZ",
    "SASL_RELAYHOST",
    "RELAYHOST_USERNAME",
    "RELAYHOST_PASSWORD",
    "XOAUTH2_CLIENT_ID",
    "XOAUTH2_SECRET",
    "XOAUTH2_INITIAL_ACCESS_TOKEN",
    "XOAUTH2_INITIAL_REFRESH_TOKEN",
    "XOAUTH2_TOKEN_ENDPOINT",
    "POSTFIX_smtp_tls_security_level",
    "MAILSTACK_STOP_TIMEOUT",
    "MAILSTACK_XOAUTH2_PORT",
)


def _read_secret_file(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    return text.removesuffix("\n").removesuffix("\r")


def _resolve_secrets(env: dict[str, str], problems: list[Problem]) -> None:
    """Replace `<NAME>_FILE` by `<NAME>`; setting both is an error, as is an unreadable file."""
    for name in SECRET_VARIABLES:
        file_var = f"{name}_FILE"
        file_path = env.pop(file_var, None)
        if not file_path:
            continue
        if env.get(name):
            problems.append(Problem(name, f"set both {name} and {file_var}; set only one"))
            continue
        try:
            env[name] = _read_secret_file(file_path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(Problem(file_var, f"cannot read {file_path}: {reason}"))


def _apply_deprecated(env: dict[str, str], notices: list[str]) -> None:
    for old, new in DEPRECATED_ALIASES.items():
        if env.get(old):
            notices.append(f"{old} is deprecated; use {new} instead")
            env[new] = env[old]


def _collect_prefixed(
    env: Mapping[str, str], prefix: str, pattern: re.Pattern[str], problems: list[Problem]
) -> dict[str, str | None]:
    """`PREFIX<key>=value` pairs; an empty value means "remove the key" (None)."""
    result: dict[str, str | None] = {}
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if _ALL_CAPS.match(key):
            # Kubernetes service links (POSTFIX_SERVICE_HOST, POSTFIX_MAIL_SERVICE_PORT ...)
            log.debug("ignoring %s: not a configuration key (service link?)", name)
            continue
        if not pattern.match(key):
            problems.append(Problem(name, f"{key!r} is not a valid configuration key name"))
            continue
        result[key] = value if value.strip() else None
    return result


def _header_checks(raw: str, config_dir: Path, problems: list[Problem]) -> str | None:
    """`1` -> the bundled file; `type:path` as given; a bare path means `regexp:path`."""
    text = raw.strip()
    if not text or text.lower() in {"0", "false", "no", "off"}:
        return None
    if text == "1":
        return f"regexp:{config_dir / 'smtp_header_checks'}"
    if ":" in text and not text.startswith("/"):
        table_type, _, path = text.partition(":")
    else:
        log.warning("SMTP_HEADER_CHECKS=%s has no table type; using regexp:%s", text, text)
        table_type, path = "regexp", text
    file_based = table_type in {"regexp", "pcre", "texthash"} or path.startswith("/")
    if file_based and not Path(path).is_file():
        problems.append(Problem("SMTP_HEADER_CHECKS", f"file {path} does not exist"))
        return None
    return f"{table_type}:{path}"


def load_relay_settings(
    environ: Mapping[str, str], notices: list[str] | None = None
) -> RelaySettings:
    """Validate the environment into RelaySettings, or raise ConfigError listing every problem.

    `notices` collects deprecation lines for the caller to log once logging is set up.
    """
    env = dict(environ)
    problems: list[Problem] = []
    notices = notices if notices is not None else []
    _resolve_secrets(env, problems)
    _apply_deprecated(env, notices)

    raw: dict[str, Any] = {}
    for name, parser in _PARSERS.items():
        value = env.get(name, "")
        if not value.strip():
            continue
        try:
            raw[name] = parser(value)
        except ValueError as exc:
            problems.append(Problem(name, str(exc)))
    for name in _FLAGS:
        raw[name] = values.parse_flag(env.get(name))
    for name in _PLAIN:
        if env.get(name, "").strip():
            raw[name] = env[name].strip() if "PASSWORD" not in name else env[name]
    if "MAILSTACK_LISTEN_SMTP" in env:
        text = env["MAILSTACK_LISTEN_SMTP"].strip()
        try:
            raw["MAILSTACK_LISTEN_SMTP"] = values.parse_listen(text) if text else None
        except ValueError as exc:
            problems.append(Problem("MAILSTACK_LISTEN_SMTP", str(exc)))
    log_format = env.get("LOG_FORMAT", "").strip()
    if log_format:
        raw["LOG_FORMAT"] = log_format.lower()
    root = Path(env.get("MAILSTACK_ROOT", "").strip() or "/")
    if not root.is_absolute():
        problems.append(Problem("MAILSTACK_ROOT", f"must be an absolute path (got {root})"))
    raw["MAILSTACK_ROOT"] = root
    hostname = env.get("POSTFIX_myhostname", "").strip() or env.get("HOSTNAME", "").strip()
    raw["POSTFIX_myhostname"] = hostname or socket.gethostname()
    if "SMTP_HEADER_CHECKS" in env:
        config_dir = Paths(root).postfix_config
        raw["SMTP_HEADER_CHECKS"] = _header_checks(env["SMTP_HEADER_CHECKS"], config_dir, problems)

    postfix = _collect_prefixed(env, "POSTFIX_", _POSTFIX_PARAM, problems)
    raw["POSTFIX_*"] = {k: v for k, v in postfix.items() if k not in _POSTFIX_SETTINGS}
    raw["OPENDKIM_*"] = _collect_prefixed(env, "OPENDKIM_", _OPENDKIM_KEY, problems)

    _cross_checks(raw, problems)
    settings: RelaySettings | None = None
    try:
        settings = RelaySettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
    if problems:
        raise ConfigError(_dedupe(problems))
    assert settings is not None  # noqa: S101 - no problems means validation succeeded
    return settings


def _cross_checks(raw: Mapping[str, Any], problems: list[Problem]) -> None:
    """Rules that involve several variables, checked even when single fields failed."""
    if not raw.get("ALLOWED_SENDER_DOMAINS") and not raw.get("ALLOW_EMPTY_SENDER_DOMAINS"):
        problems.append(Problem("ALLOWED_SENDER_DOMAINS", ALLOWED_SENDER_DOMAINS_MISSING))
    if (raw.get("XOAUTH2_CLIENT_ID") or raw.get("XOAUTH2_SECRET")) and not (
        raw.get("RELAYHOST") and raw.get("RELAYHOST_USERNAME")
    ):
        problems.append(Problem("XOAUTH2_CLIENT_ID", XOAUTH2_NEEDS_RELAYHOST))
    metrics = raw.get("MAILSTACK_METRICS_LISTEN")
    if metrics is not None:
        for name, field in (
            ("MAILSTACK_LISTEN_SUBMISSION", "listen_submission"),
            ("MAILSTACK_LISTEN_SMTP", "listen_smtp"),
        ):
            mail = raw.get(name, RelaySettings.model_fields[field].default)
            if mail is not None and values.same_socket(metrics, mail):
                problems.append(
                    Problem("MAILSTACK_METRICS_LISTEN", f"{metrics} clashes with {name}={mail}")
                )


def _problems_from(exc: ValidationError) -> list[Problem]:
    result = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            variable = str(error["loc"][0])
            if error["type"] == "literal_error":
                expected = error.get("ctx", {}).get("expected", "")
                message = f"must be one of {expected} (got {error['input']!r})"
            elif error["type"] in {"float_parsing", "int_parsing"}:
                message = f"must be a number (got {error['input']!r})"
        else:
            variable, _, message = message.partition(": ")
        result.append(Problem(variable, message))
    return result


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: list[Problem] = []
    for problem in problems:
        if problem not in seen:
            seen.append(problem)
    return seen
