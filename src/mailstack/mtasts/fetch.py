"""Where MTA-STS policies come from: the `_mta-sts.<domain>` TXT record over DNS, and the
policy file over HTTPS (RFC 8461 section 3.3: a certificate valid for `mta-sts.<domain>`,
no redirects, status 200, `text/plain`, a bounded size and time).

The policy host's address comes from the same resolvers as the record (dnspython), not from
the system's getaddrinfo: one DNS view for the whole lookup. httpcore (httpx's transport)
lets us connect to that address while TLS checks the certificate against the host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import httpcore
from httpcore import SOCKET_OPTION

from mailstack.mtasts.policy import (
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    parse_policy,
    parse_record,
)
from mailstack.mtasts.source import DNS_TIMEOUT, FETCH_TIMEOUT, FetchError


@dataclass(frozen=True)
class Fetched:
    id: str
    policy: Policy


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class ResolvingBackend(httpcore.AsyncNetworkBackend):
    """Connects to a host name's addresses as `resolver` gives them (A first, then AAAA)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver
        self.backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses: list[str] = []
        for rtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(f"{host}.", rtype)
            except dns.exception.DNSException:
                continue
            addresses += [rdata.to_text() for rdata in answer]
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        raise httpcore.ConnectError(f"{host}: {failure}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("policies are fetched over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class PolicySource:
    """Asks DNS for the record and the policy host for the policy.

    `nameservers`: (address, port) pairs to ask instead of the system's resolv.conf.
    `ca_file`: the certificates trusted for policy hosts instead of the system's.
    """

    def __init__(
        self, nameservers: tuple[tuple[str, int], ...] = (), ca_file: Path | None = None
    ) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
            ]
        self.resolver.lifetime = DNS_TIMEOUT
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # no proxy, no redirects (httpcore follows none), no content encoding asked for
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=20,
            keepalive_expiry=30,
            network_backend=ResolvingBackend(self.resolver),
        )

    async def close(self) -> None:
        await self.pool.aclose()

    async def record_id(self, domain: str) -> str | None:
        """The id in `_mta-sts.<domain>`; None when the domain publishes none (NXDOMAIN, no
        TXT, or no v=STSv1 record). Raises FetchError when DNS does not answer or the
        record is invalid."""
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}.", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise FetchError(f"DNS: {exc}") from exc
        texts = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]
        try:
            return parse_record(texts)
        except PolicyError as exc:
            raise FetchError(f"_mta-sts.{domain}: {exc}") from exc

    async def policy(self, domain: str) -> Policy:
        """The policy file, parsed; FetchError for any failure."""
        url = policy_url(domain)
        headers = [(b"Host", f"mta-sts.{domain}".encode()), (b"User-Agent", b"mailstack")]
        seconds = {"connect": FETCH_TIMEOUT, "read": FETCH_TIMEOUT, "write": FETCH_TIMEOUT}
        try:
            async with (
                asyncio.timeout(FETCH_TIMEOUT),
                self.pool.stream(
                    "GET", url, headers=headers, extensions={"timeout": seconds}
                ) as response,
            ):
                if response.status != HTTPStatus.OK:
                    raise FetchError(f"{url}: HTTP {response.status}")
                media_type = _header(response.headers, b"content-type").split(";")[0]
                if media_type.strip().lower() != "text/plain":
                    raise FetchError(f"{url}: Content-Type {media_type!r}, not text/plain")
                body = bytearray()
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise FetchError(f"{url}: over {MAX_POLICY_BYTES} bytes")
        except TimeoutError:
            raise FetchError(f"{url}: no answer within {FETCH_TIMEOUT:g} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except ssl.SSLError as exc:
            raise FetchError(f"{url}: TLS: {exc}") from exc
        try:
            return parse_policy(bytes(body))
        except PolicyError as exc:
            raise FetchError(f"{url}: {exc}") from exc


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
