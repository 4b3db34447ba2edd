"""Parse daemon log lines into fields (pure functions, no I/O).

Postfix's postlogd writes `Mon DD HH:MM:SS host postfix/smtp[123]: text`; syslog datagrams
from OpenDKIM look like `<PRI>Mon DD HH:MM:SS opendkim[45]: text`. Delivery lines
(`QUEUEID: to=<...>, relay=..., delay=..., dsn=..., status=sent (...)`) also yield their fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_POSTLOG = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? )?(?:\S+ )?"
    r"(?P<service>[A-Za-z0-9_./-]+)\[(?P<pid>\d+)\]: (?P<message>.*)$"
)
_SYSLOG = re.compile(
    r"^<(?P<pri>\d{1,3})>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?"
    r"(?P<service>[A-Za-z0-9_./-]+)(?:\[(?P<pid>\d+)\])?: ?(?P<message>.*)$",
    re.DOTALL,
)
_QUEUE_ID = re.compile(r"^(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): ")
_FIELD = re.compile(
    r"(?:^|, )(?P<key>to|from|orig_to|relay|delay|dsn|status)=(?P<value><[^>]*>|[^,]*)"
)
_SYSLOG_LEVELS = ("critical", "critical", "critical", "error", "warning", "info", "info", "debug")


@dataclass
class LogRecord:
    """One daemon log line, split into what a log pipeline wants to index."""

    service: str
    message: str
    pid: int | None = None
    level: str = "info"
    fields: dict[str, str] = field(default_factory=dict)


def _level_of(message: str, default: str = "info") -> str:
    head = message.split(":", 1)[0].strip().lower()
    return {"warning": "warning", "error": "error", "fatal": "critical", "panic": "critical"}.get(
        head, default
    )


def delivery_fields(message: str) -> dict[str, str]:
    """queue_id, from, to, relay, delay, dsn and status from a Postfix queue log line."""
    match = _QUEUE_ID.match(message)
    if not match:
        return {}
    result = {"queue_id": match.group("qid")}
    rest = message[match.end() :]
    for item in _FIELD.finditer(rest):
        value = item.group("value")
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        if item.group("key") == "status":
            value = value.split(" ", 1)[0]
        result[item.group("key")] = value
    return result


def parse_postfix_line(line: str, default_service: str = "postfix") -> LogRecord:
    match = _POSTLOG.match(line)
    if not match:
        return LogRecord(default_service, line, level=_level_of(line))
    message = match.group("message")
    return LogRecord(
        service=match.group("service"),
        message=message,
        pid=int(match.group("pid")),
        level=_level_of(message),
        fields=delivery_fields(message),
    )


def parse_syslog_datagram(data: str, default_service: str = "opendkim") -> LogRecord:
    text = data.rstrip("\n\x00")
    match = _SYSLOG.match(text)
    if not match:
        return LogRecord(default_service, text)
    severity = int(match.group("pri")) & 7
    pid = match.group("pid")
    return LogRecord(
        service=match.group("service"),
        message=match.group("message"),
        pid=int(pid) if pid else None,
        level=_SYSLOG_LEVELS[severity],
    )
