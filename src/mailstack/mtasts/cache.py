"""The MTA-STS policies fetched so far, kept in memory and in one JSON file on the state
volume, so that a restart keeps them (RFC 8461 section 5: a cached policy protects the next
delivery even while an attacker blocks the policy fetch)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mailstack.mtasts.policy import Policy, PolicyError, parse_policy

log = logging.getLogger(__name__)

MAX_ENTRIES = 50_000  # destinations remembered; the oldest fetched are dropped first


@dataclass(frozen=True)
class CachedPolicy:
    """A policy, the record id it was fetched under, when it was fetched (it expires
    `max_age` later) and when the TXT record was last looked at."""

    id: str
    policy: Policy
    fetched: float
    checked: float

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.policy.max_age


class PolicyCache:
    """Domain -> CachedPolicy; `save()` writes the file whole (write, fsync, rename)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, CachedPolicy] = {}

    def load(self, now: float) -> None:
        """Read the file; a missing one is an empty cache, a damaged one is logged and
        replaced at the next save (policies are fetched again)."""
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text())
            for domain, item in raw.items():
                cached = CachedPolicy(
                    str(item["id"]),
                    parse_policy(str(item["policy"]).encode("ascii")),
                    float(item["fetched"]),
                    float(item["checked"]),
                )
                if not cached.expired(now):
                    self.entries[str(domain)] = cached
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError, PolicyError) as exc:
            log.error("MTA-STS cache %s is unreadable, starting empty: %s", self.path, exc)
            self.entries.clear()
            return
        log.info("MTA-STS cache: %d policies from %s", len(self.entries), self.path)

    def get(self, domain: str) -> CachedPolicy | None:
        return self.entries.get(domain)

    def put(self, domain: str, cached: CachedPolicy) -> None:
        self.entries[domain] = cached
        if len(self.entries) > MAX_ENTRIES:
            oldest = min(self.entries, key=lambda name: self.entries[name].fetched)
            del self.entries[oldest]

    def drop(self, domain: str) -> None:
        self.entries.pop(domain, None)

    def save(self) -> None:
        """Write every entry; a failure is logged (the policies stay in memory)."""
        if self.path is None:
            return
        data = {
            domain: {
                "id": cached.id,
                "policy": cached.policy.to_text(),
                "fetched": cached.fetched,
                "checked": cached.checked,
            }
            for domain, cached in self.entries.items()
        }
        tmp = self.path.with_name(self.path.name + ".new")
        try:
            with tmp.open("w") as file:
                json.dump(data, file, indent=1, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            log.error("cannot write the MTA-STS cache %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
