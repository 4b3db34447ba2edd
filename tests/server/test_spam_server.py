"""Spam filtering in the running server profile: `mailstack run --profile server` with
MAILSTACK_SPAM on starts Redis and rspamd, port 25's smtpd asks rspamd about every message,
and the global Sieve step files what rspamd marks as spam into the user's Junk folder.

rspamd's test patterns (MAILSTACK_SPAM_TEST_PATTERNS) decide the verdict, so no real spam and
no DNS are needed (DNS lists and host checks off, the resolver on a loopback port where
nothing answers). The regex cache is shared with the other rspamd tests of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from mailserver import (
    PASSWORD,
    MailServer,
    Ports,
    imap_session,
    message,
    server_env,
    subjects,
    wait_for_subject,
)
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers import MAILSTACK, nxdomain_resolver, private_root, smtp_outcome, wait_for

from mailstack.paths import Paths
from mailstack.render.rspamd import SpamPaths, spam_paths
from mailstack.runtime.probes import unix_socket_accepts
from mailstack.runtime.spam import rspamd_processes
from mailstack.store import MailStore

pytestmark = pytest.mark.daemons

REJECT_PATTERN = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEADER_PATTERN = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SENDER = "friend@remote.test"
#: An internet address the MX sees (XCLIENT): rspamd checks SPF, DKIM and DMARC only for
#: clients outside loopback and private networks.
CLIENT_ADDRESS = "203.0.113.25"
WORK_FILTER = """require ["fileinto", "mailbox"];
if header :contains "subject" "[work]" {
  fileinto :create "Work";
}
"""
#: A cold rspamd start compiles its regex cache first.
START_TIMEOUT = 240


def spam_env(root: Path, ports: Ports, cache: Path, resolver: str, **extra: str) -> dict[str, str]:
    return server_env(
        root,
        ports,
        MAILSTACK_SPAM="on",
        MAILSTACK_SPAM_TEST_PATTERNS="1",
        MAILSTACK_SPAM_RBL="",
        MAILSTACK_SPAM_HOST_CHECKS="off",
        MAILSTACK_SPAM_NAMESERVERS=resolver,
        MAILSTACK_SPAM_CACHE_DIR=str(cache),
        POSTFIX_smtpd_authorized_xclient_hosts="127.0.0.0/8",
        # the test clients stand for servers on the internet: Postfix adds no missing Date
        # or Message-ID to their mail (it does for local clients), rspamd sees it as sent
        POSTFIX_local_header_rewrite_clients="check_address_map inline:{192.0.2.1=OK}",
        MAILSTACK_GREYLIST="off",  # tested on its own; here every message goes straight in
        MAILSTACK_SPAM_BAYES_MIN_LEARNS="2",
        MAILSTACK_METRICS_LISTEN=f"127.0.0.1:{ports.metrics}",
        **extra,
    )


@dataclass
class SpamServer:
    server: MailServer
    ports: Ports
    store: MailStore

    @property
    def spam_paths(self) -> SpamPaths:
        return spam_paths(Paths(self.server.root))

    def rspamd_main(self) -> int:
        """rspamd's main process: the leader of its own process group."""
        found = [p for p in rspamd_processes(self.spam_paths) if os.getpgid(p) == p]
        assert len(found) == 1, found
        return found[0]


@contextlib.contextmanager
def spam_server(cache: Path, **extra: str) -> Iterator[SpamServer]:
    with private_root() as root, nxdomain_resolver() as resolver:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        server = None
        try:
            store.add_domain("example.com")
            for user in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "henry"):
                store.add_user(f"{user}@example.com", PASSWORD)
            ports = Ports()
            server = MailServer(root, spam_env(root, ports, cache, resolver, **extra))
            server.start(timeout=START_TIMEOUT)
            yield SpamServer(server, ports, store)
        finally:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
                server.cleanup()
            store.close()


