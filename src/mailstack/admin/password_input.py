"""Where a new password comes from: a file, stdin or a prompt, never the command line.

A password in argv is visible to every local user (`ps`, /proc/*/cmdline) and lands in shell
history, so there is deliberately no option that takes one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import AdminError
from mailstack.errors import ExitCode

PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        metavar="FILE",
        show_default=False,
        help="Read the password from FILE (one trailing newline is dropped).",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (one trailing newline is dropped).",
    ),
]


def _drop_newline(text: str) -> str:
    """`echo secret > f` and `printf 'secret\\n' |` both mean the password `secret`."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(f"the password in {where} is not UTF-8 text", ExitCode.USAGE) from None


def _from_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdminError(
            f"cannot read the password file {path}: {exc.strerror}", ExitCode.USAGE
        ) from None
    return _drop_newline(_decode(data, str(path)))


def _prompt() -> str:
    """Ask twice without echo, so a typo does not lock the user out."""
    return str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))


def read_password(password_file: Path | None, password_stdin: bool) -> str:
    """The password from exactly one source; prompting only when a person is at the terminal."""
    if password_file is not None and password_stdin:
        raise AdminError("give --password-file or --password-stdin, not both", ExitCode.USAGE)
    if password_file is not None:
        return _from_file(password_file)
    if password_stdin:
        return _drop_newline(_decode(sys.stdin.buffer.read(), "standard input"))
    if sys.stdin.isatty():
        return _prompt()
    raise AdminError(
        "no password given: use --password-file FILE or --password-stdin "
        "(standard input is not a terminal, so there is no prompt)",
        ExitCode.USAGE,
    )
