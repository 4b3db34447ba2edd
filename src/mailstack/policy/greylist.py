"""Greylisting with postgrey's semantics (postgrey 1.37), decided over stored state.

A message is identified by its triplet: the client's network (IPv4 /24, IPv6 /64), the
sender and the recipient, each normalised as postgrey does. The first time a triplet is
seen the recipient is deferred (`DEFER_IF_PERMIT`, which Postfix answers with
`450 4.7.1`); a retry at least `delay` seconds after the first attempt passes, and from
then on the triplet passes at once. In order:

1. Only RCPT requests are judged; a client that logged in (`sasl_username`) never is.
2. Allow lists pass at once: client networks, client host names (the verified
   `client_name` equals or is under a listed domain, as in postgrey's client list) and
   recipients (`user@domain`, `user@` in any domain, or a domain and its subdomains;
   `postmaster@` and `abuse@` by default). From the settings and from the datastore.
3. A client network that passed greylisting `auto_allow_after` times (successful
   retries, counted at most once per `auto_allow_interval`) is auto-allowed.
4. The triplet: unknown -> deferred; retried too early -> deferred for the rest of the
   delay; first retry more than `retry_window` after the first attempt -> treated as new;
   a passed triplet not seen for `max_age` -> treated as new.

Senders are normalised so that one sender keeps one triplet: lower case; SRS addresses
become the original sender; BATV `prvs=tag=user@dom` becomes `user@dom`; `+tag` is
dropped; numbers standing alone in the local part (VERP) become `#`. The empty sender of
a bounce is kept empty: bounces are greylisted like other mail, as postgrey does.

Nothing here does I/O of its own: `Greylist` reads and writes through a `GreylistState`
(the datastore in `mailstack.policy.state`, or `MemoryState`) and takes the time from an
injected clock. A triplet's changes of state (new, deferred, first pass) are
compare-and-set writes, judged again if another instance changed the triplet meanwhile;
further passes of a passed triplet are one atomic increment, so they never conflict.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailstack import names
from mailstack.errors import InvalidInput
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DAY = 86400
DUNNO = "DUNNO"
DEFER_STATUS = "4.7.1"
MAX_ADDRESS = 512  # characters of a normalised sender or recipient kept in the key
MAX_ATTEMPTS = 5  # compare-and-set rounds before giving up (then the server fails open)

#: Kinds of allow-list entries, in the settings and in the datastore table.
NETWORK, DOMAIN, RECIPIENT = "network", "domain", "recipient"
KINDS = (NETWORK, DOMAIN, RECIPIENT)


def defer_action(seconds: int) -> str:
    return f"DEFER_IF_PERMIT {DEFER_STATUS} Greylisted, please try again in {seconds} seconds"


# -- configuration --------------------------------------------------------------------------


def normalise_allow_entry(kind: str, value: str) -> str:
    """The canonical form of an allow-list entry, as stored and compared; InvalidInput.

    network: `192.0.2.0/24` (host bits cleared; a bare address is its /32 or /128);
    domain: a client host domain in A-label form; recipient: `user@domain`, `user@`, or a
    domain.
    """
    text = value.strip()
    field_name = f"greylist allow {kind}"
    if kind == NETWORK:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidInput(field_name, f"{value!r} is not a network or address") from None
        return str(network)
    if kind == DOMAIN:
        return names.normalise_domain(text.lstrip("."), field_name, min_labels=1)
    if kind == RECIPIENT:
        local, at, domain = text.lower().rpartition("@")
        if not at:
            return names.normalise_domain(domain, field_name, min_labels=1)
        if not local:
            return names.normalise_domain(domain, field_name, min_labels=1)
        if not domain:
            return f"{names.normalise_local_part(local, field_name)}@"
        return names.normalise_address(text, field_name)
    raise InvalidInput("greylist allow kind", f"{kind!r} is not one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class GreylistConfig:
    """postgrey's defaults; times in seconds. `auto_allow_after = 0` turns auto-allow off."""

    delay: int = 300
    retry_window: int = 2 * DAY
    max_age: int = 35 * DAY
    auto_allow_after: int = 5
    auto_allow_interval: int = 3600
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    allow_networks: Sequence[str] = ()
    allow_domains: Sequence[str] = ()
    allow_recipients: Sequence[str] = ("postmaster@", "abuse@")
    purge_interval: int = 60
    allowed: frozenset[tuple[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("delay", "auto_allow_after", "auto_allow_interval", "purge_interval"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"greylist {name}", "must not be negative")
        for name in ("retry_window", "max_age"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"greylist {name}", "must be positive")
        if not 0 <= self.ipv4_prefix <= 32:
            raise InvalidInput("greylist ipv4_prefix", "must be between 0 and 32")
        if not 0 <= self.ipv6_prefix <= 128:
            raise InvalidInput("greylist ipv6_prefix", "must be between 0 and 128")
        entries = [
            *((NETWORK, v) for v in self.allow_networks),
            *((DOMAIN, v) for v in self.allow_domains),
            *((RECIPIENT, v) for v in self.allow_recipients),
        ]
        allowed = frozenset((kind, normalise_allow_entry(kind, v)) for kind, v in entries)
        for name in ("allow_networks", "allow_domains", "allow_recipients"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "allowed", allowed)


# -- normalisation --------------------------------------------------------------------------

_VERP_NUMBER = re.compile(r"\b\d+\b", re.ASCII)
_BATV_TAG = re.compile(r"[0-9a-z]{10}")
_SRS = re.compile(r"srs([01])[=+-](.*)", re.DOTALL)


def _domain(value: str) -> str:
    return names.try_domain(value) or value.strip().lower()


def _without_srs(local: str, domain: str) -> tuple[str, str]:
    """SRS0=hash=tt=orig.domain=orig.local@forwarder -> (orig.local, orig.domain); SRS1
    (a forwarder re-forwarding) carries the same SRS0 part after `hash=forwarder=`."""
    match = _SRS.fullmatch(local)
    if match is None:
        return local, domain
    rest = match.group(2)
    if match.group(1) == "1":
        parts = rest.split("=", 2)
        if len(parts) < 3 or not parts[2] or parts[2][0] not in "=+-":
            return local, domain
        rest = parts[2][1:]
    parts = rest.split("=", 3)  # hash, timestamp, original domain, original local part
    if len(parts) < 4 or not parts[2] or not parts[3]:
        return local, domain
    return parts[3], parts[2]


def _without_batv(local: str) -> str:
    """postgrey's reading of BATV: `prvs=tag-val=local`, seen also as `prvs=local=tag-val`;
    the part that looks like a tag (10 letters or digits) is dropped."""
    if not local.startswith("prvs="):
        return local
    parts = local.split("=")
    if len(parts) != 3:
        return local
    first_tag = _BATV_TAG.match(parts[1]) is not None
    second_tag = _BATV_TAG.match(parts[2]) is not None
    if second_tag and not first_tag:
        return parts[1]
    return parts[2]


def normalise_sender(sender: str) -> str:
    """The sender as postgrey keys it; "" (a bounce) stays ""."""
    text = sender.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()[:MAX_ADDRESS]
    local, domain = _without_srs(local.lower(), domain)
    local = _without_batv(local)
    local = local.split("+", 1)[0]
    local = _VERP_NUMBER.sub("#", local)
    return f"{local}@{_domain(domain)}"[:MAX_ADDRESS]


def normalise_recipient(recipient: str) -> str:
    text = recipient.strip()
    return (names.try_address(text) or text.lower())[:MAX_ADDRESS]


def parse_client_address(value: str) -> IPAddress | None:
    text = value.strip().split("%", 1)[0]  # an IPv6 zone index is not part of the network
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_network(address: IPAddress, config: GreylistConfig) -> str:
    prefix = config.ipv4_prefix if address.version == 4 else config.ipv6_prefix
    return str(ipaddress.ip_network((address, prefix), strict=False))


# -- requests and verdicts ------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """What greylisting looks at in one RCPT request, normalised."""

    address: IPAddress
    client_name: str  # the verified host name, "" when Postfix says "unknown"
    network: str
    sender: str
    recipient: str

    @property
    def key(self) -> str:
        """The stored triplet's key: a fixed-size hash, whatever the addresses' length."""
        triplet = f"{self.network}/{self.sender}/{self.recipient}"
        return hashlib.sha256(triplet.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    action: str
    reason: str
    query: Query | None = None
    #: True when the triplet itself was judged (logged at info; the others at debug)
    judged: bool = False

    @property
    def greylisted(self) -> bool:
        return self.action != DUNNO


def _suffixes(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]]


def allow_candidates(query: Query) -> frozenset[tuple[str, str]]:
    """Every allow-list entry that would match this request, in canonical form: the
    client's networks of every prefix length, the client name and its parent domains, the
    recipient (also without +tag), its local part and its domains."""
    address = query.address
    found = {
        (NETWORK, str(ipaddress.ip_network((address, bits), strict=False)))
        for bits in range(address.max_prefixlen + 1)
    }
    if query.client_name:
        found.update((DOMAIN, suffix) for suffix in _suffixes(query.client_name))
    local, at, domain = query.recipient.rpartition("@")
    if at:
        base = local.split("+", 1)[0]
        for part in {local, base}:
            found.update({(RECIPIENT, f"{part}@{domain}"), (RECIPIENT, f"{part}@")})
        found.update((RECIPIENT, suffix) for suffix in _suffixes(domain))
    elif query.recipient:
        found.add((RECIPIENT, f"{query.recipient}@"))
    return frozenset(found)


def screen(attributes: Mapping[str, str], config: GreylistConfig) -> Query | Verdict:
    """The rules that need no stored state: a Verdict, or the Query to judge further."""
    stage = attributes.get("protocol_state", "RCPT").upper()
    if stage != "RCPT":
        return Verdict(DUNNO, f"not judged at {stage}")
    if attributes.get("sasl_username"):
        return Verdict(DUNNO, "authenticated client")
    recipient = normalise_recipient(attributes.get("recipient", ""))
    if not recipient:
        return Verdict(DUNNO, "no recipient")
    address = parse_client_address(attributes.get("client_address", ""))
    if address is None:
        return Verdict(DUNNO, "no usable client address")
    name = attributes.get("client_name", "").strip().lower().rstrip(".")
    query = Query(
        address=address,
        client_name="" if name == "unknown" else name,
        network=client_network(address, config),
        sender=normalise_sender(attributes.get("sender", "")),
        recipient=recipient,
    )
    hits = allow_candidates(query) & config.allowed
    if hits:
        return Verdict(DUNNO, f"allow-listed {min(hits)[0]} (settings)", query)
    return query


# -- stored state and the decisions over it -------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A stored triplet: first attempt (of the current round), last request, passes."""

    first: int
    last: int
    passed: int


@dataclass(frozen=True)
class ClientRecord:
    """A client network's successful retries, and when the last one was counted."""

    successes: int
    last: int


def judge_triplet(seen: Seen | None, now: int, config: GreylistConfig) -> tuple[Verdict, Seen]:
    """The verdict for a triplet and the record to store in its place. A triplet that has
    not waited `delay` since its first attempt is deferred (with delay 0, never)."""
    if seen is not None and seen.passed > 0:
        if now - seen.last <= config.max_age:
            return Verdict(DUNNO, "known triplet"), Seen(seen.first, now, seen.passed + 1)
        first, reason = now, "expired"
    elif seen is None:
        first, reason = now, "new"
    elif seen.first > now:  # a clock that went back: start the wait again
        first, reason = now, "first seen in the future"
    elif now - seen.first > config.retry_window:
        first, reason = now, "retried after the retry window"
    else:
        first, reason = seen.first, "early retry"
    waited = now - first
    if waited < config.delay:
        action = defer_action(config.delay - waited)
        return Verdict(action, reason, judged=True), Seen(first, now, 0)
    return Verdict(DUNNO, f"passed after {waited} s", judged=True), Seen(first, now, 1)


def auto_allowed(record: ClientRecord | None, now: int, config: GreylistConfig) -> bool:
    return (
        config.auto_allow_after > 0
        and record is not None
        and record.successes >= config.auto_allow_after
        and now - record.last <= config.max_age
    )


def client_update(
    record: ClientRecord | None, now: int, config: GreylistConfig
) -> ClientRecord | None:
    """A client network's record after one more success (or one more auto-allowed
    request), or None when nothing changes: counted at most once per interval."""
    if record is None or now - record.last > config.max_age:
        return ClientRecord(1, now)
    if now >= record.last + config.auto_allow_interval or record.last > now:
        return ClientRecord(record.successes + 1, now)
    return None


class GreylistState(Protocol):
    """Where triplets, client records and the allow list live. `save_*` are
    compare-and-set: they write only if the stored record still equals `old` (None: does
    not exist) and return False otherwise."""

    def allow_listed(self, candidates: Collection[tuple[str, str]]) -> bool: ...

    def triplet(self, query: Query) -> Seen | None: ...

    def save_triplet(self, query: Query, old: Seen | None, new: Seen) -> bool: ...

    def touch_triplet(self, query: Query, now: int, oldest: int) -> bool:
        """One more pass of a passed triplet, atomically (no compare-and-set: concurrent
        passes all count): `passed + 1`, `last = max(last, now)`; only if it has passed and
        was last seen at or after `oldest`. False if not (then it is judged again)."""
        ...

    def client(self, network: str) -> ClientRecord | None: ...

    def save_client(self, network: str, old: ClientRecord | None, new: ClientRecord) -> bool: ...

    def purge(self, now: int, config: GreylistConfig) -> int: ...


def purge_cutoffs(now: int, config: GreylistConfig) -> tuple[int, int]:
    """(last seen before which any record goes, before which a never-passed triplet goes)."""
    return now - config.max_age, now - config.retry_window


class MemoryState:
    """GreylistState in a dict: one process only (tests, or a single instance)."""

    def __init__(self) -> None:
        self.triplets: dict[str, Seen] = {}
        self.clients: dict[str, ClientRecord] = {}
        self.allow: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def allow_listed(self, candidates: Collection[tuple[str, str]]) -> bool:
        return not self.allow.isdisjoint(candidates)

    def triplet(self, query: Query) -> Seen | None:
        return self.triplets.get(query.key)

    def save_triplet(self, query: Query, old: Seen | None, new: Seen) -> bool:
        with self._lock:
            if self.triplets.get(query.key) != old:
                return False
            self.triplets[query.key] = new
            return True

    def touch_triplet(self, query: Query, now: int, oldest: int) -> bool:
        with self._lock:
            seen = self.triplets.get(query.key)
            if seen is None or seen.passed == 0 or seen.last < oldest:
                return False
            self.triplets[query.key] = Seen(seen.first, max(seen.last, now), seen.passed + 1)
            return True

    def client(self, network: str) -> ClientRecord | None:
        return self.clients.get(network)

    def save_client(self, network: str, old: ClientRecord | None, new: ClientRecord) -> bool:
        with self._lock:
            if self.clients.get(network) != old:
                return False
            self.clients[network] = new
            return True

    def purge(self, now: int, config: GreylistConfig) -> int:
        old, unpassed = purge_cutoffs(now, config)
        with self._lock:
            gone = [
                key
                for key, seen in self.triplets.items()
                if seen.last < old or (seen.passed == 0 and seen.last < unpassed)
            ]
            gone_clients = [net for net, rec in self.clients.items() if rec.last < old]
            for key in gone:
                del self.triplets[key]
            for net in gone_clients:
                del self.clients[net]
        return len(gone) + len(gone_clients)


class Greylist:
    """The decision with its state: `check(attributes)` gives the Verdict for one request.

    Thread-safe if the state is; may raise StoreUnavailable (or the state's own errors),
    which the server turns into a pass.
    """

    def __init__(
        self,
        state: GreylistState,
        config: GreylistConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.config = config or GreylistConfig()
        self.clock = clock
        self._last_purge: int | None = None

    def check(self, attributes: Mapping[str, str]) -> Verdict:
        now = int(self.clock())
        screened = screen(attributes, self.config)
        if isinstance(screened, Verdict):
            return screened
        query = screened
        if self.state.allow_listed(allow_candidates(query)):
            return Verdict(DUNNO, "allow-listed (datastore)", query)
        if self.config.auto_allow_after:
            record = self.state.client(query.network)
            if auto_allowed(record, now, self.config):
                self._count(query.network, record, now)
                return Verdict(DUNNO, "auto-allowed client network", query)
        for _ in range(MAX_ATTEMPTS):
            seen = self.state.triplet(query)
            verdict, new = judge_triplet(seen, now, self.config)
            if seen is not None and seen.passed and new.passed:  # known, and not expired
                saved = self.state.touch_triplet(query, now, now - self.config.max_age)
            else:
                saved = self.state.save_triplet(query, seen, new)
            if saved:
                break
        else:
            raise StoreUnavailable(f"triplet changed {MAX_ATTEMPTS} times while being judged")
        if self.config.auto_allow_after and new.passed == 1 and verdict.judged:
            self._count(query.network, self.state.client(query.network), now)
        return Verdict(verdict.action, verdict.reason, query, verdict.judged)

    def _count(self, network: str, record: ClientRecord | None, now: int) -> None:
        for _ in range(MAX_ATTEMPTS):
            new = client_update(record, now, self.config)
            if new is None:
                return
            if self.state.save_client(network, record, new):
                if new.successes == self.config.auto_allow_after:
                    log.info("greylist: client network %s auto-allowed", network)
                return
            record = self.state.client(network)
        log.debug("greylist: gave up counting a success of %s (busy record)", network)

    def purge_due(self) -> bool:
        now = int(self.clock())
        last = self._last_purge
        return last is None or not 0 <= now - last < self.config.purge_interval

    def purge(self) -> int:
        """Delete expired triplets and client records (call when `purge_due()`)."""
        now = int(self.clock())
        self._last_purge = now
        return self.state.purge(now, self.config)
