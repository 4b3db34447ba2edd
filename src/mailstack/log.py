"""One log stream on stdout for mailstack and every daemon it runs.

LOG_FORMAT=plain gives `time level service[pid]: message` (coloured on a TTY or with
FORCE_COLOR); LOG_FORMAT=json gives exactly one JSON object per line with time, level,
service, pid and message, plus parsed fields (queue_id, from, to, relay, delay, dsn, status)
for Postfix delivery lines. Secrets are redacted in one place before anything is written.

mailstack's own records go through `logging`; daemon lines are several per message, so they
skip the LogRecord machinery and are written in batches by `emit_daemon_lines`. Both paths
share `format_line`, so the output is the same whichever way a line came.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TextIO

LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
LEVELS = {name: level for level, name in LEVEL_NAMES.items()}
_COLOURS = {
    "debug": "\x1b[2m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
#: An SMTP/IMAP `AUTH <mechanism> <initial response>` echoed in a line: the response goes.
#: Only after a SASL mechanism's name: "auth failed, 1 attempts" (Dovecot) is no secret.
_AUTH_LINE = re.compile(
    r"(?i)(\bAUTH(?:ENTICATE)?\s+(?:PLAIN|LOGIN|XOAUTH2?|OAUTHBEARER|CRAM-MD5|DIGEST-MD5|"
    r"SCRAM-SHA-\d+(?:-PLUS)?|NTLM|GSSAPI|EXTERNAL|ANONYMOUS)\s+)\S+"
)

_secrets: list[str] = []


def register_secret(value: str | None) -> None:
    """Never print this value: every log line is scrubbed of it."""
    if value and len(value) >= 3 and value not in _secrets:
        _secrets.append(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "********")
    if "auth" in text.lower():
        text = _AUTH_LINE.sub(r"\1********", text)
    return text


@dataclass
class _Output:
    """Where lines go and how they look; set by configure_logging."""

    stream: TextIO
    fmt: str = "plain"
    colour: bool = False
    tz: tzinfo | None = None  # the local zone, looked up once rather than per line
    last_time: float = -1.0
    last_text: str = ""
    last_second: int = -1
    second_text: str = ""
    zone_text: str = ""


_output = _Output(sys.stdout)


def _time_text(created: float) -> str:
    """ISO 8601 time with milliseconds; a batch of lines shares one instant, made once, and
    the date, time and zone part is made once a second (the log pipeline's hot path)."""
    if created != _output.last_time:
        _output.last_time = created
        second = int(created)
        if second != _output.last_second:
            _output.last_second = second
            whole = datetime.fromtimestamp(second, _output.tz).isoformat()
            _output.second_text, _output.zone_text = whole[:19], whole[19:]
        millis = int((created - second) * 1000)
        _output.last_text = f"{_output.second_text}.{millis:03d}{_output.zone_text}"
    return _output.last_text


def format_line(
    created: float,
    level: str,
    service: str,
    pid: int | None,
    message: str,
    fields: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """One output line, without its newline, in the configured format."""
    time_text = _time_text(created)
    message = redact(message.replace("\n", " ").replace("\r", " "))
    if _output.fmt == "json":
        data: dict[str, Any] = {
            "time": time_text,
            "level": level,
            "service": service,
            "pid": pid,
            "message": message,
        }
        if extra:
            data.update(extra)
        if fields:
            data.update({k: redact(v) for k, v in fields.items()})
        return json.dumps(data, ensure_ascii=False)
    pid_text = f"[{pid}]" if pid is not None else ""
    line = f"{time_text} {level.upper():<8} {service}{pid_text}: {message}"
    if extra and "exception" in extra:
        line += " | " + extra["exception"]
    if _output.colour and level in _COLOURS:
        line = f"{_COLOURS[level]}{line}{_RESET}"
    return line


class LineFormatter(logging.Formatter):
    """Formats mailstack's own log records with `format_line`."""

    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = {}
        if _output.fmt == "json" and record.name.startswith("mailstack"):
            extra["logger"] = record.name
        if record.exc_info:
            extra["exception"] = redact(self.formatException(record.exc_info).replace("\n", " | "))
        return format_line(
            record.created,
            LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "mailstack",
            record.process,
            record.getMessage(),
            extra=extra,
        )


def use_colour(force_color: bool, stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return force_color or stream.isatty()


def configure_logging(fmt: str = "plain", force_color: bool = False, debug: bool = False) -> None:
    """Send every logger to stdout in the chosen format."""
    stream = sys.stdout
    _output.stream = stream
    _output.fmt = "json" if fmt == "json" else "plain"
    _output.colour = _output.fmt == "plain" and use_colour(force_color, stream)
    _output.tz = datetime.now().astimezone().tzinfo
    _output.last_time = -1.0
    _output.last_second = -1
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def structured() -> bool:
    """Whether lines are written as JSON (and so carry their parsed fields)."""
    return _output.fmt == "json"


@dataclass
class DaemonLine:
    """One line a daemon wrote, already split into its parts."""

    service: str
    pid: int | None
    level: str
    message: str
    fields: dict[str, str] | None = None


def emit_daemon_lines(lines: Iterable[DaemonLine], created: float | None = None) -> None:
    """Write daemon lines tagged with their service and pid: one write, one flush per batch."""
    now = created if created is not None else time.time()
    text = "".join(
        format_line(now, line.level, line.service, line.pid, line.message, line.fields) + "\n"
        for line in lines
    )
    if text:
        _output.stream.write(text)
        _output.stream.flush()


def emit_daemon_line(
    service: str,
    pid: int | None,
    level: str,
    message: str,
    fields: dict[str, str] | None = None,
) -> None:
    """Write one daemon line (see emit_daemon_lines)."""
    emit_daemon_lines([DaemonLine(service, pid, level, message, fields)])
