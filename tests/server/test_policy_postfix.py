"""Greylisting behind a real Postfix, on SQLite and on PostgreSQL: the policy server on a
Unix socket, Postfix's port-25-like smtpd asking it after permit_mynetworks, a client
connecting from 127.0.0.2. Then the policy server alone, spoken to as Postfix would, and
the datastore's concurrency.

Every daemon (policy servers, Postfix instances, the sink) is stopped in its fixture's
teardown, also when a test fails. Waits poll for a condition or sleep past the greylisting
delay; no assertion depends on how fast anything runs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from milter_harness import PrivatePostfix
from policy_harness import HOSTED, LOCAL_CLIENT, attempt, greylisting_postfix
from server_harness import LoopThread, free_port, shared_tempdir, wait_for
from sqlalchemy import Engine, func, select, update
from tests.helpers import Sink, smtp_sink

from mailstack.policy import GreylistConfig, GreylistPolicy
from mailstack.policy.greylist import Greylist, Query, Seen, screen
from mailstack.policy.state import (
    SqlState,
    add_allow_entry,
    list_allow_entries,
    remove_allow_entry,
)
from mailstack.store import Conflict, InvalidInput, NotFound, create_engine_for, open_engine
from mailstack.store.models import GreylistClient, GreylistTriplet

DELAY = 2
SENDER = "bob@remote.test"
ALICE = f"alice@{HOSTED}"
GREYLISTED = "4.7.1"


class Clock:
    """A clock the test moves, shared by policy servers in other threads."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StartPolicy = Callable[..., GreylistPolicy]
StartPostfix = Callable[..., PrivatePostfix]


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """The datastore, migrated: SQLite or PostgreSQL (store_url is parametrised)."""
    opened = open_engine(store_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def start_policy(loop: LoopThread, engine: Engine) -> Iterator[StartPolicy]:
    """`start_policy(config, engine=..., **kwargs)`: a GreylistPolicy on a Unix socket."""
    started: list[GreylistPolicy] = []
    folders: list[Path] = []

    def start(config: GreylistConfig, *, on: Engine | None = None, **kwargs: Any) -> GreylistPolicy:
        folder = shared_tempdir("mailstack-policy-")
        folders.append(folder)
        policy = GreylistPolicy(on or engine, config, **kwargs)
        started.append(policy)
        loop.run(policy.start(path=folder / "greylist.sock", mode=0o666))
        return policy

    try:
        yield start
    finally:
        try:
            for policy in started:
                loop.run(policy.stop())
        finally:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def start_postfix(sink: Sink) -> Iterator[StartPostfix]:
    """`start_postfix(policy, name)`: a Postfix whose smtpd asks `policy`."""
    with contextlib.ExitStack() as stack:

        def start(policy: GreylistPolicy, name: str = "mx") -> PrivatePostfix:
            assert isinstance(policy.address, Path)
            return stack.enter_context(greylisting_postfix(policy.address, sink.port, name))

        yield start


def config(**changes: Any) -> GreylistConfig:
    return GreylistConfig(**{"delay": DELAY, **changes})


def triplets(engine: Engine) -> list[tuple[str, str, str, int]]:
    t = GreylistTriplet.__table__.c
    statement = select(t.client_network, t.sender, t.recipient, t.passed)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement.order_by(t.sender))]  # type: ignore[misc]


def sleep_past(started: float, seconds: float) -> None:
    """Let the real clock pass `seconds` after `started` (plus a margin for whole seconds)."""
    time.sleep(max(0.0, started + seconds + 1.1 - time.time()))


def assert_greylisted(reply: tuple[int, str], seconds: int | None = None) -> None:
    code, text = reply
    assert code == 450, reply
    assert text.startswith(f"{GREYLISTED} "), reply
    assert f"<{ALICE}>: Recipient address rejected: Greylisted, please try again in" in text
    if seconds is not None:
        assert text.endswith(f"in {seconds} seconds"), reply


# -- behind Postfix -------------------------------------------------------------------------


