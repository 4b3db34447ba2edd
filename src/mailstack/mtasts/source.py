"""What the policy lookup asks of the network, and the source the worker starts with.

`LazySource` loads the network code (dnspython's async resolver, httpcore: ~4 MiB) at its
first fetch: a server whose users send no mail outward, or a relay behind a relay host,
never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mailstack.mtasts.fetch import PolicySource
    from mailstack.mtasts.policy import Policy

DNS_TIMEOUT = 5.0
FETCH_TIMEOUT = 10.0  # the whole fetch; Postfix's smtp waits for the answer meanwhile


class FetchError(Exception):
    """The record or the policy could not be had (network, TLS, HTTP, or invalid text)."""


class Source(Protocol):
    async def record_id(self, domain: str) -> str | None: ...
    async def policy(self, domain: str) -> Policy: ...
    async def close(self) -> None: ...


class LazySource:
    """A `PolicySource` (mailstack.mtasts.fetch) made at the first fetch."""

    def __init__(
        self, nameservers: tuple[tuple[str, int], ...] = (), ca_file: Path | None = None
    ) -> None:
        self.nameservers = nameservers
        self.ca_file = ca_file
        self.loaded: PolicySource | None = None

    def source(self) -> PolicySource:
        if self.loaded is None:
            from mailstack.mtasts.fetch import PolicySource

            self.loaded = PolicySource(self.nameservers, self.ca_file)
        return self.loaded

    async def record_id(self, domain: str) -> str | None:
        return await self.source().record_id(domain)

    async def policy(self, domain: str) -> Policy:
        return await self.source().policy(domain)

    async def close(self) -> None:
        if self.loaded is not None:
            await self.loaded.close()
