"""Pure parsers for the value formats the boky/postfix variables use.

Each function takes the raw string and returns a typed value or raises ValueError whose
message says what was expected; the caller names the variable.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailstack.errors import InvalidInput
from mailstack.names import normalise_domain

_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_TABLE = re.compile(r"^[a-z0-9_]+:\S+$")


def parse_flag(raw: str | None) -> bool:
    """A switch: unset, empty, 0, false, no and off mean off; anything else means on."""
    return raw is not None and raw.strip().lower() not in _FALSE_WORDS


def parse_domain(raw: str) -> str:
    """A DNS name, in the one canonical form of `mailstack.names` (`bücher.example` ->
    `xn--bcher-kva.example`); one label is enough here (a relay host may be `smtp`)."""
    name = raw.strip().rstrip(".")
    try:
        return normalise_domain(name, min_labels=1)
    except InvalidInput:
        raise ValueError(f"{raw!r} is not a valid domain name") from None


def split_items(raw: str) -> list[str]:
    """The items of a list variable: any whitespace or commas separate them."""
    return [item for item in re.split(r"[\s,]+", raw) if item]


def parse_optional_number(raw: str) -> float | None:
    """A finite number, or None for an empty value."""
    if not raw.strip():
        return None
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"must be a number (got {raw.strip()!r})") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number (got {raw.strip()!r})")
    return number


def parse_daily_time(raw: str) -> str | None:
    """A time of day as HH:MM (24 hours); None for an empty value."""
    text = raw.strip()
    if not text:
        return None
    found = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
    if found is None:
        raise ValueError(f"must be a time of day as HH:MM, e.g. 03:30 (got {text!r})")
    return f"{int(found.group(1)):02d}:{found.group(2)}"


def parse_domain_list(raw: str) -> tuple[str, ...]:
    """Whitespace-separated domains (commas are accepted too, and stripped)."""
    return tuple(dict.fromkeys(parse_domain(item) for item in split_items(raw)))


def parse_networks(raw: str) -> tuple[str, ...]:
    """Postfix mynetworks: CIDR blocks or addresses ([::1]/128 style too) or type:table."""
    items = split_items(raw)
    if not items:
        raise ValueError("must list at least one network, e.g. 127.0.0.0/8")
    result: list[str] = []
    for item in items:
        bare = _unbracketed(item)
        try:
            network = ipaddress.ip_network(bare, strict=False)
        except ValueError:
            if not (_TABLE.match(item) or item.startswith("/")):
                raise ValueError(
                    f"{item!r} is neither a network (like 10.0.0.0/8) nor a type:table lookup"
                ) from None
            result.append(item)
            continue
        if network.version == 6:
            # Postfix reads a bare IPv6 address as a type:table name: it wants [addr]/len
            address, _, length = bare.partition("/")
            item = f"[{address}]/{length}" if length else f"[{address}]"
        result.append(item)
    return tuple(result)


def parse_allow_list(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Networks and domains, separated by whitespace or commas: (networks, domains).

    A network is a CIDR block or a single address, IPv6 bare or in brackets, and comes back
    in CIDR form (`192.0.2.1` -> `192.0.2.1/32`, `[2001:db8::]/32` -> `2001:db8::/32`); a
    domain comes back in the canonical form of `parse_domain`. Repeats are dropped.
    """
    networks: dict[str, None] = {}
    domains: dict[str, None] = {}
    for item in split_items(raw):
        try:
            networks[str(ipaddress.ip_network(_unbracketed(item), strict=False))] = None
        except ValueError:
            try:
                domains[parse_domain(item)] = None
            except ValueError:
                raise ValueError(
                    f"{item!r} is neither a network (like 192.0.2.0/24) nor a domain name"
                ) from None
    return tuple(networks), tuple(domains)


def _unbracketed(item: str) -> str:
    """`[2001:db8::]/32` -> `2001:db8::/32`: Postfix's brackets around an IPv6 address."""
    return item.replace("[", "").replace("]", "")


def parse_root(raw: str | None) -> Path:
    """MAILSTACK_ROOT: the folder every file lives under; unset or empty means `/`."""
    root = Path((raw or "").strip() or "/")
    if not root.is_absolute():
        raise ValueError(f"must be an absolute path (got {root})")
    return root


def parse_size(raw: str) -> int:
    """A size in bytes; 0 means unlimited."""
    text = raw.strip()
    if not text.isdigit():
        raise ValueError(f"must be a whole number of bytes, 0 for unlimited (got {raw!r})")
    return int(text)


@dataclass(frozen=True)
class HostPort:
    """A listening address: host (IPv4, [IPv6] or name) and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """Where a local client connects: the wildcard addresses mean loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)


def parse_listen(raw: str) -> HostPort:
    """`address:port` or `[ipv6]:port`."""
    text = raw.strip()
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^\[\]:\s]*):(\d+)", text)
    if not match:
        raise ValueError(f"must be address:port or [ipv6]:port (got {raw!r})")
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535 (got {port})")
    return HostPort(host, port)


def same_socket(a: HostPort, b: HostPort) -> bool:
    """Whether two listeners would fight over one port (a wildcard address overlaps all)."""
    wildcards = {"0.0.0.0", "::"}
    return a.port == b.port and (a.host == b.host or bool({a.host, b.host} & wildcards))


