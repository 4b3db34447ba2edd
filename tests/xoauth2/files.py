"""Small file helpers: token files written the way an operator or boky/postfix would."""

from __future__ import annotations

import dataclasses
import json
import stat
import time
from pathlib import Path
from typing import Any

from .servers import Issued


def write_tokens(path: Path, issued: Issued, *, expiry: float | None = None) -> None:
    """Put tokens in the file the way an operator would fix it by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "expiry": str(int(issued.expiry if expiry is None else expiry)),
    }
    path.write_text(json.dumps(data))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def remove(path: Path) -> None:
    path.unlink()


def expired(issued: Issued) -> Issued:
    return dataclasses.replace(issued, expiry=time.time() - 60)
