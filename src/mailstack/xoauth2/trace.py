"""Redaction and the per-connection protocol trace.

Secrets reach this package from the environment and from the token endpoint; a log line
is built from peer text (SMTP replies, OAuth error descriptions) that could echo one back.
So every line passes through one `Redactor` that knows the current secret values, instead
of trusting each call site to leave them out.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter values would blank out ordinary words
_MAX_LINES = 200  # the most recent lines are the ones that explain a failure


class Redactor:
    """Replaces every known secret value in a text with `[redacted]`."""

    def __init__(self, *static: str, dynamic: Callable[[], Iterable[str]] | None = None) -> None:
        self._static = [s for s in static if len(s) >= _MIN_SECRET]
        self._dynamic = dynamic

    def __call__(self, text: str) -> str:
        values = list(self._static)
        if self._dynamic is not None:
            values.extend(s for s in self._dynamic() if len(s) >= _MIN_SECRET)
        for value in sorted(values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return text


class Trace:
    """The upstream conversation of one connection, kept for a failure report.

    Only filled when full tracing is on (XOAUTH2_FULL_TRACE): like sasl-xoauth2's
    log_full_trace_on_failure, it is written out only when something failed, so a
    healthy relay logs nothing extra. AUTH payloads are never recorded.
    """

    def __init__(self, enabled: bool, redact: Redactor) -> None:
        self.enabled = enabled
        self._redact = redact
        self._lines: deque[str] = deque(maxlen=_MAX_LINES)

    def add(self, line: str) -> None:
        if self.enabled:
            self._lines.append(self._redact(line))

    def dump(self, logger: logging.Logger, label: str) -> None:
        """Log the trace, one record per line, and start a new one."""
        for line in self._lines:
            logger.info("xoauth2 trace %s: %s", label, line)
        self._lines.clear()
