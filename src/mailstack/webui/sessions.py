"""Logged-in sessions of the web UI, kept in memory.

The worker is one process with one event loop, so a dict is the whole store: a session id is
32 random bytes (256 bits) that only the browser's cookie and this dict know. Sessions end at
logout, after IDLE seconds without a request, after LIFETIME seconds in all, and when the
worker restarts (users log in again; nothing else is lost).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE = 1800.0  # seconds without a request
LIFETIME = 12 * 3600.0  # seconds after login, however busy
MAX_SESSIONS = 10_000  # the oldest are forgotten beyond this


def new_token() -> str:
    """32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Session:
    address: str
    csrf: str
    started: float
    seen: float
    notice: str | None = None  # shown once on the next page (after a redirect)


@dataclass
class Sessions:
    idle: float = IDLE
    lifetime: float = LIFETIME
    limit: int = MAX_SESSIONS
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict)

    def start(self, address: str) -> tuple[str, Session]:
        """A new session (a new id: never one the browser had before login)."""
        now = self.clock()
        sid = new_token()
        session = Session(address, new_token(), now, now)
        self._sessions[sid] = session
        while len(self._sessions) > self.limit:
            del self._sessions[next(iter(self._sessions))]
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names, touched; None for an unknown or expired one."""
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.started > self.lifetime:
            del self._sessions[sid]
            return None
        session.seen = now
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def end_others(self, address: str, keep: str) -> None:
        """End every session of `address` but `keep` (after a password change)."""
        for sid in [s for s, v in self._sessions.items() if v.address == address and s != keep]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
