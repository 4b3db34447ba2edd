"""The settings file `mailstack init` writes: `MAILSTACK_ROOT/etc/mailstack/mailstack.env`.

Every mailstack command reads it at start when it exists; a variable set in the environment
wins over the same variable in the file, so a container's or a chart's settings always
override what the first run chose. The format is the usual `.env` one (`NAME=value`, `#`
comments, optional quotes), read with python-dotenv: the file is meant to be edited by hand.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from mailstack.errors import InvalidInput
from mailstack.paths import Paths
from mailstack.settings.locations import mailstack_root

#: What the file holds, in the order `mailstack init` writes it.
HEADER = (
    "# mailstack settings written by `mailstack init`; read by every mailstack command.\n"
    "# A variable set in the environment wins over the same one here. See README.md.\n"
)


def env_file(environ: Mapping[str, str]) -> Path:
    """Where the settings file of this environment's MAILSTACK_ROOT is."""
    return Paths(mailstack_root(environ)).env_file


def read_env_file(path: Path) -> dict[str, str]:
    """The variables in `path`; InvalidInput naming the file for one that is not NAME=value."""
    from dotenv import dotenv_values

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(str(path), f"cannot read the settings file: {exc}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" not in stripped:
            raise InvalidInput(f"{path}, line {number}", f"not NAME=value: {stripped[:60]!r}")
    for name, value in dotenv_values(stream=io.StringIO(text), interpolate=False).items():
        if not name.replace("_", "").isalnum():
            raise InvalidInput(str(path), f"{name!r} is not a variable name")
        values[name] = value or ""
    return values


def apply_env_file(environ: MutableMapping[str, str]) -> Path | None:
    """Add the settings file's variables that `environ` does not set; the file's path, or
    None when there is none. A MAILSTACK_ROOT only the file sets is not followed."""
    path = env_file(environ)
    if not path.is_file():
        return None
    for name, value in read_env_file(path).items():
        environ.setdefault(name, value)
    return path


def render_env_file(values: Mapping[str, str]) -> str:
    """The file's text for `values` (quoted where the value needs it)."""
    lines = [HEADER]
    for name, value in values.items():
        needs_quotes = value != value.strip() or any(c in value for c in " #'\"\\$=") or not value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        text = f'"{escaped}"' if needs_quotes else value
        lines.append(f"{name}={text}\n")
    return "".join(lines)
