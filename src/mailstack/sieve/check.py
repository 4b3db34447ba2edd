"""Validate a Sieve script with `sievec`, the compiler Dovecot's delivery itself uses.

Each check runs in a fresh private folder holding an empty Dovecot configuration, the
script and the compiled output, so neither the host's /etc/dovecot (which may be missing or
half-configured) nor another check can change the verdict, and nothing is written elsewhere.
With the empty configuration Pigeonhole enables its default extension set, which is what a
stock Dovecot delivering for mailstack enables too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from mailstack.errors import ExitCode, MailstackError

SIEVEC = "sievec"
CHECK_TIMEOUT = 30.0  # seconds; compiling even a 1 MiB script takes a fraction of that
SCRIPT_STEM = "script"
MAX_SCRIPT_BYTES = 1024 * 1024  # Dovecot's default sieve_max_script_size

# What sievec accepts in `require` with the empty configuration (a test compiles each
# one), minus `include`: scripts live in the database, so there is nothing to include.
SIEVE_EXTENSIONS = (
    "fileinto",
    "reject",
    "envelope",
    "encoded-character",
    "vacation",
    "subaddress",
    "comparator-i;ascii-numeric",
    "relational",
    "regex",
    "imap4flags",
    "copy",
    "body",
    "variables",
    "enotify",
    "environment",
    "mailbox",
    "date",
    "index",
    "ihave",
    "duplicate",
    "mime",
    "foreverypart",
    "extracttext",
)

# Dovecot reads no other file when given -c; an empty one means built-in defaults.
_CONFIG = "# private, empty: mailstack checks scripts with Pigeonhole's defaults\n"
_ERROR = re.compile(rf"^{SCRIPT_STEM}: (?:(line \d+): )?error: (.*)$")
_GENERIC = {"parse failed.", "validation failed.", "code generation failed."}
_REPEAT_NOTE = re.compile(r"\s*\([^()]*\bonce\b[^()]*\)\s*$")


class SieveCheckUnavailable(MailstackError):
    """sievec is missing or broken, so no verdict: callers should refuse for now, not store."""

    exit_code = ExitCode.UNAVAILABLE


def _clean(message: str) -> str:
    """ "unknown command 'x' (only reported once at first occurrence)." -> without the note."""
    return _REPEAT_NOTE.sub("", message.strip().rstrip(".")).rstrip(".")


def _errors(stderr: str) -> list[str]:
    """The compiler's error lines as `line N: message`; the summary line only if alone."""
    found: list[str] = []
    summary: list[str] = []
    for line in stderr.splitlines():
        match = _ERROR.match(line.strip())
        if match is None:
            continue
        location, message = match.groups()
        if message in _GENERIC:
            summary.append(f"the script is not valid Sieve: {_clean(message)}")
        else:
            found.append(f"{location}: {_clean(message)}" if location else _clean(message))
    return found or summary[:1]


def check_script(text: str, *, sievec: str = SIEVEC, timeout: float = CHECK_TIMEOUT) -> str | None:
    """None if `text` compiles, else the compiler's errors, one per line.

    Raises SieveCheckUnavailable when sievec is not installed, times out or fails for a
    reason that is not the script's fault.
    """
    program = shutil.which(sievec)
    if program is None:
        raise SieveCheckUnavailable(
            f"{sievec} not found: install Pigeonhole (Debian package dovecot-sieve)"
        )
    with tempfile.TemporaryDirectory(prefix="mailstack-sievec-") as folder:
        root = Path(folder)
        config = root / "dovecot.conf"
        script = root / f"{SCRIPT_STEM}.sieve"
        config.write_text(_CONFIG)
        try:
            script.write_bytes(text.encode("utf-8"))
        except UnicodeEncodeError:
            return "the script is not valid UTF-8"
        try:
            proc = subprocess.run(
                [program, "-c", str(config), str(script), str(root / f"{SCRIPT_STEM}.svbin")],
                cwd=root,
                env={"PATH": "/usr/bin:/bin", "HOME": folder, "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SieveCheckUnavailable(f"{sievec} did not finish within {timeout}s") from None
        except OSError as exc:
            raise SieveCheckUnavailable(f"{sievec} could not run: {exc}") from None
        stderr = proc.stderr.decode("utf-8", errors="replace").replace(f"{folder}/", "")
    if proc.returncode == 0:
        return None
    errors = _errors(stderr)
    if errors:
        return "\n".join(errors)
    raise SieveCheckUnavailable(
        f"{sievec} failed with exit code {proc.returncode}: {stderr.strip() or 'no output'}"
    )
