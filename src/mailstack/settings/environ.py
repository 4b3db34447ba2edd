"""Read the relay's settings from environment variables, the boky/postfix way.

This is the one place that knows the image's conventions: `*_FILE` secrets, the deprecated
aliases, `POSTFIX_<param>` and `OPENDKIM_<Key>` pass-through (an empty value removes the
parameter), and the variables Kubernetes injects that look like ours but are not.
Every problem is collected, so `mailstack check` can report them all at once.

Values end up on lines of configuration files (main.cf, master.cf, opendkim.conf,
sasl_passwd), so a control character in one is refused: a newline would start a line of the
value's own choosing (`POSTFIX_smtpd_banner="x<newline>mynetworks = 0.0.0.0/0"`).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Collection, Iterable, Mapping
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

_POSTFIX_PARAM = re.compile(r"[a-z][A-Za-z0-9_]*")
_OPENDKIM_KEY = re.compile(r"[A-Z][A-Za-z0-9]*")
_ALL_CAPS = re.compile(r"[A-Z0-9_]+")

#: Control characters (C0 but tab, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\n": "newline",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "DEL",
}
AUTH_NEEDS_TLS = (
    "is none, but the relay-host password is sent only inside TLS, so mail would wait in the "
    "queue for ever; use may or a stronger level, or allow the password in clear with "
    "POSTFIX_smtp_sasl_security_options=noanonymous"
)
TOKEN_ENDPOINT_NOT_HTTPS = (
    "must be an https:// URL: the client secret and refresh token travel in it "  # noqa: S105
    "(plain http is accepted only to a loopback address)"
)
CONTROL_CHARACTER = (
    "contains a control character ({}); a value must fit on one line of a configuration file"
)

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
#: Whitespace-separated lists: a line break between items is a separator that never reaches
#: a file (each item is parsed on its own), so only other control characters are refused.
_LISTS = ("ALLOWED_SENDER_DOMAINS", "MASQUERADED_DOMAINS", "POSTFIX_mynetworks", "MYNETWORKS")
#: Every other variable whose value is used as text; secrets are checked as they are resolved.
_SINGLE_LINE = tuple(
    name
    for name in (
        *_PARSERS,
        *_PLAIN,
        *DEPRECATED_ALIASES,
        "MAILSTACK_LISTEN_SMTP",
        "LOG_FORMAT",
        "MAILSTACK_ROOT",
        "POSTFIX_myhostname",
        "SMTP_HEADER_CHECKS",
    )
    if name not in SECRET_VARIABLES and name not in _LISTS
)


def control_character(text: str) -> str | None:
    """The name of the first control character in `text` (tabs are allowed), or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    char = found.group()
    return _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")


def refuse_control_characters(
    env: Mapping[str, str],
    names: Iterable[str],
    problems: list[Problem],
    *,
    lists: Iterable[str] = (),
) -> None:
    """A problem for each set variable in `names` or `lists` whose value holds a control
    character; in `lists`, whitespace of any kind separates items and is allowed."""
    checks = [(name, False) for name in names] + [(name, True) for name in lists]
    for name, is_list in checks:
        value = env.get(name)
        if value is None:
            continue
        found = control_character(re.sub(r"\s", " ", value) if is_list else value)
        if found:
            problems.append(Problem(name, CONTROL_CHARACTER.format(found)))