def secure_url(url: str) -> bool:
    """https://, or http:// to a loopback address (a token endpoint in a test, a local
    proxy): nothing secret crosses a network in clear."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "https":
        return True
    if scheme.lower() != "http":
        return False
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host
    host = host.split(":", 1)[0] if host.count(":") == 1 else host
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listener_clashes(listeners: dict[str, HostPort | None]) -> list[tuple[str, str]]:
    """(later, earlier) pairs of variables whose listeners would share a port, in the order
    given: the later one is the one to report."""
    found: list[tuple[str, str]] = []
    seen: list[tuple[str, HostPort]] = []
    for name, address in listeners.items():
        if address is None:
            continue
        for other, earlier in seen:
            if same_socket(address, earlier):
                found.append((name, other))
                break
        seen.append((name, address))
    return found


@dataclass(frozen=True)
class RelayHost:
    """Postfix `relayhost` in any of its forms; `text` is what goes into main.cf."""

    host: str
    port: int | None
    bracketed: bool  # [host] means: no MX lookup

    @property
    def text(self) -> str:
        host = f"[{self.host}]" if self.bracketed else self.host
        return f"{host}:{self.port}" if self.port is not None else host


def parse_relayhost(raw: str) -> RelayHost:
    """`host`, `host:port`, `[host]`, `[host]:port` or `[ipv6]:port`."""
    text = raw.strip()
    match = re.fullmatch(r"\[([^\[\]\s]+)\](?::(\d+))?|([^\[\]:\s]+)(?::(\d+))?", text)
    if not match:
        raise ValueError(
            f"must be host, host:port, [host]:port or [ipv6]:port (got {raw!r}); "
            "put IPv6 addresses in brackets"
        )
    bracketed = match.group(1) is not None
    host = match.group(1) if bracketed else match.group(3)
    port_text = match.group(2) if bracketed else match.group(4)
    port = int(port_text) if port_text else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535 (got {port})")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            parse_domain(host)
    return RelayHost(host=host, port=port, bracketed=bracketed)


@dataclass(frozen=True)
class DkimSelectors:
    """DKIM_SELECTOR: a fallback selector plus exact per-domain selectors."""

    default: str = "mail"
    per_domain: dict[str, str] = field(default_factory=dict)

    def for_domain(self, domain: str) -> str:
        return self.per_domain.get(domain, self.default)

    @property
    def text(self) -> str:
        """The DKIM_SELECTOR text that `parse_selectors` turns back into these selectors."""
        return ",".join([*(f"{d}={s}" for d, s in self.per_domain.items()), self.default])


_SELECTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: MAILSTACK_DKIM_ROTATE_SELECTOR's default: `ms202611` for a rotation in November 2026
DEFAULT_SELECTOR_FORMAT = "ms%Y%m"
#: a sample date for checking a selector format: every field has its widest value
_SAMPLE_DATE = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def parse_selector(raw: str) -> str:
    """One DKIM selector: letters, digits, `.`, `_` and `-`, starting with a letter or digit."""
    text = raw.strip()
    if not _SELECTOR.match(text):
        raise ValueError(f"{text!r} is not a valid selector")
    return text


def parse_selector_format(raw: str) -> str:
    """MAILSTACK_DKIM_ROTATE_SELECTOR: a strftime(3) pattern (`ms%Y%m`) whose every date
    gives a valid selector."""
    text = raw.strip()
    if not text:
        raise ValueError("must not be empty")
    made = _SAMPLE_DATE.strftime(text)
    if not _SELECTOR.match(made):
        raise ValueError(f"{text!r} makes {made!r}, which is not a valid selector")
    return text


def parse_selectors(raw: str) -> DkimSelectors:
    """`foo,example.org=postfix,example.com=blah`: `d=s` items per domain, the last bare item
    is the fallback, and without any bare item the fallback is `mail` (boky/postfix rules)."""
    default = "mail"
    per_domain: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if "=" in item:
            domain, _, selector = item.partition("=")
            selector = selector.strip()
            if not _SELECTOR.match(selector):
                raise ValueError(f"{selector!r} is not a valid selector (in {item!r})")
            per_domain[parse_domain(domain)] = selector
        else:
            if not _SELECTOR.match(item):
                raise ValueError(f"{item!r} is not a valid selector")
            default = item
    return DkimSelectors(default=default, per_domain=per_domain)


def parse_nameservers(raw: str) -> tuple[tuple[str, int], ...]:
    """`ADDR[:PORT]` items (whitespace or commas) -> ((address, port), ...)."""
    return tuple(parse_nameserver(item) for item in split_items(raw))


def parse_optional_address(raw: str) -> str | None:
    """An IP address (no port: resolv.conf has none), None when empty."""
    text = raw.strip().strip("[]")
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{raw.strip()!r} is not an IP address") from None


def resolver_problem(address: str, resolv_conf: Path) -> str | None:
    """Why Postfix would not ask the DNSSEC resolver `address`, or None.

    Postfix's smtp client reads only resolv.conf, which names no port; for DANE it trusts
    the AD bit of whatever server answers, so every server listed must be the validating one.
    """
    try:
        text = resolv_conf.read_text()
    except OSError as exc:
        return f"cannot read {resolv_conf}: {exc.strerror}"
    listed = [
        fields[1]
        for fields in (line.split() for line in text.splitlines())
        if len(fields) >= 2 and fields[0] == "nameserver"
    ]
    if listed != [address]:
        found = ", ".join(listed) or "none"
        return (
            f"Postfix asks only the resolvers in {resolv_conf} (there: {found}); it must list "
            f"{address} alone (e.g. a validating unbound beside mailstack; Kubernetes: "
            "dnsPolicy None with dnsConfig.nameservers)"
        )
    return None


DNS_PORT = 53


def parse_nameserver(text: str) -> tuple[str, int]:
    """`ADDR`, `ADDR:PORT`, `[IPV6]:PORT` or a bare IPv6 address -> (address, port)."""
    raw = text.strip()
    host, port = raw, str(DNS_PORT)
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not ADDR[:PORT] or [IPV6]:PORT")
        port = rest[1:] if rest else port
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1..65535")
    return str(address), int(port)
