"""The token file: one JSON object per relay user, kept in the Postfix queue volume.

The file is `{"access_token": ..., "refresh_token": ..., "expiry": <unix seconds>}`, the
layout sasl-xoauth2 uses (and boky/postfix writes, with expiry as a string), so a queue
volume moved over from that image keeps working. It lives next to the queue because a
refresh token can rotate: the newest one must survive a restart, and the queue volume is
the one thing that is persisted.

Every write is atomic (temporary file, fsync, rename, fsync of the folder) and mode 0600,
so a crash or a full disk leaves the old tokens, never half a file. Keys written by other
tools (sasl-xoauth2 knows `user`, `client_id`, ...) are kept on rewrite.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mailstack.xoauth2.errors import TokenFileError

_MODE = 0o600
_DIR_MODE = 0o700
_KNOWN = ("access_token", "refresh_token", "expiry")

Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tokens:
    """An access token, the refresh token that renews it, and when the access token expires."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expiry: float = 0.0  # unix seconds; 0 means unknown, so refresh before first use
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def fresh(self, now: float, margin: float) -> bool:
        """True while the access token has more than `margin` seconds left."""
        return bool(self.access_token) and self.expiry - margin > now

    def renewed(self, access_token: str, expiry: float, refresh_token: str | None) -> Tokens:
        """The tokens after a refresh; a rotated refresh token replaces the old one."""
        return replace(
            self,
            access_token=access_token,
            expiry=expiry,
            refresh_token=refresh_token or self.refresh_token,
        )

    def to_json(self) -> str:
        data = {**self.extra, "access_token": self.access_token}
        data.update(refresh_token=self.refresh_token, expiry=int(self.expiry))
        return json.dumps(data, indent=2) + "\n"


def parse_tokens(text: str, where: Path) -> Tokens:
    """Read the JSON; errors name the file and the key, never a value."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenFileError(f"token file {where} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise TokenFileError(f"token file {where} must hold a JSON object")
    refresh = data.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise TokenFileError(f"token file {where} has no refresh_token")
    access = data.get("access_token") or ""
    if not isinstance(access, str):
        raise TokenFileError(f"token file {where}: access_token must be a string")
    raw_expiry = data.get("expiry", 0)
    try:
        expiry = float(raw_expiry or 0)
    except (TypeError, ValueError):
        raise TokenFileError(f"token file {where}: expiry must be unix seconds") from None
    extra = {key: value for key, value in data.items() if key not in _KNOWN}
    return Tokens(access, refresh, expiry, extra)


class TokenStore:
    """Reads and atomically writes one token file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def signature(self) -> Signature | None:
        """Identity of the file's current version, so a hand edit is noticed; None if absent."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenFileError(f"cannot stat token file {self.path}: {exc.strerror}") from None
        return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)

    def load(self) -> Tokens:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenFileError(
                f"token file {self.path} does not exist: create it, or set "
                "XOAUTH2_INITIAL_ACCESS_TOKEN and XOAUTH2_INITIAL_REFRESH_TOKEN"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"cannot read token file {self.path}: {exc}") from None
        return parse_tokens(text, self.path)

    def save(self, tokens: Tokens) -> None:
        """Replace the file atomically."""
        self._write(tokens, exclusive=False)

    def create(self, tokens: Tokens) -> bool:
        """Write the file only if there is none; False if one already existed.

        Initial tokens from the environment are old by the next restart; overwriting a
        rotated refresh token with them would lock the relay out, so they never replace.
        """
        return self._write(tokens, exclusive=True)

    def _write(self, tokens: Tokens, *, exclusive: bool) -> bool:
        folder = self.path.parent
        try:
            folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        except OSError as exc:
            raise TokenFileError(f"cannot write token file {self.path}: {exc.strerror}") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), _MODE)
                handle.write(tokens.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            if exclusive:
                try:
                    os.link(tmp, self.path)  # fails if the file appeared meanwhile
                except FileExistsError:
                    return False
            else:
                tmp.replace(self.path)
            _fsync_dir(folder)
        except OSError as exc:
            raise TokenFileError(f"cannot write token file {self.path}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def token_file_path(queue_dir: Path, username: str) -> Path:
    """`<queue>/xoauth2-tokens/<username>`, where boky/postfix kept it."""
    if not username or "/" in username or username.startswith(".") or "\0" in username:
        raise ValueError(f"RELAYHOST_USERNAME {username!r} cannot name a token file")
    return queue_dir / "xoauth2-tokens" / username
