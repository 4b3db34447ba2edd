"""Login failure accounting shared by every login path a Python service offers.

A failed login from a client address, or for an account, makes the next answers to that
address or account slower: the delay doubles with each failure inside the window, up to a
cap. Success does not reset the account's count (a guesser who also knows the password of
another account learns nothing from it); the window ages failures out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW = 900.0  # seconds a failure is remembered
BASE_DELAY = 1.0  # seconds for the first failure
MAX_DELAY = 15.0
MAX_KEYS = 100_000  # addresses and accounts tracked at once; the oldest are forgotten


@dataclass
class LoginThrottle:
    window: float = WINDOW
    base_delay: float = BASE_DELAY
    max_delay: float = MAX_DELAY
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        cutoff = self.clock() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
        return len(times)

    def delay(self, client: str, account: str | None) -> float:
        """Seconds to wait before answering a login attempt from `client` for `account`."""
        count = max(self._recent(f"ip:{client}"), self._recent(f"user:{account}") if account else 0)
        if count == 0:
            return 0.0
        return float(min(self.base_delay * 2.0 ** (count - 1), self.max_delay))

    def failed(self, client: str, account: str | None) -> None:
        now = self.clock()
        keys = [f"ip:{client}"] + ([f"user:{account}"] if account else [])
        for key in keys:
            self._failures.setdefault(key, deque(maxlen=64)).append(now)
        while len(self._failures) > MAX_KEYS:
            del self._failures[next(iter(self._failures))]
