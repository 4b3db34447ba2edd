"""A private Postfix for the milter tests: one smtpd listener on loopback, SASL through a
running Dovecot, the sender milter in `smtpd_milters`, every message relayed to a sink.

The instance lives in its own folder (configuration, queue, data); its master runs in the
foreground in a new session, so stopping the process group stops every Postfix process.
Imported by the milter tests (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import smtplib
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from server_harness import free_port, port_open, shared_tempdir, wait_for

MASTER = Path("/usr/lib/postfix/sbin/master")

#: Postfix's queue folders: name, owner, group, mode (as `postfix set-permissions` makes them).
QUEUE_FOLDERS = [
    *(
        (name, "postfix", "root", 0o700)
        for name in (
            "active", "bounce", "corrupt", "defer", "deferred", "flush",
            "hold", "incoming", "private", "saved", "trace",
        )
    ),
    ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710),
    ("pid", "root", "root", 0o755),
]  # fmt: skip


@dataclass
class PrivatePostfix:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.root / "postfix.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=60)

    def queued(self) -> list[str]:
        """Messages still in the queue (a refused message never gets there)."""
        queue = self.root / "queue"
        return [
            p.name
            for folder in ("incoming", "active", "deferred", "hold")
            for p in (queue / folder).rglob("*")
            if p.is_file()
        ]


def main_cf(root: Path, options: Mapping[str, str]) -> str:
    params = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "submission.mailstack.test",
        "inet_protocols": "ipv4",
        "mydestination": "",  # nothing is delivered here: every recipient is relayed
        "alias_maps": "",
        "maillog_file": "/dev/stdout",
        "smtp_tls_security_level": "none",
        **options,
    }
    return "".join(f"{key} = {value}\n" for key, value in params.items())


def master_cf(port: int, smtpd_options: Mapping[str, str]) -> str:
    listener = f"127.0.0.1:{port} inet n - n - - smtpd\n"
    listener += "".join(f"    -o {key}={value}\n" for key, value in smtpd_options.items())
    stock = resources.files("mailstack.render").joinpath("data/master.cf").read_text()
    return listener + stock


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master, then make sure nothing of its process group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextlib.contextmanager
def running_postfix(
    options: Mapping[str, str], smtpd_options: Mapping[str, str]
) -> Iterator[PrivatePostfix]:
    """Postfix with `options` in main.cf and `smtpd_options` (-o) on its one listener."""
    root = shared_tempdir("mailstack-milter-postfix-")
    port = free_port()
    config = root / "etc"
    config.mkdir()
    (config / "main.cf").write_text(main_cf(root, options))
    (config / "master.cf").write_text(master_cf(port, smtpd_options))
    (root / "queue").mkdir(mode=0o755)
    for name, owner, group, mode in QUEUE_FOLDERS:
        folder = root / "queue" / name
        folder.mkdir()
        shutil.chown(folder, owner, group)
        folder.chmod(mode)
    (root / "data").mkdir(mode=0o700)
    shutil.chown(root / "data", "postfix", "postfix")
    log = (root / "postfix.log").open("wb")
    proc = subprocess.Popen(
        [str(MASTER), "-c", str(config), "-s"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    postfix = PrivatePostfix(root, port, proc)
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), 30, f"postfix\n{postfix.log()}")
        yield postfix
    except BaseException:
        print(postfix.log()[-6000:])  # shown by pytest with the failure
        raise
    finally:
        stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)