def test_first_attempt_is_greylisted_and_a_retry_after_the_delay_passes(
    start_policy: StartPolicy, start_postfix: StartPostfix, engine: Engine, sink: Sink
) -> None:
    policy = start_policy(config())
    postfix = start_postfix(policy)
    first = time.time()
    assert_greylisted(attempt(postfix, SENDER, ALICE, subject="early"), DELAY)
    assert triplets(engine) == [("127.0.0.0/24", SENDER, ALICE, 0)]
    sleep_past(first, DELAY)
    code, text = attempt(postfix, SENDER, ALICE, subject="retry")
    assert (code, text.startswith("2.0.0 Ok: queued as ")) == (250, True)
    # a BATV tag (new with each message) and the case do not make a new triplet
    assert attempt(postfix, "prvs=1234567890=Bob@remote.test", ALICE, subject="batv")[0] == 250
    sink.wait_messages(2)
    assert sorted(str(m["Subject"]) for _, m in sink.messages) == ["batv", "retry"]
    assert triplets(engine) == [("127.0.0.0/24", SENDER, ALICE, 2)]
    assert "450 4.7.1" in postfix.log()


def test_client_in_mynetworks_is_never_greylisted(
    start_policy: StartPolicy, start_postfix: StartPostfix, engine: Engine, sink: Sink
) -> None:
    postfix = start_postfix(start_policy(config()))
    code, _ = attempt(postfix, SENDER, ALICE, client=LOCAL_CLIENT, subject="local")
    assert code == 250
    sink.wait_messages(1)
    assert triplets(engine) == []  # Postfix did not even ask


def test_client_network_is_auto_allowed_after_n_successful_retries(
    start_policy: StartPolicy, start_postfix: StartPostfix, engine: Engine
) -> None:
    clock = Clock()
    policy = start_policy(config(auto_allow_after=2, auto_allow_interval=0), clock=clock)
    postfix = start_postfix(policy)
    for number in (1, 2):
        sender = f"sender{number}@remote.test"
        assert_greylisted(attempt(postfix, sender, ALICE), DELAY)
        clock.advance(DELAY)
        assert attempt(postfix, sender, ALICE)[0] == 250
    assert attempt(postfix, "newcomer@remote.test", ALICE)[0] == 250
    c = GreylistClient.__table__.c
    with engine.connect() as conn:
        assert conn.execute(select(c.network, c.successes)).all() == [("127.0.0.0/24", 3)]
    assert len(triplets(engine)) == 2  # the auto-allowed newcomer left no triplet


def test_allowed_network_passes_at_once(
    start_policy: StartPolicy, start_postfix: StartPostfix, engine: Engine
) -> None:
    """From the settings, or from the datastore's allow list (shared, changed live)."""
    configured = start_postfix(start_policy(config(allow_networks=["127.0.0.2"])), "a")
    assert attempt(configured, SENDER, ALICE)[0] == 250
    postfix = start_postfix(start_policy(config()), "b")
    add_allow_entry(engine, "network", "127.0.0.0/30", comment="partner")
    assert attempt(postfix, SENDER, ALICE)[0] == 250
    remove_allow_entry(engine, "network", "127.0.0.0/30")
    assert_greylisted(attempt(postfix, SENDER, ALICE), DELAY)
    add_allow_entry(engine, "recipient", ALICE)
    assert attempt(postfix, "other@remote.test", ALICE)[0] == 250
    assert triplets(engine) == [("127.0.0.0/24", SENDER, ALICE, 0)]


def test_two_instances_on_one_datastore_share_the_state(
    start_policy: StartPolicy, start_postfix: StartPostfix, engine: Engine, store_url: str
) -> None:
    """Two Postfix instances, each with its own policy server and engine (as two replicas
    would be): a triplet first seen through A passes through B once the delay is over."""
    other = create_engine_for(store_url)
    try:
        postfix_a = start_postfix(start_policy(config()), "a")
        postfix_b = start_postfix(start_policy(config(), on=other), "b")
        first = time.time()
        assert_greylisted(attempt(postfix_a, SENDER, ALICE), DELAY)
        assert_greylisted(attempt(postfix_b, "carol@remote.test", ALICE), DELAY)
        sleep_past(first, DELAY)
        # each passes through the instance that never saw it (new there would be 450)
        assert attempt(postfix_b, SENDER, ALICE)[0] == 250
        assert attempt(postfix_a, "carol@remote.test", ALICE)[0] == 250
        assert [row[3] for row in triplets(engine)] == [1, 1]
    finally:
        other.dispose()


