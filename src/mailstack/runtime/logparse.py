"""Parse daemon log lines into fields (pure functions, no I/O).

Postfix's postlogd writes `Mon DD HH:MM:SS host postfix/smtp[123]: text`; syslog datagrams
from OpenDKIM look like `<PRI>Mon DD HH:MM:SS opendkim[45]: text`. Delivery lines
(`QUEUEID: to=<...>, relay=..., delay=..., dsn=..., status=sent (...)`) also yield their fields.
`mail_event` names the lines the metrics count (see mailstack.metrics).
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


#: A hook that sees every parsed line (the metrics count mail events with it).
LineObserver = Callable[[LogRecord], None]


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


def parse_postfix_line(
    line: str, default_service: str = "postfix", *, with_fields: bool = True
) -> LogRecord:
    """`with_fields=False` skips the delivery fields (queue id, to, status...) when neither
    JSON output nor the metrics will read them: most of the parsing cost per line."""
    match = _POSTLOG.match(line)
    if not match:
        return LogRecord(default_service, line, level=_level_of(line))
    message = match.group("message")
    return LogRecord(
        service=match.group("service"),
        message=message,
        pid=int(match.group("pid")),
        level=_level_of(message),
        fields=delivery_fields(message) if with_fields else {},
    )


_DOVECOT = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?"
    r"(?P<process>[A-Za-z0-9_-]+(?:\([^)]*\))?(?:<[^>]*>)*): "
    r"(?:(?P<level>Error|Warning|Fatal|Panic|Info|Debug): )?(?P<message>.*)$",
    re.DOTALL,
)
_DOVECOT_LEVELS = {
    "Error": "error",
    "Warning": "warning",
    "Fatal": "critical",
    "Panic": "critical",
    "Debug": "debug",
}


def parse_dovecot_line(line: str) -> LogRecord:
    """`Mon DD HH:MM:SS lmtp(4712): Error: text` (Dovecot's log_path=/dev/stderr)."""
    match = _DOVECOT.match(line)
    if not match:
        return LogRecord("dovecot", line)
    level = _DOVECOT_LEVELS.get(match.group("level") or "", "info")
    return LogRecord("dovecot", f"{match.group('process')}: {match.group('message')}", level=level)


_PYTHON_LEVELS = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "critical", "DEBUG": "debug"}


def parse_worker_line(line: str) -> LogRecord:
    """`LEVEL logger: text`, the format the worker logs in."""
    level, _, rest = line.partition(" ")
    if level in _PYTHON_LEVELS or level == "INFO":
        return LogRecord("worker", rest, level=_PYTHON_LEVELS.get(level, "info"))
    return LogRecord("worker", line)


def parse_syslog_message(data: str, default_service: str = "opendkim") -> LogRecord:
    """One `<pri>[timestamp] tag[pid]: message` as syslog(3) sends it (the NUL that ends it
    on a stream socket, or a trailing newline, dropped)."""
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


#: Events `mail_event` reports, in the order the metrics list them.
MAIL_EVENTS = (
    "received",
    "sent",
    "deferred",
    "bounced",
    "rejected",
    "dkim_signed",
    "spam_clean",
    "spam_junk",
    "spam_rejected",
    "spam_deferred",
    "greylist_deferred",
    "greylist_passed",
    "learned_spam",
    "learned_ham",
)
#: rspamd's action in its task log line (`(default: F (no action): [...]`) -> event
_SPAM_ACTIONS = {
    "(no action)": "spam_clean",
    "(add header)": "spam_junk",
    "(rewrite subject)": "spam_junk",
    "(reject)": "spam_rejected",
    "(soft reject)": "spam_deferred",
    "(greylist)": "spam_deferred",
}
_DELIVERY_STATUSES = frozenset({"sent", "deferred", "bounced"})
_REJECTS = ("reject:", "milter-reject:")


def mail_event(record: LogRecord) -> str | None:
    """Which counted mail event a parsed line reports, if any (one of MAIL_EVENTS).

    It runs on every daemon line, so it looks only at the program name (the last part of
    `postfix/submission/smtpd`) and then at most one prefix of the message:

    - received: cleanup's `QUEUEID: message-id=...`, logged once for every message that enters
      the queue (SMTP, sendmail, and Postfix's own bounce notices, which then leave as mail
      too), whereas qmgr's `from=` line repeats at every retry of a deferred message;
    - sent / deferred / bounced: the `status=` of an smtp or lmtp delivery line, one per
      recipient and attempt;
    - rejected: smtpd's `reject:` / `milter-reject:` lines (`NOQUEUE: reject: RCPT from ...`),
      one per refused command, temporary (4xx) or permanent (5xx);
    - dkim_signed: OpenDKIM's `QUEUEID: DKIM-Signature field added (s=..., d=...)`.
    """
    program = record.service.rpartition("/")[2]
    if program in ("smtp", "lmtp"):
        status = record.fields.get("status")
        return status if status in _DELIVERY_STATUSES else None
    if program == "smtpd":
        text = record.message.partition(": ")[2]
        return "rejected" if text.startswith(_REJECTS) else None
    if program == "cleanup":
        text = record.message.partition(": ")[2]
        return "received" if text.startswith("message-id=") else None
    if program == "opendkim" and "DKIM-Signature field added" in record.message:
        return "dkim_signed"
    if program == "rspamd":
        return _spam_verdict(record.message)
    if program == "worker":
        return _worker_event(record.message)
    return None


def _spam_verdict(message: str) -> str | None:
    """The MX's verdict from rspamd's task log line (`settings_id: mx`); the per-recipient
    Bayes checks at delivery are not verdicts."""
    if "rspamd_task_write_log" not in message or not message.endswith("settings_id: mx"):
        return None
    action = message.partition("(default: ")[2][2:].partition(":")[0]
    return _SPAM_ACTIONS.get(action)


def _worker_event(message: str) -> str | None:
    """Greylisting decisions and what the spam learner learned, from the worker's lines."""
    if ": greylist-policy: defer (" in message:
        return "greylist_deferred"
    if ": greylist-policy: pass (" in message:
        return "greylist_passed"
    if message.startswith("mailstack.spam: learned ") and message.endswith("(learned)"):
        kind = message.split()[2]
        return "learned_spam" if kind == "spam" else "learned_ham"
    return None
