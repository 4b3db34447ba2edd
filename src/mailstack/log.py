"""One log stream on stdout for mailstack and every daemon it runs.

LOG_FORMAT=plain gives `time level service[pid]: message` (coloured on a TTY or with
FORCE_COLOR); LOG_FORMAT=json gives exactly one JSON object per line with time, level,
service, pid and message, plus parsed fields (queue_id, from, to, relay, delay, dsn, status)
for Postfix delivery lines. Secrets are redacted in one place before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
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
_AUTH_LINE = re.compile(r"(?i)(\bAUTH\s+\S+\s+)\S+")

_secrets: list[str] = []


def register_secret(value: str | None) -> None:
    """Never print this value: every log line is scrubbed of it."""
    if value and len(value) >= 3 and value not in _secrets:
        _secrets.append(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "********")
    return _AUTH_LINE.sub(r"\1********", text)


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).astimezone().isoformat(timespec="milliseconds")


class _Base(logging.Formatter):
    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        service = getattr(record, "service", None) or "mailstack"
        pid = getattr(record, "daemon_pid", None)
        if pid is None and service == "mailstack":
            pid = record.process
        return {
            "time": _timestamp(record.created),
            "level": LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "service": service,
            "pid": pid,
            "message": redact(record.getMessage().replace("\n", " ").replace("\r", " ")),
        }


class JsonFormatter(_Base):
    """One JSON object per record, never more than one line."""

    def format(self, record: logging.LogRecord) -> str:
        data = self.fields(record)
        if record.name.startswith("mailstack") and getattr(record, "service", None) is None:
            data["logger"] = record.name
        extra = getattr(record, "fields", None)
        if extra:
            data.update({k: redact(v) for k, v in extra.items()})
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info).replace("\n", " | "))
        return json.dumps(data, ensure_ascii=False)


class PlainFormatter(_Base):
    """`time level service[pid]: message`, optionally coloured by level."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        data = self.fields(record)
        pid = f"[{data['pid']}]" if data["pid"] is not None else ""
        line = (
            f"{data['time']} {data['level'].upper():<8} {data['service']}{pid}: {data['message']}"
        )
        if record.exc_info:
            line += " | " + redact(self.formatException(record.exc_info).replace("\n", " | "))
        if self.colour and data["level"] in _COLOURS:
            line = f"{_COLOURS[data['level']]}{line}{_RESET}"
        return line


def use_colour(force_color: bool, stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return force_color or stream.isatty()


def configure_logging(fmt: str = "plain", force_color: bool = False, debug: bool = False) -> None:
    """Send every logger to stdout in the chosen format."""
    stream = sys.stdout
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter(use_colour(force_color, stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


daemon_log = logging.getLogger("mailstack.daemon")


def emit_daemon_line(
    service: str, pid: int | None, level: str, message: str, fields: dict[str, str] | None = None
) -> None:
    """Re-emit one line a daemon wrote, tagged with its service and pid."""
    daemon_log.log(
        LEVELS.get(level, logging.INFO),
        "%s",
        message,
        extra={"service": service, "daemon_pid": pid, "fields": fields or {}},
    )