@pytest.fixture(scope="module")
def world(rspamd_cache: Path) -> Iterator[SpamServer]:
    with spam_server(rspamd_cache) as running:
        yield running


def remote_client(world: SpamServer) -> smtplib.SMTP:
    """An SMTP session the MX (and rspamd) sees as coming from CLIENT_ADDRESS."""
    client = smtplib.SMTP("127.0.0.1", world.ports.smtp, timeout=60)
    client.ehlo("mail.remote.test")
    code, text = client.docmd("XCLIENT", f"ADDR={CLIENT_ADDRESS} NAME=mail.remote.test")
    assert code == 220, (code, text)
    client.ehlo_resp = None
    client.ehlo("mail.remote.test")
    return client


def send(world: SpamServer, recipient: str, subject: str, body: str = "Lunch?") -> tuple[int, str]:
    """Hand a message to the MX as a server on the internet would; (250, "") when taken."""
    with remote_client(world) as client:
        return smtp_outcome(client, SENDER, recipient, message(SENDER, recipient, subject, body))


def fetch(world: SpamServer, user: str, folder: str, subject: str) -> Message:
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as client:
        client.select(f'"{folder}"', readonly=True)
        _, found = client.search(None, "SUBJECT", f'"{subject}"')
        numbers = found[0].split()
        assert numbers, f"{subject!r} not in {user}/{folder}"
        _, parts = client.fetch(numbers[-1], "(BODY.PEEK[])")
        raw = parts[0][1] if isinstance(parts[0], tuple) else b""
    return message_from_bytes(raw)


def folder_subjects(world: SpamServer, user: str, folder: str) -> list[str]:
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as client:
        status, _ = client.select(f'"{folder}"', readonly=True)
        return subjects(client, folder) if status == "OK" else []


# -- verdicts -------------------------------------------------------------------------------------


def test_clean_mail_reaches_the_inbox_with_authentication_results(world: SpamServer) -> None:
    assert send(world, "alice@example.com", "lunch on friday") == (250, "")
    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "lunch on friday")

    msg = fetch(world, "alice@example.com", "INBOX", "lunch on friday")
    results = str(msg["Authentication-Results"])
    assert results.startswith("mx.example.com;"), results
    for method in ("spf=", "dkim=", "dmarc="):
        assert method in results, results
    assert str(msg["X-Spam-Status"]).startswith("No, score="), msg["X-Spam-Status"]
    assert msg["X-Spam"] is None


def test_spam_is_refused_at_data_and_never_delivered(world: SpamServer) -> None:
    code, text = send(world, "bob@example.com", "buy now", f"Buy now.\r\n{REJECT_PATTERN}")

    assert (code, text.split()[0]) == (554, "5.7.1"), (code, text)
    # mail sent after it arrives; the refused one was never queued, so cannot come later
    assert send(world, "bob@example.com", "after the refusal") == (250, "")
    wait_for_subject(world.server, world.ports.imap, "bob@example.com", "after the refusal")
    assert "buy now" not in folder_subjects(world, "bob@example.com", "INBOX")
    assert "buy now" not in folder_subjects(world, "bob@example.com", "Junk")


def test_probable_spam_is_filed_into_junk_not_the_inbox(world: SpamServer) -> None:
    assert send(world, "alice@example.com", "cheap pills", f"Pills.\r\n{HEADER_PATTERN}") == (
        250,
        "",
    )

    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "cheap pills", "Junk")
    assert "cheap pills" not in folder_subjects(world, "alice@example.com", "INBOX")
    msg = fetch(world, "alice@example.com", "Junk", "cheap pills")
    assert msg.get_all("X-Spam") == ["Yes"]
    # Junk is the folder mail clients show as junk (special-use), and subscribed
    with imap_session(world.server, world.ports.imap, "alice@example.com", PASSWORD) as client:
        _, listing = client.list('""', "Junk")
        _, subscribed = client.lsub('""', "Junk")
    assert b"\\Junk" in listing[0], listing
    assert subscribed[0] is not None, subscribed
    assert b"Junk" in subscribed[0], subscribed


