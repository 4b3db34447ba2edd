"""A user's learned counts, from the Redis behind rspamd (`RS<user>`: learns_spam,
learns_ham), and whether that user's Bayes classifier has enough to say anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast


@dataclass(frozen=True)
class UserStatistics:
    user: str
    spam: int
    ham: int
    min_learns: int

    @property
    def active(self) -> bool:
        """rspamd classifies for this user only once both classes reached min_learns."""
        return self.spam >= self.min_learns and self.ham >= self.min_learns

    def as_dict(self) -> dict[str, object]:
        return {
            "user": self.user,
            "spam": self.spam,
            "ham": self.ham,
            "min_learns": self.min_learns,
            "active": self.active,
        }


def min_learns(classifier_conf: Path) -> int:
    """The min_learns rspamd runs with, from the rendered classifier-bayes.conf."""
    found = re.search(r"^min_learns = (\d+);", classifier_conf.read_text(), re.MULTILINE)
    if found is None:
        raise ValueError(f"no min_learns in {classifier_conf}")
    return int(found.group(1))


class StatisticsUnavailable(OSError):
    """rspamd's Redis did not answer."""


def user_statistics(redis_socket: Path, user: str, minimum: int) -> UserStatistics:
    import redis

    client = redis.Redis(
        unix_socket_path=str(redis_socket), socket_timeout=10, decode_responses=True
    )
    try:
        # the synchronous client answers a dict (its annotation also allows an awaitable)
        raw = cast(dict[str, str], client.hgetall(f"RS{user.lower()}"))
    except redis.RedisError as exc:
        raise StatisticsUnavailable(f"Redis at {redis_socket}: {exc}") from exc
    finally:
        client.close()
    counts = {key: int(value) for key, value in raw.items() if value.isdigit()}
    return UserStatistics(user, counts.get("learns_spam", 0), counts.get("learns_ham", 0), minimum)
