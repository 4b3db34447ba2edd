"""The reliability suite's tools: a steady SMTP sender, process finders, fault injection, and
the final reckoning of what was accepted against what arrived.

"An accepted message is never lost": every message a client got `250` for after DATA must
reach its destination at least once. Duplicates are allowed (a daemon killed between storing
a message and acknowledging it makes the client send it again), but they are counted and
printed. A client that gets a 4xx, a refused connection or a dropped session retries the
same message (same Message-ID), as a real sender would; only the `250` counts as accepted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

from tests.helpers import base_env, wait_for

#: Postfix queues a message can sit in; all empty means nothing is left to deliver.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

#: Queue retries every second or two instead of Postfix's 300 s minimum back-off, so mail
#: deferred while a daemon was down is retried within the test's time (no effect on loss).
FAST_RETRY = {
    "POSTFIX_queue_run_delay": "1s",
    "POSTFIX_minimal_backoff_time": "1s",
    "POSTFIX_maximal_backoff_time": "2s",
}


#: The one mailbox of the server tests, and the password they give it.
RECIPIENT = "alice@example.com"
PASSWORD = "correct horse battery staple"


def relay_env(root: Path, port: int, sink_port: int) -> dict[str, str]:
    """The relay of the relay tests: submission on `port`, DKIM on, relay host the sink."""
    return base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink_port}",
        DKIM_AUTOGENERATE="1",
        **FAST_RETRY,
    )


def add_recipient(database: str | Path) -> None:
    """Host example.com with the mailbox RECIPIENT in the datastore at `database`."""
    from mailstack.store import MailStore

    store = MailStore.open(database)  # migrates
    try:
        store.add_domain("example.com")
        store.add_user(RECIPIENT, PASSWORD)
    finally:
        store.close()


def temporary(code: object) -> bool:
    """A 4xx reply code: the client keeps the message and tries again later."""
    return isinstance(code, int) and 400 <= code < 500


def temporaries_since(sender: Sender, start: float) -> int:
    return sum(n for code, n in sender.outcomes_since(start).items() if temporary(code))


def wait_showing(check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]):
    """`wait_for`, with the end of the log as it is when the wait fails."""
    try:
        wait_for(check, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log()[-4000:]}") from None


def maildir(root: Path) -> Path:
    return root / "var/lib/mailstack/mail/example.com/alice/Maildir"


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cmdline: str


def processes() -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # a zombie is already dead
            continue
        text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        found.append(Proc(int(entry.name), int(fields[1]), comm, text))
    return found


def find(
    comm: str | None, *, root: Path | None = None, parent: int | None = None, has: str = ""
) -> int | None:
    """The lowest pid with command name `comm` (any name if None) whose cmdline contains
    `has` and, when given, `root`, and whose parent is `parent` (when given)."""
    for proc in sorted(processes(), key=lambda p: p.pid):
        if (comm is not None and proc.comm != comm) or has not in proc.cmdline:
            continue
        if root is not None and str(root) not in proc.cmdline:
            continue
        if parent is not None and proc.ppid != parent:
            continue
        return proc.pid
    return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _names_root(pid: int, root: Path) -> bool:
    """Whether process `pid` runs in `root` (Postfix's processes work in its queue folder)
    or has it as MAILSTACK_ROOT (the supervisor)."""
    with contextlib.suppress(OSError):
        cwd = Path(f"/proc/{pid}/cwd").readlink()
        if cwd == root or root in cwd.parents:
            return True
    with contextlib.suppress(OSError):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        return f"MAILSTACK_ROOT={root}\0".encode() in environ
    return False


def ours(root: Path) -> set[int]:
    """Every process whose cmdline names `root` or that works under it, and all of their
    descendants (Postfix's and Dovecot's children do not repeat the root in their command
    lines, and an orphan of a killed Postfix master has init as its parent)."""
    table = processes()
    found = {p.pid for p in table if str(root) in p.cmdline or _names_root(p.pid, root)}
    grew = True
    while grew:
        more = {p.pid for p in table if p.ppid in found and p.pid not in found}
        grew = bool(more)
        found |= more
    found.discard(os.getpid())
    return found


def reap(root: Path) -> list[int]:
    """SIGKILL whatever a test's mailstack left running under `root` (a failed test)."""
    left = sorted(ours(root))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline and any(alive(pid) for pid in left):
        time.sleep(0.05)
    return left


def ehlo_works(port: int) -> bool:
    try:
        with smtplib.SMTP(
            "127.0.0.1", port, local_hostname="probe.reliability.test", timeout=5
        ) as c:
            return c.ehlo()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


# -- the sender -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One try at one message: when it started and ended, and how it ended: the final
    reply code, or `dropped` (connection lost or refused)."""

    msgid: str
    start: float
    end: float
    outcome: int | str


class Sender(threading.Thread):
    """Sends `rate` messages a second to 127.0.0.1:`port` until stopped, each with its own
    Message-ID, retrying each one after any temporary failure until it gets `250`.

    A session is reused for up to `per_session` messages, as bulk senders do, so a killed
    smtpd takes a session in the middle of a transaction with it now and then."""

    def __init__(
        self,
        port: int,
        mail_from: str,
        rcpt_to: str,
        tag: str,
        *,
        rate: float = 20.0,
        per_session: int = 10,
        helo: str = "app.reliability.test",
        retry_pause: float = 0.1,
    ) -> None:
        super().__init__(name=f"sender-{tag}", daemon=True)
        self.port = port
        self.mail_from = mail_from
        self.rcpt_to = rcpt_to
        self.tag = tag
        self.rate = rate
        self.per_session = per_session
        self.helo = helo
        self.retry_pause = retry_pause
        self.padding = 0  # bytes of extra body in messages started from now on
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.messages: list[str] = []  # every Message-ID tried, in order
        self.accepted: dict[str, float] = {}  # Message-ID -> when the 250 came
        self.refused: dict[str, tuple[int, str]] = {}  # permanent (5xx) refusals
        self.attempts: list[Attempt] = []
        self.replies: Counter[str] = Counter()  # every reply code seen, per command
        self.texts: dict[str, str] = {}  # the first reply text for each of those
        self.error: BaseException | None = None
        self._session: smtplib.SMTP | None = None
        self._used = 0
        self._last = ""  # the last reply, for the record of a refusal

    # statistics, safe to read from the test thread

    @property
    def accepted_count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def codes_between(self, start: float, end: float) -> Counter[int | str]:
        """Outcomes of attempts that began and ended within [start, end]."""
        with self.lock:
            return Counter(a.outcome for a in self.attempts if a.start >= start and a.end <= end)

    def outcomes_since(self, start: float) -> Counter[int | str]:
        with self.lock:
            return Counter(a.outcome for a in self.attempts if a.start >= start)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        assert not self.is_alive(), "the sender did not stop"
        if self.error is not None:
            raise AssertionError(f"the sender failed: {self.error!r}") from self.error

    # the thread

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            self._close()

    def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        number = 0
        while not self.stopping.is_set():
            pause = due - time.monotonic()
            if pause > 0 and self.stopping.wait(pause):
                break
            due = max(due + interval, time.monotonic())
            number += 1
            msgid = f"<{self.tag}.{number}.{os.getpid()}@reliability.test>"
            with self.lock:
                self.messages.append(msgid)
            body = self._body(msgid, number)
            while not self.stopping.is_set():
                outcome = self._attempt(msgid, body)
                if outcome == 250 or (isinstance(outcome, int) and outcome >= 500):
                    break
                self.stopping.wait(self.retry_pause)

    def _body(self, msgid: str, number: int) -> bytes:
        line = "The quick brown fox jumps over the lazy dog. " * 2 + "\r\n"
        filler = line * (4 + self.padding // len(line))
        return (
            f"From: <{self.mail_from}>\r\nTo: <{self.rcpt_to}>\r\n"
            f"Subject: {self.tag} {number}\r\nMessage-ID: {msgid}\r\n"
            f"Date: Sat, 21 Nov 2026 12:00:00 +0000\r\n\r\n"
            f"Message {number} of the {self.tag} run.\r\n{filler}"
        ).encode()

    def _note(self, command: str, code: int, text: bytes | str = b"") -> None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        self._last = f"{command}: {code} {text}"
        with self.lock:
            self.replies[f"{command} {code}"] += 1
            if code != 250 and text:
                self.texts.setdefault(f"{command} {code}", text.replace("\n", " "))

    def _connect(self) -> smtplib.SMTP:
        if self._session is not None and self._used < self.per_session:
            return self._session
        self._close()
        try:
            session = smtplib.SMTP("127.0.0.1", self.port, local_hostname=self.helo, timeout=15)
        except smtplib.SMTPConnectError as exc:  # a banner other than 220, e.g. 421
            self._note("banner", exc.smtp_code, exc.smtp_error)
            raise
        self._note("banner", 220)
        code, text = session.ehlo()
        self._note("EHLO", code, text)
        if code != 250:
            session.close()
            raise smtplib.SMTPHeloError(code, b"")
        self._session, self._used = session, 0
        return session

    def _close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
        self._session = None

    def _attempt(self, msgid: str, body: bytes) -> int | str:
        start = time.monotonic()
        outcome: int | str
        self._last = ""
        try:
            outcome = self._transaction(body)
        except smtplib.SMTPConnectError as exc:
            outcome = exc.smtp_code
            self._close()
        except (OSError, smtplib.SMTPException):
            outcome = "dropped"
            self._close()
        end = time.monotonic()
        with self.lock:
            self.attempts.append(Attempt(msgid, start, end, outcome))
            if outcome == 250:
                self.accepted[msgid] = end
            elif isinstance(outcome, int) and outcome >= 500:
                self.refused[msgid] = (outcome, self._last)
        if outcome != 250 and self._session is not None:
            try:  # a real sender resets the transaction and carries on, or reconnects
                if self._session.rset()[0] != 250:
                    self._close()
            except (OSError, smtplib.SMTPException):
                self._close()
        return outcome

    def _transaction(self, body: bytes) -> int:
        session = self._connect()
        self._used += 1
        code, text = session.mail(self.mail_from)
        self._note("MAIL", code, text)
        if code != 250:
            return code
        code, text = session.rcpt(self.rcpt_to)
        self._note("RCPT", code, text)
        if code not in (250, 251):
            return code
        try:
            code, text = session.data(body)
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            self._note("DATA", exc.smtp_code, exc.smtp_error)
            return exc.smtp_code
        self._note("end-of-data", code, text)
        return code


@contextlib.contextmanager
def sending(sender: Sender) -> Iterator[Sender]:
    """Run `sender` for the block; it is stopped however the block ends."""
    sender.start()
    try:
        yield sender
    finally:
        sender.stopping.set()
        sender.join(60)


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A process to SIGKILL: `name` for the report, `locate` returns its pid (or None)."""

    name: str
    locate: Callable[[], int | None]
    respawns: bool = True  # False: its parent starts a new one only when work arrives
    #: Also keep a second client's session open across the kill and go on with it after
    #: (MAIL FROM), as an application with a pooled SMTP connection does.
    held_session: bool = False


@dataclass
class Injected:
    name: str
    pid: int
    new_pid: int | None
    recovered_after: float  # seconds until mail was accepted and delivered again
    held_session: str = ""  # what the held session got after the kill


class HeldSession:
    """An SMTP session opened (EHLO) before a fault; `resume()` sends MAIL FROM in the
    background after it and records the reply (or that none came), then closes."""

    def __init__(self, port: int, mail_from: str) -> None:
        self.mail_from = mail_from
        self.outcome: int | str = "pending"
        self.session = smtplib.SMTP(
            "127.0.0.1", port, local_hostname="pool.reliability.test", timeout=10
        )
        self.session.ehlo()
        self.thread = threading.Thread(target=self._resume, daemon=True)

    def resume(self) -> None:
        self.thread.start()

    def _resume(self) -> None:
        try:
            self.outcome = self.session.mail(self.mail_from)[0]
        except (OSError, smtplib.SMTPException) as exc:
            self.outcome = f"no answer ({type(exc).__name__}: {exc})"
        finally:
            self.session.close()

    def report(self) -> str:
        self.thread.join(15)
        return f"a session held across the kill got {self.outcome} for MAIL FROM"


def survivors(pgid: int) -> list[str]:
    """What is left of the process group `pgid` (a killed Postfix master's children)."""
    found = []
    for proc in group_of(pgid):
        if proc.pid == pgid:
            continue
        try:
            wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
            stdout = str(Path(f"/proc/{proc.pid}/fd/1").readlink())
        except (OSError, ValueError):
            continue
        readers = [
            f"{other.pid} ({other.comm} {other.cmdline[:60]})"
            for other in holders(stdout)
            if other.pid != proc.pid and other.pid not in {p.pid for p in group_of(pgid)}
        ]
        found.append(
            f"pid {proc.pid} ({proc.comm}, parent {proc.ppid}, waiting in {wchan}): "
            f"{proc.cmdline}\n    its stdout {stdout} is also open in: {', '.join(readers) or '-'}"
        )
    return found


def group_of(pgid: int) -> list[Proc]:
    members = []
    for proc in processes():
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                members.append(proc)
    return members


def holders(target: str) -> list[Proc]:
    """Processes with `target` (e.g. `pipe:[123]`) among their open files."""
    found = []
    for proc in processes():
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{proc.pid}/fd")
            if any(str(fd.readlink()) == target for fd in fds.iterdir()):
                found.append(proc)
    return found


class NoRecovery(AssertionError):
    """Mail did not flow again after a fault; carries the faults injected before it."""

    def __init__(self, message: str, done: list[Injected]) -> None:
        super().__init__(message)
        self.done = done


def inject(
    faults: Iterable[Fault],
    sender: Sender,
    delivered: Callable[[], int],
    *,
    healthy: Callable[[], bool] = lambda: True,
    log: Callable[[], str] = lambda: "",
    settle: float = 2.0,
    recovery_timeout: float = 30.0,
) -> list[Injected]:
    """Kill each fault's process in turn while `sender` runs; after each, wait until the
    service is back: `healthy()` (e.g. EHLO works), the process was replaced, and new mail
    is both accepted and delivered. Then let traffic flow `settle` seconds."""
    done: list[Injected] = []
    for fault in faults:
        holder: list[int] = []

        def located(fault: Fault = fault, holder: list[int] = holder) -> bool:
            pid = fault.locate()
            if pid is not None:
                holder.append(pid)
            return pid is not None

        wait_for(located, 20, f"a process to kill: {fault.name}")
        pid = holder[-1]
        held = HeldSession(sender.port, sender.mail_from) if fault.held_session else None
        accepted, arrived, logged = sender.accepted_count, delivered(), len(log())
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: not alive(pid), 10, f"{fault.name} (pid {pid}) to die")
        if held is not None:
            held.resume()

        def back(
            fault: Fault = fault, pid: int = pid, accepted: int = accepted, arrived: int = arrived
        ) -> bool:
            if fault.respawns:
                now = fault.locate()
                if now is None or now == pid:
                    return False
            return (
                sender.accepted_count >= accepted + 3 and delivered() >= arrived + 3 and healthy()
            )

        try:
            wait_for(back, recovery_timeout, f"mail to flow again after killing {fault.name}")
        except AssertionError as exc:
            since = log()[logged:].splitlines()
            raise NoRecovery(
                f"{exc} (pid {pid} killed)\n"
                f"now: {fault.name} pid {fault.locate()}, EHLO works: {healthy()}, accepted "
                f"{accepted} -> {sender.accepted_count}, delivered {arrived} -> {delivered()}, "
                f"attempt outcomes {sender.outcomes_since(killed_at)}\n"
                + (f"{held.report()}\n" if held is not None else "")
                + "left of the killed process's group:\n  "
                + "\n  ".join(survivors(pid) or ["nothing"])
                + "\nsupervisor lines since the kill:\n  "
                + "\n  ".join([line for line in since if " mailstack[" in line] or ["none"])
                + "\nlast log lines:\n  "
                + "\n  ".join(since[-15:]),
                done,
            ) from None
        finally:
            if fault.respawns and fault.locate() in (None, pid):
                # no replacement: stop the orphans, so the test's teardown can stop the rest
                for proc in group_of(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
        done.append(
            Injected(
                fault.name,
                pid,
                fault.locate(),
                time.monotonic() - killed_at,
                held.report() if held is not None else "",
            )
        )
        if sender.error is not None:
            raise AssertionError(f"the sender failed: {sender.error!r}")
        time.sleep(settle)
    return done


def storm(
    scenario: str,
    sender: Sender,
    faults: list[Fault],
    *,
    delivered: Callable[[], int],
    arrivals: Callable[[], Counter[str]],
    spool: Path,
    healthy: Callable[[], bool],
    log: Callable[[], str],
    warmup: int = 20,
) -> Reckoning:
    """Traffic from `sender`, the faults in turn, then stop sending, let the queue drain
    and count: what was accepted against what arrived."""
    failure: NoRecovery | None = None
    notes: list[str] = []
    with sending(sender):
        wait_for(lambda: delivered() >= warmup, 60, "mail to flow before the first fault")
        try:
            injected = inject(faults, sender, delivered, healthy=healthy, log=log)
        except NoRecovery as exc:
            # count what was accepted all the same; inject() stopped the orphans by now,
            # so the daemons can come back and deliver what is queued
            failure, injected = exc, exc.done
            notes.append(f"NO RECOVERY: {str(exc).splitlines()[0]}")
            notes.append(_after_orphans(sender, log))
        time.sleep(1)
        sender.stop()
    drain(lambda: set(sender.accepted), arrivals, spool)
    result = reckon(scenario, sender, arrivals(), faults=injected, notes=notes)
    if failure is not None:
        assert_nothing_lost(result, sender, log())
        raise failure
    assert len(injected) == len(faults)
    return result


def _after_orphans(sender: Sender, log: Callable[[], str]) -> str:
    """How the service fared once the test killed what was left of the dead process."""
    start, accepted, logged = time.monotonic(), sender.accepted_count, len(log())
    try:
        wait_for(lambda: sender.accepted_count >= accepted + 3, 30, "mail to flow")
    except AssertionError:
        return "after the test killed the orphans, mail did not flow within 30 s either"
    lines = [line for line in log()[logged:].splitlines() if " mailstack[" in line]
    return (
        f"after the test killed the orphans, mail flowed again within "
        f"{time.monotonic() - start:.1f} s; the supervisor then logged: "
        + " | ".join(line.split(": ", 1)[-1] for line in lines[:3])
    )


def assert_nothing_lost(result: Reckoning, sender: Sender, log: str) -> None:
    assert not result.lost, (
        f"{len(result.lost)} accepted message(s) never arrived:\n{trace(log, result.lost)}"
    )
    assert not sender.refused, f"permanent refusals (5xx) for: {sender.refused}"


# -- the reckoning --------------------------------------------------------------------------


@dataclass
class Reckoning:
    scenario: str
    tried: set[str]
    accepted: set[str]
    arrivals: Counter[str]
    replies: Counter[str]
    outcomes: Counter[int | str]
    texts: dict[str, str] = field(default_factory=dict)
    faults: list[Injected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        return sorted(m for m in self.accepted if self.arrivals[m] == 0)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for m, n in self.arrivals.items() if n > 1 and m in self.tried)

    @property
    def unconfirmed(self) -> int:
        """Delivered although the client never got a 250 for it (reply lost in a kill)."""
        return sum(1 for m in self.arrivals if m in self.tried and m not in self.accepted)

    @property
    def foreign(self) -> int:
        """Other mail that arrived: Postfix's own notices to the postmaster, say."""
        return sum(n for m, n in self.arrivals.items() if m not in self.tried)

    def report(self) -> str:
        lines = [
            f"== reliability: {self.scenario}",
            f"   messages sent {len(self.tried)}, accepted (250) {len(self.accepted)}, "
            f"delivered {sum(n for m, n in self.arrivals.items() if m in self.tried)} "
            f"({len(self.tried & set(self.arrivals))} distinct), lost {len(self.lost)}, "
            f"duplicates {self.duplicates}, delivered without a 250 {self.unconfirmed}, "
            f"other mail {self.foreign}",
            "   attempt outcomes: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items(), key=str)),
            "   replies: " + ", ".join(f"{k}={v}" for k, v in sorted(self.replies.items())),
        ]
        lines += [f"   first {k}: {v}" for k, v in sorted(self.texts.items())]
        lines += [
            f"   killed {f.name} (pid {f.pid}; now {f.new_pid}): mail flowed again after "
            f"{f.recovered_after:.1f} s" + (f"; {f.held_session}" if f.held_session else "")
            for f in self.faults
        ]
        lines += [f"   {note}" for note in self.notes]
        return "\n".join(lines)


def reckon(scenario: str, sender: Sender, arrivals: Counter[str], **extra: object) -> Reckoning:
    with sender.lock:
        result = Reckoning(
            scenario,
            tried=set(sender.messages),
            accepted=set(sender.accepted),
            arrivals=arrivals,
            replies=Counter(sender.replies),
            outcomes=Counter(a.outcome for a in sender.attempts),
            texts=dict(sender.texts),
            **extra,  # type: ignore[arg-type]
        )
    print("\n" + result.report())
    return result


def trace(log: str, msgids: Iterable[str], limit: int = 5) -> str:
    """The log lines of the first `limit` lost messages: the cleanup line that names the
    Message-ID gives the queue id, then every line with that queue id."""
    out = []
    for msgid in list(msgids)[:limit]:
        out.append(f"-- {msgid}")
        queue_ids = set(re.findall(rf"([0-9A-F]{{6,}}): message-id={re.escape(msgid)}", log))
        lines = [
            line
            for line in log.splitlines()
            if msgid in line or any(f"{q}:" in line for q in queue_ids)
        ]
        out += lines or ["   (not in the log: never queued)"]
    return "\n".join(out)


# -- where mail arrives ---------------------------------------------------------------------


def sink_arrivals(messages: list) -> Counter[str]:
    """Message-IDs at an aiosmtpd sink (`tests.helpers.Sink.messages`)."""
    return Counter(str(msg["Message-ID"]) for _, msg in list(messages))


def maildir_files(maildir: Path) -> list[Path]:
    files: list[Path] = []
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            files += [p for p in (maildir / sub).iterdir() if p.is_file()]
    return files


def maildir_arrivals(maildir: Path) -> Counter[str]:
    parser = BytesHeaderParser()
    found: Counter[str] = Counter()
    for path in maildir_files(maildir):
        # a file may move from new/ to cur/ meanwhile
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            found[str(parser.parse(handle)["Message-ID"])] += 1
    return found


def queue_empty(spool: Path) -> bool:
    return not any(p.is_file() for q in QUEUES for p in (spool / q).rglob("*"))


def drain(
    accepted: Callable[[], set[str]],
    arrivals: Callable[[], Counter[str]],
    spool: Path,
    timeout: float = 60,
) -> None:
    """Wait until every accepted message arrived and the queue is empty (or time out: the
    caller's assertion then names what is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_empty(spool) and accepted() <= set(arrivals()):
            time.sleep(0.5)  # a last redelivery in flight shows up as a duplicate
            return
        time.sleep(0.2)
