"""The server profile's MX under load while its daemons are killed: every message the MX
answered `250` lands in the recipient's Maildir.

As for the relay, the Postfix master has a test of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port
from tests.reliability.harness import (
    FAST_RETRY,
    RECIPIENT,
    Fault,
    Reckoning,
    Sender,
    add_recipient,
    assert_nothing_lost,
    ehlo_works,
    find,
    maildir,
    maildir_arrivals,
    maildir_files,
    storm,
)
from tests.server.mailserver import MailServer, Ports, running_server, server_env


@dataclass
class Setup:
    server: MailServer
    ports: Ports

    @property
    def root(self) -> Path:
        return self.server.root

    @property
    def maildir(self) -> Path:
        return maildir(self.root)

    def postfix_master(self) -> int | None:
        return find("master", root=self.root)

    def dovecot_master(self) -> int | None:
        return find("dovecot", root=self.root)

    def child_of(self, parent: Callable[[], int | None], comm: str, has: str = ""):
        def locate() -> int | None:
            pid = parent()
            return None if pid is None else find(comm, parent=pid, has=has)

        return locate

    def run(self, tag: str, scenario: str, faults: list[Fault]) -> Reckoning:
        sender = Sender(
            self.ports.smtp, "friend@remote.test", RECIPIENT, tag, helo="mail.remote.test"
        )
        result = storm(
            scenario,
            sender,
            faults,
            delivered=lambda: len(maildir_files(self.maildir)),
            arrivals=lambda: maildir_arrivals(self.maildir),
            spool=self.root / "var/spool/postfix",
            healthy=lambda: ehlo_works(self.ports.smtp),
            log=lambda: self.server.log,
        )
        assert_nothing_lost(result, sender, self.server.log)
        return result


@contextmanager
def mx(root: Path) -> Iterator[Setup]:
    add_recipient(root / "var/lib/mailstack/mailstack.db")
    ports = Ports()
    env = server_env(root, ports, RELAYHOST=f"[127.0.0.1]:{free_port()}", **FAST_RETRY)
    with running_server(root, env) as server:
        yield Setup(server, ports)


def test_mx_loses_nothing_when_smtpd_dovecot_lmtp_and_the_worker_are_killed(root: Path) -> None:
    with mx(root) as setup:
        postfix, dovecot = setup.postfix_master, setup.dovecot_master
        setup.run(
            "server-daemons",
            "server: an smtpd, Dovecot, Dovecot's lmtp, Postfix's lmtp, the worker killed "
            "in turn under load",
            [
                Fault("an smtpd (MX)", setup.child_of(postfix, "smtpd", "-t pass"), respawns=False),
                Fault("Dovecot's master", dovecot),
                Fault("Dovecot's lmtp", setup.child_of(dovecot, "lmtp"), respawns=False),
                Fault("Postfix's lmtp client", setup.child_of(postfix, "lmtp"), respawns=False),
                Fault("the worker", lambda: find(None, root=root, has="-m mailstack.worker")),
            ],
        )


def test_mx_loses_nothing_when_the_postfix_master_is_killed(root: Path) -> None:
    """As for the relay: the master dies while clients are in a session with an smtpd."""
    with mx(root) as setup:
        setup.run(
            "server-master",
            "server: the Postfix master killed under load",
            [Fault("the Postfix master", setup.postfix_master, held_session=True)],
        )
