"""Errors and exit codes.

    MailstackError
     ├── InvalidInput       a value (domain, address, name) is not acceptable; names the field
     ├── ConfigError        bad settings: every problem listed, exit 78
     ├── InitScriptError    a /docker-init.d script failed, exit 78
     └── DaemonError        a daemon would not start or kept crashing, exit 69

Exit codes follow sysexits(3) so that container runtimes and scripts can tell a bad
configuration (fix your variables) from a daemon failure (look at the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of every mailstack command."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    UNAVAILABLE = 69  # a daemon failed to start or kept crashing
    TEMPFAIL = 75
    CONFIG = 78  # bad configuration, or a custom init script failed


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, named by the variable that holds it."""

    variable: str
    message: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


class MailstackError(Exception):
    """Base of every error mailstack raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class InvalidInput(MailstackError):
    """A value is not acceptable; `field` says which argument was wrong."""

    exit_code = ExitCode.USAGE

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(MailstackError):
    """The settings are invalid; carries every problem found, not just the first."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class InitScriptError(MailstackError):
    """A custom init script exited non-zero; start-up stops."""

    exit_code = ExitCode.CONFIG

    def __init__(self, script: str, returncode: int) -> None:
        self.script = script
        self.returncode = returncode
        super().__init__(f"init script {script} failed with exit code {returncode}")


class DaemonError(MailstackError):
    """A supervised daemon failed to start or exhausted its restart budget."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, name: str, reason: str, log_tail: list[str] | None = None) -> None:
        self.name = name
        self.reason = reason
        self.log_tail = log_tail or []
        super().__init__(f"{name}: {reason}")
