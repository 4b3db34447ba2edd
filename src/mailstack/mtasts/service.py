"""The worker's MTA-STS service: the policy map's listener, its source and its cache, with
the controller shape (`start()` once bound, `stop()` idempotent)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.mtasts.cache import PolicyCache
from mailstack.mtasts.lookup import PolicyLookup
from mailstack.mtasts.server import MtaStsMap
from mailstack.mtasts.source import LazySource


@dataclass
class MtaStsOptions:
    socket: Path
    cache_file: Path | None = None
    nameservers: tuple[tuple[str, int], ...] = ()
    ca_file: Path | None = None
    mode: int = 0o660
    dane_resolver: tuple[str, int] | None = None  # validating: lets DANE win over MTA-STS


@dataclass
class MtaStsService:
    options: MtaStsOptions
    name: str = field(default="mta-sts", init=False)

    def __post_init__(self) -> None:
        self.source = LazySource(self.options.nameservers, self.options.ca_file)
        self.cache = PolicyCache(self.options.cache_file)
        resolver = self.options.dane_resolver
        dane = None
        if resolver is not None:  # dnspython comes with it: only where DANE is asked for
            from mailstack.mtasts.dane import DaneCheck

            dane = DaneCheck(resolver)
        self.map = MtaStsMap(PolicyLookup(self.source, self.cache), dane=dane)

    async def start(self) -> None:
        self.cache.load(time.time())
        path = os.fspath(self.options.socket)
        await self.map.start(path=path, mode=self.options.mode)

    async def stop(self) -> None:
        await self.map.stop()
        await self.source.close()
