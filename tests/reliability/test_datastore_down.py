"""PostgreSQL dies under the server's MX while mail flows: as long as it is down the MX
answers 4xx (a sender retries), never 5xx (a sender bounces); once it is back mail flows
again, and every message answered `250` lands in the Maildir."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import free_port, wait_for
from tests.reliability.conftest import Postgres
from tests.reliability.harness import (
    FAST_RETRY,
    RECIPIENT,
    Sender,
    add_recipient,
    assert_nothing_lost,
    drain,
    maildir,
    maildir_arrivals,
    maildir_files,
    reckon,
    sending,
    temporaries_since,
    temporary,
    wait_showing,
)
from tests.server.mailserver import Ports, running_server, server_env


def test_mx_answers_4xx_while_postgresql_is_down_and_loses_nothing(
    root: Path, postgres: Postgres
) -> None:
    url = postgres.url()
    add_recipient(url)
    ports = Ports()
    env = server_env(
        root,
        ports,
        MAILSTACK_DATABASE_URL=url,
        RELAYHOST=f"[127.0.0.1]:{free_port()}",
        **FAST_RETRY,
    )
    mailbox = maildir(root)
    with running_server(root, env) as server:
        sender = Sender(
            ports.smtp, "friend@remote.test", RECIPIENT, "datastore", helo="mx.remote.test"
        )
        with sending(sender):
            wait_for(lambda: len(maildir_files(mailbox)) >= 20, 60, "mail to flow")
            postgres.kill()
            down = time.monotonic()
            wait_showing(
                lambda: temporaries_since(sender, down) >= 1,
                30,
                "the MX to answer 4xx while PostgreSQL is down",
                lambda: server.log,
            )
            time.sleep(4)  # more traffic against the dead datastore
            restarting = time.monotonic()
            postgres.start()
            started = time.monotonic()
            accepted, arrived = sender.accepted_count, len(maildir_files(mailbox))
            wait_showing(
                lambda: (
                    sender.accepted_count >= accepted + 20
                    and len(maildir_files(mailbox)) >= arrived + 20
                ),
                60,
                "mail to flow again after PostgreSQL came back",
                lambda: server.log,
            )
            time.sleep(1)
            sender.stop()
        drain(
            lambda: set(sender.accepted),
            lambda: maildir_arrivals(mailbox),
            root / "var/spool/postfix",
        )
        outage = sender.codes_between(down, restarting)
        after = sender.outcomes_since(started)
        first = min((t for t in sender.accepted.values() if t > started), default=started)
        result = reckon(
            "server: PostgreSQL killed (pg_ctl -m immediate) and started again under load",
            sender,
            maildir_arrivals(mailbox),
            notes=[
                f"outage {restarting - down:.1f} s; attempts wholly within it: "
                + ", ".join(f"{k}={v}" for k, v in sorted(outage.items(), key=str)),
                f"first 250 {first - started:.1f} s after PostgreSQL was back; attempts "
                "since it was back: "
                + ", ".join(f"{k}={v}" for k, v in sorted(after.items(), key=str)),
            ],
        )
        log = server.log
    assert_nothing_lost(result, sender, log)
    assert any(temporary(code) for code in outage), outage
    assert all(temporary(code) or code == "dropped" for code in outage), (
        f"while the datastore was down the MX answered {dict(outage)}"
    )