def test_users_own_rules_run_on_clean_mail_but_not_on_spam(world: SpamServer) -> None:
    user = "carol@example.com"
    world.store.put_script(user, "work", WORK_FILTER, activate=True)

    assert send(world, user, "[work] report") == (250, "")
    assert send(world, user, "[work] pills", f"Pills.\r\n{HEADER_PATTERN}") == (250, "")

    wait_for_subject(world.server, world.ports.imap, user, "[work] report", "Work")
    wait_for_subject(world.server, world.ports.imap, user, "[work] pills", "Junk")
    assert "[work] pills" not in folder_subjects(world, user, "Work")
    assert "[work] pills" not in folder_subjects(world, user, "INBOX")


def test_a_sender_cannot_file_its_mail_out_of_junk_with_its_own_header(
    world: SpamServer,
) -> None:
    forged = f"Pills.\r\n{HEADER_PATTERN}"
    data = message(SENDER, "bob@example.com", "forged no", forged).replace(
        b"Subject:", b"X-Spam: No\r\nSubject:", 1
    )
    with remote_client(world) as client:
        assert smtp_outcome(client, SENDER, "bob@example.com", data) == (250, "")

    wait_for_subject(world.server, world.ports.imap, "bob@example.com", "forged no", "Junk")
    assert fetch(world, "bob@example.com", "Junk", "forged no").get_all("X-Spam") == ["Yes"]


# -- per-user settings -----------------------------------------------------------------------