def test_store_down_lets_mail_through_with_a_warning(
    start_policy: StartPolicy,
    start_postfix: StartPostfix,
    engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mailstack.policy")
    policy = start_policy(config())
    postfix = start_postfix(policy)
    if engine.dialect.name == "sqlite":
        dead = create_engine_for(tmp_path / "missing-folder" / "mailstack.db")
    else:
        dead = create_engine_for(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")
    healthy, policy.greylist.state = policy.greylist.state, SqlState(dead)
    try:
        code, _ = attempt(postfix, SENDER, ALICE, subject="store down")
        assert code == 250
    finally:
        policy.greylist.state = healthy
        dead.dispose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("store unavailable, not greylisting (DUNNO)" in w for w in warnings), warnings
    assert_greylisted(attempt(postfix, "later@remote.test", ALICE))  # greylisting is back


def test_slow_store_lets_mail_through_after_the_timeout(
    start_policy: StartPolicy, start_postfix: StartPostfix, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailstack.policy")
    policy = start_policy(config(), timeout=0.5)
    postfix = start_postfix(policy)
    released = threading.Event()

    class Stuck(SqlState):
        def allow_listed(self, candidates: Any) -> bool:
            released.wait(30)
            return False

    healthy = policy.greylist.state
    policy.greylist.state = Stuck(policy.state.engine)
    try:
        assert attempt(postfix, SENDER, ALICE)[0] == 250
    finally:
        released.set()
        policy.greylist.state = healthy
    assert any("did not answer within 0.5s" in r.getMessage() for r in caplog.records)


def test_policy_server_down_lets_mail_through(
    start_policy: StartPolicy, start_postfix: StartPostfix, loop: LoopThread
) -> None:
    """`default_action=DUNNO` on check_policy_service: no worker, no greylisting."""
    policy = start_policy(config())
    postfix = start_postfix(policy)
    assert_greylisted(attempt(postfix, SENDER, ALICE))
    loop.run(policy.stop())
    assert attempt(postfix, "other@remote.test", ALICE)[0] == 250


# -- the policy server alone ----------------------------------------------------------------

REQUEST = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n"
    "client_name=unknown\nsender={sender}\nrecipient=alice@hosted.test\n\n"
)


def converse(policy: GreylistPolicy, data: bytes) -> bytes:
    """Send `data`, read until the server closes or stays quiet; what it answered."""
    assert isinstance(policy.address, Path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(policy.address))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


def test_requests_on_one_connection_are_answered_in_order(start_policy: StartPolicy) -> None:
    policy = start_policy(config(allow_recipients=["postmaster@"]))
    data = (
        REQUEST.format(sender="a@remote.test")
        + REQUEST.format(sender="a@remote.test").replace("alice@", "postmaster@")
        + "request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=alice\n"
        "client_address=192.0.2.7\nrecipient=x@hosted.test\n\n" + "request=something_else\n\n"
    )
    replies = converse(policy, data.encode()).decode().split("\n\n")
    assert replies == [
        "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 2 seconds",
        "action=DUNNO",
        "action=DUNNO",
        "action=DUNNO",
        "",
    ]


def test_garbage_closes_the_connection_without_an_answer(
    start_policy: StartPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailstack.policy")
    policy = start_policy(config())
    good = REQUEST.format(sender="a@remote.test").encode()
    assert converse(policy, good + b"this is not a policy request\n" + good) == (
        b"action=DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 2 seconds\n\n"
    )
    assert converse(policy, b"sender=" + b"x" * 10_000) == b""
    messages = [r.getMessage() for r in caplog.records]
    assert any("closing connection after bad request: not a name=value" in m for m in messages)
    assert any("line longer than 4096 bytes" in m for m in messages)


def test_expired_records_are_purged_in_the_background(
    start_policy: StartPolicy, engine: Engine
) -> None:
    clock = Clock()
    policy = start_policy(config(purge_interval=60), clock=clock)
    assert converse(policy, REQUEST.format(sender="old@remote.test").encode())
    assert len(triplets(engine)) == 1
    clock.advance(2 * 86400 + 61)  # never retried, and the retry window is over
    new = REQUEST.format(sender="new@remote.test").encode()

    def purged() -> bool:
        # A purge starts after a request is answered, never while one still runs: the one
        # the first request started may still be deleting when the next request comes, so
        # mail keeps coming here as it would on a live server.
        assert converse(policy, new)
        return [r[1] for r in triplets(engine)] == ["new@remote.test"]

    wait_for(purged, 30, "the purge")


# -- the datastore --------------------------------------------------------------------------


def test_concurrent_first_attempts_from_two_instances_agree(engine: Engine, store_url: str) -> None:
    """Many threads over two engines judge one new triplet at once: every one is deferred,
    one row exists, nothing fails; then many at once after the delay all pass."""
    other = create_engine_for(store_url)
    clock = Clock()
    greylists = [Greylist(SqlState(e), config(), clock=clock) for e in (engine, other)]
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "sender": SENDER,
        "recipient": ALICE,
    }
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = [pool.submit(greylists[i % 2].check, attributes) for i in range(32)]
            verdicts = [job.result(timeout=60) for job in jobs]
            assert all(v.greylisted for v in verdicts)
            assert triplets(engine) == [("192.0.2.0/24", SENDER, ALICE, 0)]
            clock.advance(DELAY)
            jobs = [pool.submit(greylists[i % 2].check, attributes) for i in range(32)]
            assert not any(job.result(timeout=60).greylisted for job in jobs)
        assert triplets(engine) == [("192.0.2.0/24", SENDER, ALICE, 32)]
    finally:
        for greylist in greylists:
            assert isinstance(greylist.state, SqlState)
            greylist.state.close()
        other.dispose()


def test_compare_and_set_writes(engine: Engine) -> None:
    state = SqlState(engine)
    try:
        query = screen(
            {"client_address": "192.0.2.7", "sender": SENDER, "recipient": ALICE}, config()
        )
        assert isinstance(query, Query)
        assert state.triplet(query) is None
        assert state.save_triplet(query, None, Seen(100, 100, 0))
        assert not state.save_triplet(query, None, Seen(200, 200, 0))  # exists already
        assert not state.save_triplet(query, Seen(100, 101, 0), Seen(100, 300, 1))  # stale
        assert state.save_triplet(query, Seen(100, 100, 0), Seen(100, 300, 1))
        assert state.triplet(query) == Seen(100, 300, 1)
        t = GreylistTriplet.__table__.c
        with engine.begin() as conn:
            conn.execute(update(GreylistTriplet).values(last_seen=t.last_seen + 1))
            assert conn.execute(select(func.count()).select_from(GreylistTriplet)).scalar() == 1
        assert not state.save_triplet(query, Seen(100, 300, 1), Seen(100, 400, 2))
        # further passes: an atomic increment; last seen never goes back
        assert state.touch_triplet(query, 350, 0)
        assert state.touch_triplet(query, 340, 0)
        assert state.triplet(query) == Seen(100, 350, 3)
        assert not state.touch_triplet(query, 999, 351)  # last seen before `oldest`: expired
        assert state.save_triplet(query, Seen(100, 350, 3), Seen(999, 999, 0))
        assert not state.touch_triplet(query, 1000, 0)  # not passed (any more)
    finally:
        state.close()


def test_allow_list_entries(engine: Engine) -> None:
    entry = add_allow_entry(engine, "network", " 198.51.100.7/24 ", comment="partner")
    assert (entry.kind, entry.value) == ("network", "198.51.100.0/24")
    add_allow_entry(engine, "domain", "Mail.Example.NET")
    with pytest.raises(Conflict):
        add_allow_entry(engine, "network", "198.51.100.0/24")
    with pytest.raises(InvalidInput):
        add_allow_entry(engine, "sender", "x@example.net")
    assert [(e.kind, e.value, e.comment) for e in list_allow_entries(engine)] == [
        ("domain", "mail.example.net", None),
        ("network", "198.51.100.0/24", "partner"),
    ]
    remove_allow_entry(engine, "domain", "mail.example.net")
    with pytest.raises(NotFound):
        remove_allow_entry(engine, "domain", "mail.example.net")
    assert list_allow_entries(engine)[0].created_at.tzinfo is not None
