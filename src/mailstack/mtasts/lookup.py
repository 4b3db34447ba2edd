"""The policy for a destination domain, by RFC 8461 section 5's rules.

- No cached policy: look up the TXT record; none -> no policy; one -> fetch the policy. A
  failed lookup or fetch -> no policy (logged): the mail goes out as without MTA-STS.
- A cached policy is used until `max_age` after its fetch. Its TXT record is looked at
  again every CHECK_INTERVAL: a new id, or a policy past half its age, is fetched again; while
  that fails (or the record is gone, or DNS is down) the cached policy keeps being used, so
  an attacker who blocks the fetch cannot downgrade a domain that had a policy.
- A domain whose fetch failed is not tried again for `retry_after` seconds, so that a dead
  policy host costs one timeout, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from mailstack.mtasts.cache import CachedPolicy, PolicyCache
from mailstack.mtasts.policy import Policy
from mailstack.mtasts.source import FetchError, Source

log = logging.getLogger(__name__)

CHECK_INTERVAL = 600.0
RETRY_AFTER = 120.0


class PolicyLookup:
    def __init__(
        self,
        source: Source,
        cache: PolicyCache,
        *,
        clock: Callable[[], float] = time.time,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.source = source
        self.cache = cache
        self.clock = clock
        self.retry_after = retry_after
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, its users
        self._failed: dict[str, float] = {}  # domain -> when it may be fetched again

    async def policy_for(self, domain: str) -> Policy | None:
        """The policy to apply to mail for `domain` (an A-label domain), or None."""
        lock, users = self._locks.get(domain, (asyncio.Lock(), 0))
        self._locks[domain] = (lock, users + 1)
        try:
            async with lock:  # one lookup per domain at a time: the others get its result
                return await self._policy_for(domain)
        finally:
            lock, users = self._locks[domain]
            if users > 1:
                self._locks[domain] = (lock, users - 1)
            else:
                del self._locks[domain]

    async def _policy_for(self, domain: str) -> Policy | None:
        now = self.clock()
        cached = self.cache.get(domain)
        if cached is not None and cached.expired(now):
            log.info("MTA-STS policy of %s expired", domain)
            self.cache.drop(domain)
            self.cache.save()
            cached = None
        if cached is not None and now - cached.checked < CHECK_INTERVAL:
            return cached.policy
        if cached is None and self._failed.get(domain, 0.0) > now:
            return None
        try:
            record = await self.source.record_id(domain)
        except FetchError as exc:
            return self._failure(domain, cached, now, f"no usable _mta-sts record: {exc}")
        if record is None:
            if cached is not None:  # a vanished record does not end a cached policy
                self.cache.put(domain, replace(cached, checked=now))
                return cached.policy
            return None
        if (
            cached is not None
            and record == cached.id
            and now - cached.fetched < (cached.policy.max_age / 2)
        ):
            self.cache.put(domain, replace(cached, checked=now))
            return cached.policy
        try:
            policy = await self.source.policy(domain)
        except FetchError as exc:
            return self._failure(domain, cached, now, f"policy fetch failed: {exc}")
        self._failed.pop(domain, None)
        self.cache.put(domain, CachedPolicy(record, policy, fetched=now, checked=now))
        self.cache.save()
        log.info(
            "MTA-STS policy of %s: mode %s, mx %s, max_age %d (id %s)",
            domain,
            policy.mode,
            " ".join(policy.mx) or "-",
            policy.max_age,
            record,
        )
        return policy

    def _failure(
        self, domain: str, cached: CachedPolicy | None, now: float, reason: str
    ) -> Policy | None:
        if cached is not None:
            mode = cached.policy.mode
            log.warning("MTA-STS %s: %s; using the cached policy (mode %s)", domain, reason, mode)
            self.cache.put(domain, replace(cached, checked=now))
            return cached.policy
        log.warning("MTA-STS %s: %s; no policy applies", domain, reason)
        self._failed[domain] = now + self.retry_after
        return None