def _read_secret_file(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    return text.removesuffix("\n").removesuffix("\r")


def resolve_secrets(env: dict[str, str], problems: list[Problem]) -> None:
    """Replace `<NAME>_FILE` by `<NAME>`; setting both is an error, as is an unreadable file.

    A secret goes into a file verbatim (sasl_passwd, the token store), so a control character
    anywhere in it is an error too; of a file's contents only one final line break is dropped.
    """
    for name in SECRET_VARIABLES:
        file_var = f"{name}_FILE"
        file_path = env.pop(file_var, None)
        if not file_path:
            refuse_control_characters(env, [name], problems)
            continue
        if env.get(name):
            problems.append(Problem(name, f"set both {name} and {file_var}; set only one"))
            continue
        try:
            env[name] = _read_secret_file(file_path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(Problem(file_var, f"cannot read {file_path}: {reason}"))
            continue
        found = control_character(env[name])
        if found:
            problems.append(
                Problem(
                    file_var,
                    f"{file_path} {CONTROL_CHARACTER.format(found)} "
                    "(only one final line break is dropped)",
                )
            )


def _apply_deprecated(env: dict[str, str], notices: list[str]) -> dict[str, str]:
    """Copy each deprecated alias that is set onto its new name (the alias wins); returns
    new name -> alias, so that a problem with the value names the variable the user set."""
    used: dict[str, str] = {}
    for old, new in DEPRECATED_ALIASES.items():
        if env.get(old):
            notices.append(f"{old} is deprecated; use {new} instead")
            env[new] = env[old]
            used[new] = old
    return used


def collect_prefixed(
    env: Mapping[str, str],
    prefix: str,
    pattern: re.Pattern[str],
    problems: list[Problem],
    settings: Collection[str] = (),
) -> dict[str, str | None]:
    """`PREFIX<key>=value` pairs; an empty value means "remove the key" (None).

    Keys in `settings` are first-class settings the caller reads itself: left out here.
    A value goes into the config file as it is, so a control character in it is a problem.
    """
    result: dict[str, str | None] = {}
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if _ALL_CAPS.fullmatch(key):
            # Kubernetes service links (POSTFIX_SERVICE_HOST, POSTFIX_MAIL_SERVICE_PORT ...)
            log.debug("ignoring %s: not a configuration key (service link?)", name)
            continue
        if not pattern.fullmatch(key):
            problems.append(Problem(name, f"{key!r} is not a valid configuration key name"))
            continue
        if key in settings:
            continue
        refuse_control_characters(env, [name], problems)
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
    refuse_control_characters(env, _SINGLE_LINE, problems, lists=_LISTS)
    resolve_secrets(env, problems)
    aliases_used = _apply_deprecated(env, notices)

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
    raw["POSTFIX_myhostname"] = myhostname(env, problems) or socket.gethostname()
    if "SMTP_HEADER_CHECKS" in env:
        config_dir = Paths(root).postfix_config
        raw["SMTP_HEADER_CHECKS"] = _header_checks(env["SMTP_HEADER_CHECKS"], config_dir, problems)

    raw["POSTFIX_*"] = collect_prefixed(
        env, "POSTFIX_", _POSTFIX_PARAM, problems, settings=_POSTFIX_SETTINGS
    )
    raw["OPENDKIM_*"] = collect_prefixed(env, "OPENDKIM_", _OPENDKIM_KEY, problems)

    _cross_checks(raw, problems)
    settings: RelaySettings | None = None
    try:
        settings = RelaySettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
    if problems:
        named = [Problem(aliases_used.get(p.variable, p.variable), p.message) for p in problems]
        raise ConfigError(_dedupe(named))
    assert settings is not None  # noqa: S101 - no problems means validation succeeded
    return settings


def myhostname(env: Mapping[str, str], problems: list[Problem]) -> str:
    """POSTFIX_myhostname, else HOSTNAME (checked like a setting when it is the one used)."""
    hostname = env.get("POSTFIX_myhostname", "").strip()
    if hostname or not env.get("HOSTNAME", "").strip():
        return hostname
    refuse_control_characters(env, ["HOSTNAME"], problems)
    return env["HOSTNAME"].strip()


def _cross_checks(raw: Mapping[str, Any], problems: list[Problem]) -> None:
    """Rules that involve several variables, checked even when single fields failed."""
    if not raw.get("ALLOWED_SENDER_DOMAINS") and not raw.get("ALLOW_EMPTY_SENDER_DOMAINS"):
        problems.append(Problem("ALLOWED_SENDER_DOMAINS", ALLOWED_SENDER_DOMAINS_MISSING))
    if (raw.get("XOAUTH2_CLIENT_ID") or raw.get("XOAUTH2_SECRET")) and not (
        raw.get("RELAYHOST") and raw.get("RELAYHOST_USERNAME")
    ):
        problems.append(Problem("XOAUTH2_CLIENT_ID", XOAUTH2_NEEDS_RELAYHOST))
    endpoint = raw.get("XOAUTH2_TOKEN_ENDPOINT")
    if endpoint and not values.secure_url(endpoint):
        problems.append(Problem("XOAUTH2_TOKEN_ENDPOINT", TOKEN_ENDPOINT_NOT_HTTPS))
    if _password_needs_tls(raw) and raw.get("POSTFIX_smtp_tls_security_level") == "none":
        problems.append(Problem("POSTFIX_smtp_tls_security_level", AUTH_NEEDS_TLS))
    listeners = {
        name: raw.get(name, RelaySettings.model_fields[field].default)
        for name, field in (
            ("MAILSTACK_LISTEN_SUBMISSION", "listen_submission"),
            ("MAILSTACK_LISTEN_SMTP", "listen_smtp"),
            ("MAILSTACK_METRICS_LISTEN", "metrics_listen"),
        )
    }
    for name, other in values.listener_clashes(listeners):
        problems.append(Problem(name, f"{listeners[name]} clashes with {other}={listeners[other]}"))


def _password_needs_tls(raw: Mapping[str, Any]) -> bool:
    """Whether the relay-host password is sent only inside TLS, as rendered by default
    (see render.postfix.relay_auth_parameters) unless POSTFIX_smtp_sasl_security_options
    allows plaintext mechanisms."""
    password_auth = (
        raw.get("RELAYHOST")
        and raw.get("RELAYHOST_USERNAME")
        and raw.get("RELAYHOST_PASSWORD")
        and not (raw.get("XOAUTH2_CLIENT_ID") or raw.get("XOAUTH2_SECRET"))
    )
    override = raw.get("POSTFIX_*", {}).get("smtp_sasl_security_options")
    return bool(password_auth) and (override is None or "noplaintext" in override)


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
