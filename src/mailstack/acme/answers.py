"""How an order proves control of a name: one challenge type each.

`Http01Answers` writes the key authorization where the worker's HTTP listener serves it;
`Dns01Answers` has a DNS provider put it in a TXT record, which also validates wildcard
names (`*.example.com`: DNS-01 only). `present` returns the step that takes the answer away
again; the client runs it however the order ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from acme import challenges, messages
from josepy.jwk import JWK

from mailstack.acme.dns01 import Dns01Error, Dns01Provider
from mailstack.runtime.files import write_atomic

Cleanup = Callable[[], None]


class ChallengeAnswers(Protocol):
    @property
    def kind(self) -> str:
        """The challenge type answered, as the ACME server names it ("http-01", "dns-01")."""

    def present(self, challenge: messages.ChallengeBody, name: str, key: JWK) -> Cleanup:
        """Publish the answer to `challenge` for `name` (no `*.`); returns its removal."""


@dataclass(frozen=True)
class Http01Answers:
    folder: Path  # files.challenges: served at /.well-known/acme-challenge/<token>
    kind: str = "http-01"

    def present(self, challenge: messages.ChallengeBody, name: str, key: JWK) -> Cleanup:
        _, validation = challenge.response_and_validation(key)
        token = self.folder / challenge.chall.encode("token")
        write_atomic(token, validation, 0o644)
        return lambda: token.unlink(missing_ok=True)


@dataclass(frozen=True)
class Dns01Answers:
    provider: Dns01Provider
    kind: str = "dns-01"

    def present(self, challenge: messages.ChallengeBody, name: str, key: JWK) -> Cleanup:
        chall = challenge.chall
        if not isinstance(chall, challenges.DNS01):
            raise TypeError(f"not a DNS-01 challenge: {chall.typ}")
        record, value = chall.validation_domain_name(name), chall.validation(key)
        try:
            self.provider.present(record, value)
        except Exception:  # it may have been added before the wait failed: no leftovers
            with contextlib.suppress(Dns01Error):
                self.provider.cleanup(record, value)
            raise
        return lambda: self.provider.cleanup(record, value)
