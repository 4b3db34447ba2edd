"""DNS-01 (RFC 8555 section 8.4): what a DNS provider must do for an order.

A provider puts a TXT record at `_acme-challenge.<name>` and takes it away again. `present`
returns only once the record can be seen where the provider can look (its server), so the
ACME server is asked to validate no earlier; `cleanup` removes only the value it is given,
because two authorizations of one order (`example.com` and `*.example.com`) share the name.
RFC 2136 dynamic update (rfc2136.py) is the first provider; others (a DNS host's HTTP API)
fit the same two calls.
"""

from __future__ import annotations

from typing import Protocol


class Dns01Error(Exception):
    """The record could not be put or removed; the message says why, naming the setting to
    look at where one is to blame (never its secret)."""


class Dns01Provider(Protocol):
    """Puts and removes the TXT records of DNS-01 challenges. Blocking: called from the
    thread an order runs in."""

    def present(self, name: str, value: str) -> None:
        """Add `value` to the TXT records at `name` (fully qualified, no final dot) and
        wait until it is visible; Dns01Error if it cannot be done."""

    def cleanup(self, name: str, value: str) -> None:
        """Remove `value` from the TXT records at `name` (other values stay)."""
