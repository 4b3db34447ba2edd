"""The relay's queue file system fills up under load: Postfix must answer 4xx (452
insufficient system storage, or 451 when a queue file cannot be written), never `250` for
mail it could not store; once space is freed mail flows again, and nothing accepted is lost.

The queue (`var/spool/postfix` under MAILSTACK_ROOT) is put on a small tmpfs of its own,
filled by a file written until the disk is full, then freed by deleting that file."""

from __future__ import annotations

import contextlib
import errno
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import Sink, free_port, running_relay, smtp_sink, wait_for
from tests.reliability.harness import (
    Sender,
    assert_nothing_lost,
    drain,
    reap,
    reckon,
    relay_env,
    sending,
    sink_arrivals,
    temporaries_since,
    temporary,
    wait_showing,
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, root: Path) -> Iterator[Path]:
    """A tmpfs of `size` on `path`; unmounted after every process of `root` is gone."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size},mode=0755",
            "mailstack-reliability",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        reap(root)
        if subprocess.run(["umount", str(path)], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the file system has no space left; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as handle:
        while True:
            try:
                written += handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 16 or 1]


@contextlib.contextmanager
def kept_full(path: Path) -> Iterator[None]:
    """Keep taking whatever space appears (queue files of delivered mail are removed and
    free their blocks), so the disk stays full while the relay is under load."""
    stop = threading.Event()

    def top_up() -> None:
        with path.open("ab", buffering=0) as handle:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    handle.write(b"\0" * 4096)
                time.sleep(0.005)

    thread = threading.Thread(target=top_up, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def other_mail(sink: Sink) -> str:
    subjects = Counter(
        str(msg["Subject"])
        for _, msg in list(sink.messages)
        if "@reliability.test>" not in str(msg["Message-ID"])
    )
    return ", ".join(f"{s!r} x{n}" for s, n in subjects.items()) or "none"


def test_relay_refuses_with_4xx_when_its_queue_disk_is_full_and_loses_nothing(root: Path) -> None:
    port = free_port()
    spool = root / "var/spool/postfix"
    filler = spool / "filler"
    with (
        tmpfs(spool, "32m", root),
        smtp_sink() as sink,
        running_relay(root, relay_env(root, port, sink.port)) as relay,
    ):
        sender = Sender(port, "app@example.com", "someone@example.net", "disk-full")
        with sending(sender):
            wait_for(lambda: len(sink.messages) >= 20, 30, "mail to flow")
            fill(filler)
            full = time.monotonic()
            with kept_full(filler):
                wait_showing(
                    lambda: temporaries_since(sender, full) >= 5,
                    30,
                    "the relay to refuse mail while its queue disk is full",
                    lambda: relay.log,
                )
                time.sleep(3)  # more traffic against the full disk
            filled = filler.stat().st_size
            # Nearly full: 32 KiB free, messages of 128 KiB. smtpd's space check at MAIL
            # passes; writing the queue file fails. The client must not get 250.
            sender.padding = 128 * 1024
            nearly = time.monotonic()
            with filler.open("r+b") as handle:
                handle.truncate(max(0, filled - 32 * 1024))
            wait_showing(
                lambda: temporaries_since(sender, nearly) >= 5,
                30,
                "the relay to refuse large mail on a nearly full disk",
                lambda: relay.log,
            )
            time.sleep(2)
            freeing = time.monotonic()
            sender.padding = 0
            filler.unlink()
            accepted, arrived = sender.accepted_count, len(sink.messages)
            wait_showing(
                lambda: (
                    sender.accepted_count >= accepted + 20 and len(sink.messages) >= arrived + 20
                ),
                60,
                "mail to flow again once space was freed",
                lambda: relay.log,
            )
            time.sleep(1)
            sender.stop()
        drain(lambda: set(sender.accepted), lambda: sink_arrivals(sink.messages), spool)
        during = sender.codes_between(full, nearly)
        nearly_full = sender.codes_between(nearly, freeing)
        log = relay.log
        result = reckon(
            "relay: queue file system full under load, then freed",
            sender,
            sink_arrivals(sink.messages),
            notes=[
                f"filled with {filled // 1024} KiB; disk full for {nearly - full:.1f} s; "
                "attempts wholly within that time: "
                + ", ".join(f"{k}={v}" for k, v in sorted(during.items(), key=str)),
                f"32 KiB free, 128 KiB messages for {freeing - nearly:.1f} s: "
                + ", ".join(f"{k}={v}" for k, v in sorted(nearly_full.items(), key=str)),
                f"Postfix notices to the postmaster about it: {other_mail(sink)}",
            ],
        )
    assert_nothing_lost(result, sender, log)
    assert any(temporary(code) for code in during), during
    assert any(temporary(code) for code in nearly_full), nearly_full
