"""Outbound MTA-STS (RFC 8461): the policy of each destination domain, fetched, cached and
answered to Postfix's `smtp_tls_policy_maps` over socketmap."""

from mailstack.mtasts.cache import PolicyCache
from mailstack.mtasts.lookup import PolicyLookup
from mailstack.mtasts.server import MAP_NAME, MtaStsMap
from mailstack.mtasts.source import LazySource

__all__ = ["MAP_NAME", "LazySource", "MtaStsMap", "PolicyCache", "PolicyLookup"]
