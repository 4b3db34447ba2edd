"""Greylisting's rules with an injected clock and the in-memory state: postgrey's
semantics, one rule per test. Pure: no sockets, no database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mailstack.errors import InvalidInput
from mailstack.policy.greylist import (
    DAY,
    DUNNO,
    ClientRecord,
    Greylist,
    GreylistConfig,
    MemoryState,
    Query,
    Seen,
    Verdict,
    defer_action,
    normalise_allow_entry,
    normalise_sender,
    screen,
)
from mailstack.store.errors import StoreUnavailable

START = 1_800_000_000  # an arbitrary Unix time
SENDER = "bob@remote.test"
RECIPIENT = "alice@hosted.test"


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Bench:
    """A Greylist on a MemoryState with a clock the test moves."""

    greylist: Greylist
    state: MemoryState
    clock: Clock

    def check(self, **attributes: str) -> Verdict:
        return self.greylist.check(request(**attributes))

    def seen(self, **attributes: str) -> Seen | None:
        query = screen(request(**attributes), self.greylist.config)
        assert isinstance(query, Query)
        return self.state.triplets.get(query.key)


Make = Callable[..., Bench]


def request(**attributes: str) -> dict[str, str]:
    """An RCPT request as Postfix sends it, from a remote unauthenticated client."""
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "client_name": "mx.remote.test",
        "sender": SENDER,
        "recipient": RECIPIENT,
        "sasl_username": "",
    }
    return {**base, **attributes}


@pytest.fixture
def make() -> Make:
    def build(state: MemoryState | None = None, **config: object) -> Bench:
        clock = Clock()
        memory = state or MemoryState()
        greylist = Greylist(memory, GreylistConfig(**config), clock=clock)  # type: ignore[arg-type]
        return Bench(greylist, memory, clock)

    return build


@pytest.fixture
def bench(make: Make) -> Bench:
    return make()


def deferred_for(verdict: Verdict) -> int:
    """The seconds a DEFER_IF_PERMIT verdict asks the client to wait."""
    assert verdict.action.startswith("DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in ")
    return int(verdict.action.split()[-2])


# -- the triplet ----------------------------------------------------------------------------


def test_first_attempt_is_deferred_for_the_whole_delay(bench: Bench) -> None:
    verdict = bench.check()
    assert verdict.action == "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds"
    assert verdict.greylisted
    assert verdict.reason == "new"
    assert bench.seen() == Seen(START, START, 0)


def test_retry_before_the_delay_is_deferred_for_the_rest(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(120)
    verdict = bench.check()
    assert deferred_for(verdict) == 180
    assert verdict.reason == "early retry"
    bench.clock.advance(179)
    assert deferred_for(bench.check()) == 1
    assert bench.seen() == Seen(START, START + 299, 0)  # the wait counts from the first try


def test_retry_after_the_delay_passes_and_then_every_time(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(300)  # exactly the delay, as postgrey
    verdict = bench.check()
    assert verdict.action == DUNNO
    assert verdict.reason == "passed after 300 s"
    bench.clock.advance(DAY)
    assert bench.check().action == DUNNO
    assert bench.check().reason == "known triplet"
    assert bench.seen() == Seen(START, START + 300 + DAY, 3)


def test_first_retry_after_the_retry_window_starts_again(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(2 * DAY + 1)
    verdict = bench.check()
    assert deferred_for(verdict) == 300
    assert verdict.reason == "retried after the retry window"
    later = bench.clock.now
    assert bench.seen() == Seen(int(later), int(later), 0)
    bench.clock.advance(300)
    assert bench.check().action == DUNNO


def test_retry_at_the_end_of_the_window_still_counts(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(2 * DAY)
    assert bench.check().action == DUNNO


def test_passed_triplet_expires_after_max_age_without_mail(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(300)
    bench.check()
    bench.clock.advance(30 * DAY)  # seen again within 35 days: stays passed
    assert bench.check().action == DUNNO
    bench.clock.advance(35 * DAY + 1)
    verdict = bench.check()
    assert deferred_for(verdict) == 300
    assert verdict.reason == "expired"


def test_triplet_is_client_network_sender_and_recipient(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(300)
    assert bench.check(client_address="192.0.2.200").action == DUNNO  # same /24
    assert bench.check(client_address="192.0.3.7").greylisted  # another /24
    assert bench.check(sender="carol@remote.test").greylisted
    assert bench.check(recipient="dave@hosted.test").greylisted


def test_ipv6_clients_are_grouped_by_64(bench: Bench) -> None:
    bench.check(client_address="2001:db8:1:2::25")
    bench.clock.advance(300)
    assert bench.check(client_address="2001:db8:1:2:ffff::1").action == DUNNO
    assert bench.check(client_address="2001:db8:1:3::25").greylisted
    # an IPv4-mapped IPv6 address is the IPv4 client
    bench.check(client_address="::ffff:198.51.100.1")
    bench.clock.advance(300)
    assert bench.check(client_address="198.51.100.99").action == DUNNO


def test_delay_zero_never_defers_but_still_counts_retries(make: Make) -> None:
    bench = make(delay=0, auto_allow_after=1)
    verdict = bench.check()
    assert verdict.action == DUNNO
    assert verdict.reason == "passed after 0 s"
    assert bench.seen() == Seen(START, START, 1)
    assert bench.state.clients["192.0.2.0/24"] == ClientRecord(1, START)


def test_a_clock_gone_back_restarts_the_wait(bench: Bench) -> None:
    bench.check()
    bench.clock.advance(-100)
    verdict = bench.check()
    assert deferred_for(verdict) == 300
    assert verdict.reason == "first seen in the future"


# -- who is never greylisted ----------------------------------------------------------------


def test_authenticated_clients_are_never_greylisted(bench: Bench) -> None:
    verdict = bench.check(sasl_username="alice@hosted.test")
    assert verdict == Verdict(DUNNO, "authenticated client")
    assert bench.state.triplets == {}


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"protocol_state": "DATA"}, "not judged at DATA"),
        ({"protocol_state": "VRFY"}, "not judged at VRFY"),
        ({"recipient": ""}, "no recipient"),
        ({"client_address": "unknown"}, "no usable client address"),
    ],
)
def test_requests_that_cannot_be_judged_pass(
    bench: Bench, attributes: dict[str, str], reason: str
) -> None:
    assert bench.check(**attributes) == Verdict(DUNNO, reason)
    assert bench.state.triplets == {}


def test_allow_listed_network_passes_at_once(make: Make) -> None:
    bench = make(allow_networks=["192.0.2.0/25", "2001:db8::1"])
    assert bench.check().reason == "allow-listed network (settings)"
    assert bench.check(client_address="2001:db8::1").action == DUNNO
    assert bench.check(client_address="192.0.2.200").greylisted  # outside the /25
    assert bench.check(client_address="2001:db8::2").greylisted


def test_allow_listed_domain_matches_the_verified_client_name(make: Make) -> None:
    bench = make(allow_domains=["remote.test", "Bücher.example"])
    assert bench.check().reason == "allow-listed domain (settings)"  # mx.remote.test
    assert bench.check(client_name="remote.test").action == DUNNO
    assert bench.check(client_name="MX.Remote.Test.").action == DUNNO
    assert bench.check(client_name="mail.xn--bcher-kva.example").action == DUNNO
    assert bench.check(client_name="evil-remote.test").greylisted
    assert bench.check(client_name="unknown").greylisted  # no verified name
    # the sender's domain is not the client's: it can be forged
    assert bench.check(client_name="mx.elsewhere.test", sender="x@remote.test").greylisted


def test_allow_listed_recipients(make: Make) -> None:
    bench = make()  # postmaster@ and abuse@ in any domain, as postgrey ships
    assert bench.check(recipient="postmaster@hosted.test").reason == (
        "allow-listed recipient (settings)"
    )
    assert bench.check(recipient="Abuse@Other.Test").action == DUNNO
    bench = make(allow_recipients=["sales@hosted.test", "open.test"])
    assert bench.check(recipient="sales@hosted.test").action == DUNNO
    assert bench.check(recipient="sales+eu@hosted.test").action == DUNNO
    assert bench.check(recipient="anyone@open.test").action == DUNNO
    assert bench.check(recipient="anyone@sub.open.test").action == DUNNO
    assert bench.check(recipient="postmaster@hosted.test").greylisted  # list replaced
    assert bench.check(recipient="sales@other.test").greylisted


def test_allow_list_in_the_store_passes_at_once(bench: Bench) -> None:
    bench.state.allow.add(("network", "192.0.2.0/24"))
    verdict = bench.check()
    assert verdict.action == DUNNO
    assert verdict.reason == "allow-listed (datastore)"
    assert bench.state.triplets == {}
    bench.state.allow = {("recipient", "alice@")}
    assert bench.check(client_address="203.0.113.1").action == DUNNO


# -- auto-allow -----------------------------------------------------------------------------


def pass_one(bench: Bench, number: int, **attributes: str) -> None:
    """One more triplet from the client passes greylisting (a successful retry)."""
    sender = f"sender{number}x@remote.test"
    assert bench.check(sender=sender, **attributes).greylisted
    bench.clock.advance(300)
    assert bench.check(sender=sender, **attributes).action == DUNNO


def test_client_network_is_auto_allowed_after_five_successful_retries(bench: Bench) -> None:
    for number in range(5):
        bench.clock.advance(3600)  # counted at most once an hour
        pass_one(bench, number)
    assert bench.state.clients["192.0.2.0/24"].successes == 5
    verdict = bench.check(sender="new@remote.test", client_address="192.0.2.99")
    assert verdict.action == DUNNO
    assert verdict.reason == "auto-allowed client network"
    assert bench.check(client_address="192.0.3.1", sender="new@remote.test").greylisted


def test_successes_within_the_interval_count_once(make: Make) -> None:
    bench = make(auto_allow_after=2)
    pass_one(bench, 1)
    pass_one(bench, 2)  # 300 s later: same hour
    assert bench.state.clients["192.0.2.0/24"] == ClientRecord(1, START + 300)
    assert bench.check(sender="new@remote.test").greylisted
    bench.clock.advance(3600)
    pass_one(bench, 3)
    assert bench.state.clients["192.0.2.0/24"].successes == 2
    assert bench.check(sender="newer@remote.test").action == DUNNO


def test_known_triplets_do_not_count_as_retries(make: Make) -> None:
    bench = make(auto_allow_after=2, auto_allow_interval=0)
    pass_one(bench, 1)
    for _ in range(5):
        assert bench.check(sender="sender1x@remote.test").action == DUNNO
    assert bench.state.clients["192.0.2.0/24"].successes == 1


def test_auto_allow_expires_and_can_be_turned_off(make: Make) -> None:
    bench = make(auto_allow_after=1)
    pass_one(bench, 1)
    assert bench.check(sender="new@remote.test").reason == "auto-allowed client network"
    bench.clock.advance(35 * DAY + 1)
    assert bench.check(sender="newer@remote.test").greylisted
    off = make(auto_allow_after=0, auto_allow_interval=0)
    for number in range(10):
        pass_one(off, number)
    assert off.state.clients == {}


def test_auto_allowed_client_is_kept_alive_hourly(make: Make) -> None:
    bench = make(auto_allow_after=1)
    pass_one(bench, 1)
    counted = bench.state.clients["192.0.2.0/24"]
    bench.clock.advance(60)
    bench.check(sender="a@remote.test")
    assert bench.state.clients["192.0.2.0/24"] == counted  # not within the hour
    bench.clock.advance(3600)
    bench.check(sender="b@remote.test")
    assert bench.state.clients["192.0.2.0/24"] == ClientRecord(2, int(bench.clock.now))


# -- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "key"),
    [
        ("Bob@Remote.TEST", "bob@remote.test"),
        ("bob+newsletter@remote.test", "bob@remote.test"),
        ("prvs=1234567890=bob@remote.test", "bob@remote.test"),  # BATV
        ("prvs=0a1b2c3d4e=bob@remote.test", "bob@remote.test"),
        ("prvs=bob=1234567890@remote.test", "bob@remote.test"),  # the other order
        ("PRVS=1234567890=Bob@remote.test", "bob@remote.test"),
        ("bounce-12345-678@lists.test", "bounce-#-#@lists.test"),  # VERP numbers
        ("list-bounces+bob=remote.test@lists.test", "list-bounces@lists.test"),
        ("user123@remote.test", "user123@remote.test"),  # a number inside a word stays
        ("news.2026.11@remote.test", "news.#.#@remote.test"),
        ("SRS0=HHH=TT=orig.test=bob@forwarder.test", "bob@orig.test"),
        ("srs0+abcd=x3=orig.test=bob@forwarder.test", "bob@orig.test"),
        ("SRS1=HHH=first.test==HHH=TT=orig.test=bob@second.test", "bob@orig.test"),
        ("SRS0=broken@forwarder.test", "srs0=broken@forwarder.test"),
        ("bob@BÜCHER.example", "bob@xn--bcher-kva.example"),
        ("", ""),
        ("MAILER-DAEMON", "mailer-daemon"),
    ],
)
def test_sender_normalisation(sender: str, key: str) -> None:
    assert normalise_sender(sender) == key


def test_normalised_senders_share_one_triplet(bench: Bench) -> None:
    """BATV tags and VERP numbers change with every message; the triplet must not."""
    bench.check(sender="prvs=1111111111=bob+a@remote.test")
    bench.clock.advance(300)
    assert bench.check(sender="prvs=2222222222=Bob+b@Remote.Test").action == DUNNO
    bench.check(sender="bounce-1-2@lists.test")
    bench.clock.advance(300)
    assert bench.check(sender="bounce-3-4@lists.test").action == DUNNO
    assert bench.check(recipient="Alice@HOSTED.test", sender=SENDER).action == DUNNO


def test_bounces_are_greylisted_with_an_empty_sender(bench: Bench) -> None:
    verdict = bench.check(sender="")
    assert deferred_for(verdict) == 300
    assert verdict.query is not None
    assert verdict.query.sender == ""
    bench.clock.advance(300)
    assert bench.check(sender="").action == DUNNO
    assert bench.check(sender="someone@remote.test").greylisted  # its own triplet


# -- concurrency and upkeep -----------------------------------------------------------------


@dataclass
class RacingState(MemoryState):
    """Another instance writes the same triplet between our read and our write."""

    races: int = 1
    raced: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def save_triplet(self, query: Query, old: Seen | None, new: Seen) -> bool:
        if self.races:
            self.races -= 1
            self.raced.append(query.key)
            other = Seen(new.first - 10, new.last, 0)  # the other one was first
            assert super().save_triplet(query, old, other)
        return super().save_triplet(query, old, new)


def test_a_concurrent_write_is_read_again_not_overwritten(make: Make) -> None:
    state = RacingState()
    bench = make(state)
    verdict = bench.check()
    assert state.raced  # our insert lost the race; we judged the other's record
    assert deferred_for(verdict) == 290
    assert bench.seen() == Seen(START - 10, START, 0)


def test_endless_conflicts_raise_store_unavailable(make: Make) -> None:
    bench = make(RacingState(races=100))
    with pytest.raises(StoreUnavailable, match="changed 5 times"):
        bench.check()


def test_purge_removes_expired_records_at_most_once_per_interval(make: Make) -> None:
    bench = make(auto_allow_after=1)
    assert bench.greylist.purge_due()
    pass_one(bench, 1)  # passed triplet, client record
    # an unpassed triplet (from another network: this one is auto-allowed by now)
    assert bench.check(sender="never-retried@remote.test", client_address="198.51.100.1").greylisted
    assert bench.greylist.purge() == 0
    assert not bench.greylist.purge_due()
    bench.clock.advance(60)
    assert bench.greylist.purge_due()
    bench.clock.advance(2 * DAY)
    assert bench.greylist.purge() == 1  # the unpassed one, after the retry window
    assert len(bench.state.triplets) == 1
    bench.clock.advance(35 * DAY)
    assert bench.greylist.purge() == 2  # passed triplet and client, after max age
    assert bench.state.triplets == {}
    assert bench.state.clients == {}


# -- configuration --------------------------------------------------------------------------


def test_defaults_are_postgreys() -> None:
    config = GreylistConfig()
    assert (config.delay, config.retry_window, config.max_age) == (300, 2 * DAY, 35 * DAY)
    assert (config.auto_allow_after, config.auto_allow_interval) == (5, 3600)
    assert (config.ipv4_prefix, config.ipv6_prefix) == (24, 64)
    assert config.allowed == {("recipient", "postmaster@"), ("recipient", "abuse@")}
    assert defer_action(7) == "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 7 seconds"


@pytest.mark.parametrize(
    ("kind", "value", "canonical"),
    [
        ("network", "192.0.2.7", "192.0.2.7/32"),
        ("network", " 192.0.2.7/24 ", "192.0.2.0/24"),
        ("network", "2001:DB8::1/64", "2001:db8::/64"),
        ("domain", ".Remote.TEST", "remote.test"),
        ("domain", "bücher.example", "xn--bcher-kva.example"),
        ("recipient", "Postmaster@", "postmaster@"),
        ("recipient", "Sales@Hosted.Test", "sales@hosted.test"),
        ("recipient", "@hosted.test", "hosted.test"),
        ("recipient", "hosted.test", "hosted.test"),
    ],
)
def test_allow_entries_are_normalised(kind: str, value: str, canonical: str) -> None:
    assert normalise_allow_entry(kind, value) == canonical


@pytest.mark.parametrize(
    ("config", "field_name"),
    [
        ({"allow_networks": ["192.0.2.300"]}, "greylist allow network"),
        ({"allow_domains": ["bad domain"]}, "greylist allow domain"),
        ({"allow_recipients": ["a b@x.test"]}, "greylist allow recipient"),
        ({"delay": -1}, "greylist delay"),
        ({"max_age": 0}, "greylist max_age"),
        ({"ipv4_prefix": 33}, "greylist ipv4_prefix"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, object], field_name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        GreylistConfig(**config)  # type: ignore[arg-type]
    assert refused.value.field == field_name
    with pytest.raises(InvalidInput, match="kind"):
        normalise_allow_entry("sender", "x@y.test")
