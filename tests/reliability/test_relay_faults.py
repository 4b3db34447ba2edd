"""The relay under load while its daemons are killed: every message a client got `250` for
reaches the relay host, signed by OpenDKIM.

The Postfix master has a test of its own, so that what happens to the other daemons is
known whatever happens after the master's death. (The worker runs in the relay only with
XOAUTH2; its death under load is covered by the server profile's test.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import Relay, Sink, free_port, running_relay, smtp_sink
from tests.reliability.harness import (
    Fault,
    Reckoning,
    Sender,
    assert_nothing_lost,
    ehlo_works,
    find,
    relay_env,
    sink_arrivals,
    storm,
)


@dataclass
class Setup:
    relay: Relay
    sink: Sink
    port: int

    def master(self) -> int | None:
        return find("master", root=self.relay.root)

    def postfix_child(self, comm: str, has: str = "") -> Callable[[], int | None]:
        def locate() -> int | None:
            parent = self.master()
            return None if parent is None else find(comm, parent=parent, has=has)

        return locate

    def run(self, tag: str, scenario: str, faults: list[Fault]) -> Reckoning:
        sender = Sender(self.port, "app@example.com", "someone@example.net", tag)
        result = storm(
            scenario,
            sender,
            faults,
            delivered=lambda: len(self.sink.messages),
            arrivals=lambda: sink_arrivals(self.sink.messages),
            spool=self.relay.root / "var/spool/postfix",
            healthy=lambda: ehlo_works(self.port),
            log=lambda: self.relay.log,
        )
        unsigned = [
            m["Message-ID"]
            for _, m in list(self.sink.messages)
            if m["Message-ID"] in result.tried and "DKIM-Signature" not in m
        ]
        print(f"   delivered without a DKIM signature: {len(unsigned)}")
        assert_nothing_lost(result, sender, self.relay.log)
        assert not unsigned, f"left the relay unsigned: {unsigned[:5]}"
        return result


@contextmanager
def relay_with_sink(root: Path) -> Iterator[Setup]:
    port = free_port()
    with smtp_sink() as sink, running_relay(root, relay_env(root, port, sink.port)) as relay:
        yield Setup(relay, sink, port)


def test_relay_loses_nothing_when_qmgr_smtpd_and_opendkim_are_killed(root: Path) -> None:
    with relay_with_sink(root) as setup:
        setup.run(
            "relay-daemons",
            "relay: qmgr, an smtpd, OpenDKIM killed in turn under load",
            [
                Fault("qmgr", setup.postfix_child("qmgr")),
                Fault(
                    "an smtpd", setup.postfix_child("smtpd", has=f":{setup.port}"), respawns=False
                ),
                Fault("OpenDKIM", lambda: find("opendkim", root=root)),
            ],
        )


def test_relay_loses_nothing_when_the_postfix_master_is_killed(root: Path) -> None:
    """A crashed master must be noticed and Postfix started again while clients are in
    the middle of a session (the steady sender's, and a second one held across the kill):
    the supervisor has to restart Postfix, and stop the old master's orphans, without
    waiting for those sessions to end."""
    with relay_with_sink(root) as setup:
        setup.run(
            "relay-master",
            "relay: the Postfix master killed under load",
            [Fault("the Postfix master", setup.master, held_session=True)],
        )