def spam_set(world: SpamServer, user: str, *options: str) -> dict[str, object]:
    env = {**os.environ, "MAILSTACK_ROOT": str(world.server.root)}
    result = subprocess.run(
        [*MAILSTACK, "spam", "set", user, *options, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


def bare_message(recipient: str, subject: str) -> bytes:
    """No Date and no Message-ID: rspamd scores it about 3.5 (MISSING_DATE, MISSING_MID)."""
    return (
        f"From: {SENDER}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\n"
        "Are we still on for the trip next week? Let me know.\r\n"
    ).encode()


def score(msg: Message) -> float:
    return float(str(msg["X-Spam-Status"]).split("score=")[1].split()[0].rstrip(","))


def test_a_user_with_the_filter_off_gets_spam_in_the_inbox(world: SpamServer) -> None:
    frank = "frank@example.com"
    assert spam_set(world, frank, "--off") == {"user": frank, "threshold": None, "filter": False}

    assert send(world, frank, "pills for frank", f"Pills.\r\n{HEADER_PATTERN}") == (250, "")
    wait_for_subject(world.server, world.ports.imap, frank, "pills for frank")
    assert fetch(world, frank, "INBOX", "pills for frank").get_all("X-Spam") == ["Yes"]
    assert "pills for frank" not in folder_subjects(world, frank, "Junk")

    assert spam_set(world, frank, "--on")["filter"] is True  # and back, at the next message
    assert send(world, frank, "pills again", f"Pills.\r\n{HEADER_PATTERN}") == (250, "")
    wait_for_subject(world.server, world.ports.imap, frank, "pills again", "Junk")


def test_a_users_own_threshold_decides_what_is_junk_for_them(world: SpamServer) -> None:
    grace, henry = "grace@example.com", "henry@example.com"
    assert spam_set(world, grace, "--threshold", "3")["threshold"] == 3

    with remote_client(world) as client:
        assert client.sendmail(SENDER, [grace, henry], bare_message(grace, "no date")) == {}
    # below the server's junk score (henry's Inbox), above grace's own threshold (her Junk)
    wait_for_subject(world.server, world.ports.imap, henry, "no date")
    wait_for_subject(world.server, world.ports.imap, grace, "no date", "Junk")
    assert 3 <= score(fetch(world, grace, "Junk", "no date")) < 6

    assert spam_set(world, grace, "--threshold", "20")["threshold"] == 20
    with remote_client(world) as client:
        bare = bare_message(grace, "bare").replace(b"From: " + SENDER.encode() + b"\r\n", b"")
        assert client.sendmail(SENDER, [grace, henry], bare) == {}
    wait_for_subject(world.server, world.ports.imap, henry, "bare", "Junk")  # over 6: junk
    wait_for_subject(world.server, world.ports.imap, grace, "bare")  # under her 20: Inbox
    assert 6 <= score(fetch(world, grace, "INBOX", "bare")) < 20

    assert spam_set(world, grace, "--server-threshold")["threshold"] is None


def test_spam_settings_for_an_unknown_user_or_a_bad_threshold_are_refused(
    world: SpamServer,
) -> None:
    env = {**os.environ, "MAILSTACK_ROOT": str(world.server.root)}
    for args, code, text in [
        (["nobody@example.com", "--off"], 1, "user nobody@example.com does not exist"),
        (["grace@example.com", "--threshold", "-1"], 2, "threshold: must be 0 to 1000"),
        (["grace@example.com", "--off", "--on"], 2, "give --off or --on, not both"),
    ]:
        result = subprocess.run(
            [*MAILSTACK, "spam", "set", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert (result.returncode, text in result.stderr) == (code, True), result.stderr


# -- per-user training -----------------------------------------------------------------------

#: Texts long enough for rspamd's Bayes (it learns nothing from fewer than 11 tokens).
PHARMACY = (
    "Buy cheap viagra pills online now, discount pharmacy offer number {n}, best price "
    "guaranteed, fast discreet delivery worldwide, no prescription needed, click here today"
)
MEETING = (
    "Hi, the quarterly report review meeting {n} moved to Thursday afternoon in room four; "
    "please bring the budget figures and the draft slides for the planning session. Thanks"
)


def spam_stats(world: SpamServer, user: str) -> dict[str, object]:
    """`mailstack spam stats USER --json`, as an administrator runs it on the server."""
    result = subprocess.run(
        [*MAILSTACK, "spam", "stats", user, "--json", "--root", str(world.server.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


def train(world: SpamServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILSTACK_ROOT": str(world.server.root)}
    return subprocess.run(
        [*MAILSTACK, "spam", "train", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def move(world: SpamServer, user: str, subject: str, source: str, target: str) -> None:
    """Move one message as a mail client does (IMAP MOVE)."""
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as client:
        client.select(f'"{source}"')
        _, found = client.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        uids = found[0].split()
        assert len(uids) == 1, (subject, source, uids)
        status, answer = client.uid("MOVE", uids[0].decode(), f'"{target}"')
        assert status == "OK", answer


def wait_stats(world: SpamServer, user: str, spam: int, ham: int) -> None:
    def reached() -> bool:
        found = spam_stats(world, user)
        return (found["spam"], found["ham"]) == (spam, ham)

    wait_for(
        reached, 30, f"{user}'s statistics at spam {spam}, ham {ham}: {spam_stats(world, user)}"
    )


def test_moving_mail_into_and_out_of_junk_trains_only_that_user(world: SpamServer) -> None:
    alice, bob = "alice@example.com", "bob@example.com"
    for n, subject in enumerate(("train one", "train two", "train three")):
        assert send(world, alice, subject, PHARMACY.format(n=n)) == (250, "")
        wait_for_subject(world.server, world.ports.imap, alice, subject)
    before = spam_stats(world, alice)
    spam, ham = int(str(before["spam"])), int(str(before["ham"]))
    bob_before = spam_stats(world, bob)
    assert before["active"] is False  # nothing learned yet for alice

    move(world, alice, "train one", "INBOX", "Junk")  # into Junk: spam, for alice
    wait_stats(world, alice, spam + 1, ham)

    move(world, alice, "train one", "Junk", "INBOX")  # back out: ham (rspamd unlearns the spam)
    wait_stats(world, alice, spam, ham + 1)

    move(world, alice, "train two", "INBOX", "Junk")
    wait_stats(world, alice, spam + 1, ham + 1)
    move(world, alice, "train two", "Junk", "Trash")  # deleting spam teaches nothing
    # the learner works in order: once a later move is learned, the Trash move was handled
    move(world, alice, "train three", "INBOX", "Junk")
    wait_stats(world, alice, spam + 2, ham + 1)

    assert spam_stats(world, bob) == bob_before  # nobody else's statistics changed


@dataclass
class Training:
    user: str
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def trained(world: SpamServer) -> Training:
    """dave's Inbox holds three meeting notes, his Junk three pharmacy offers he moved there
    himself (learned as spam on the move); then the training pass runs twice."""
    dave = "dave@example.com"
    for n in range(3):
        assert send(world, dave, f"meeting {n}", MEETING.format(n=n)) == (250, "")
        assert send(world, dave, f"pharmacy {n}", PHARMACY.format(n=n)) == (250, "")
    for n in range(3):
        wait_for_subject(world.server, world.ports.imap, dave, f"meeting {n}")
        wait_for_subject(world.server, world.ports.imap, dave, f"pharmacy {n}")
        move(world, dave, f"pharmacy {n}", "INBOX", "Junk")
    wait_stats(world, dave, 3, 0)
    return Training(dave, train(world, "--user", dave), train(world, "--user", dave))


def test_the_training_pass_learns_inbox_and_junk_once(world: SpamServer, trained: Training) -> None:
    assert trained.first.returncode == 0, trained.first.stderr
    [counts] = json.loads(trained.first.stdout)
    assert counts["user"] == trained.user
    # the Inbox is new to rspamd; the Junk was learned when it was moved there
    assert (counts["ham_learned"], counts["spam_learned"], counts["spam_already"]) == (3, 0, 3)

    assert trained.second.returncode == 0, trained.second.stderr
    [again] = json.loads(trained.second.stdout)
    assert (again["spam_learned"], again["ham_learned"]) == (0, 0), again
    assert (again["spam_already"], again["ham_already"]) == (3, 3), again
    assert spam_stats(world, trained.user) == {
        "user": trained.user, "spam": 3, "ham": 3, "min_learns": 2, "active": True
    }  # fmt: skip


def test_each_recipient_is_classified_with_their_own_statistics(
    world: SpamServer, trained: Training
) -> None:
    """One message to a trained and an untrained user: only the trained one's copy is junk."""
    dave, erin = trained.user, "erin@example.com"
    data = message(SENDER, dave, "pharmacy again", PHARMACY.format(n=7))
    with remote_client(world) as client:
        refused = client.sendmail(SENDER, [dave, erin], data)
    assert refused == {}

    wait_for_subject(world.server, world.ports.imap, dave, "pharmacy again", "Junk")
    wait_for_subject(world.server, world.ports.imap, erin, "pharmacy again", "INBOX")
    assert "pharmacy again" not in folder_subjects(world, dave, "INBOX")
    assert "pharmacy again" not in folder_subjects(world, erin, "Junk")
    # the MX did not call it spam: dave's own statistics did
    assert fetch(world, erin, "INBOX", "pharmacy again")["X-Spam"] is None


def test_training_a_user_who_does_not_exist_is_refused(world: SpamServer) -> None:
    result = train(world, "--user", "nobody@example.com")
    assert result.returncode == 1
    assert "no user 'nobody@example.com'" in result.stderr


# -- metrics ----------------------------------------------------------------------------------


def spam_verdicts(world: SpamServer) -> dict[str, float]:
    url = f"http://127.0.0.1:{world.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "mailstack_spam_verdicts":
            return {
                s.labels["action"]: s.value for s in family.samples if s.name.endswith("_total")
            }
    raise AssertionError("no mailstack_spam_verdicts in /metrics")


def test_verdicts_are_counted_in_the_metrics(world: SpamServer) -> None:
    before = spam_verdicts(world)
    assert send(world, "henry@example.com", "count me", f"x\r\n{REJECT_PATTERN}")[0] == 554
    assert send(world, "henry@example.com", "count me too") == (250, "")
    wait_for_subject(world.server, world.ports.imap, "henry@example.com", "count me too")

    def counted() -> bool:
        now = spam_verdicts(world)
        return now["rejected"] >= before["rejected"] + 1 and now["clean"] >= before["clean"] + 1

    wait_for(counted, 30, f"verdicts counted: {before} -> {spam_verdicts(world)}")


# -- rspamd down ------------------------------------------------------------------------------


def kill_rspamd(world: SpamServer) -> list[int]:
    """SIGKILL rspamd's main process, as a crash would; returns the processes it had."""
    before = rspamd_processes(world.spam_paths)
    os.kill(world.rspamd_main(), signal.SIGKILL)
    return before


def wait_rspamd_back(world: SpamServer, old: list[int]) -> None:
    def back() -> bool:
        now = rspamd_processes(world.spam_paths)
        return (
            bool(now)
            and not set(now) & set(old)
            and unix_socket_accepts(world.spam_paths.milter_socket)
        )

    wait_for(back, 120, f"rspamd restarted\n{world.server.log[-4000:]}")


def test_while_rspamd_is_down_mail_waits_with_4xx_and_arrives_after(world: SpamServer) -> None:
    old = kill_rspamd(world)
    # its workers go with it (they would otherwise keep serving the old socket)
    wait_for(lambda: not unix_socket_accepts(world.spam_paths.milter_socket), 10, "milter down")

    code, text = send(world, "alice@example.com", "while rspamd is down")
    assert (code, text.split()[0]) == (451, "4.7.1"), (code, text)

    wait_rspamd_back(world, old)
    assert not set(rspamd_processes(world.spam_paths)) & set(old)  # no orphan survived
    assert send(world, "alice@example.com", "while rspamd is down") == (250, "")  # the retry
    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "while rspamd is down")
    assert "rspamd exited unexpectedly" in world.server.log
    milter = str(world.spam_paths.milter_socket)
    said = [line for line in world.server.log.splitlines() if "postfix" in line and milter in line]
    assert said, "Postfix did not log why it deferred"


def test_with_failure_accept_mail_is_taken_unchecked_while_rspamd_is_down(
    rspamd_cache: Path,
) -> None:
    with spam_server(rspamd_cache, MAILSTACK_SPAM_FAILURE="accept") as world:
        old = kill_rspamd(world)
        wait_for(lambda: not unix_socket_accepts(world.spam_paths.milter_socket), 10, "down")

        assert send(world, "bob@example.com", "unchecked", f"x\r\n{HEADER_PATTERN}") == (250, "")
        wait_for_subject(world.server, world.ports.imap, "bob@example.com", "unchecked")
        msg = fetch(world, "bob@example.com", "INBOX", "unchecked")
        assert msg["X-Spam-Status"] is None  # nobody looked at it
        wait_rspamd_back(world, old)


def test_spam_off_runs_no_rspamd_and_files_nothing() -> None:
    """MAILSTACK_SPAM=off: no Redis, no rspamd, and a sender's X-Spam header means nothing."""
    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        store.add_domain("example.com")
        store.add_user("alice@example.com", PASSWORD)
        ports = Ports()
        server = MailServer(root, server_env(root, ports))
        try:
            server.start(timeout=60)
            assert rspamd_processes(spam_paths(Paths(root))) == []
            data = message(SENDER, "alice@example.com", "says spam", "x").replace(
                b"Subject:", b"X-Spam: Yes\r\nSubject:", 1
            )
            with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=60) as client:
                client.sendmail(SENDER, ["alice@example.com"], data)
            wait_for_subject(server, ports.imap, "alice@example.com", "says spam")
        finally:
            with contextlib.suppress(Exception):
                server.stop()
            server.cleanup()
            store.close()
