"""Where ACME keeps its files, under the state volume's `acme/` (owned by the worker's user):

    acme/account.key         the account's private key (PEM), 0600
    acme/challenges/<token>  HTTP-01 answers, served by the worker's HTTP listener
    acme/certs/<serial>/     fullchain.pem + key.pem of one certificate
    acme/live -> certs/<serial>   the certificate in use; Postfix, Dovecot and the worker
                                  read acme/live/fullchain.pem and acme/live/key.pem
    acme/renew               a renewal request (`mailstack tls renew`): "due" or "force"

A new certificate is written into its own folder and `live` is switched by renaming a new
symbolic link over it: a reader sees the old pair or the new pair, never a new certificate
with an old key. Root (Postfix, Dovecot, the worker before it drops privileges) reads it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mailstack.runtime.files import write_atomic

KEEP_CERTIFICATES = 3  # the live one and two before it, to look back at


@dataclass(frozen=True)
class AcmeAccount:
    """Where and as whom to order certificates."""

    directory: str
    email: str
    ca_file: Path | None = None  # trust for a private ACME server's HTTPS; None: the system's


@dataclass(frozen=True)
class AcmeFiles:
    folder: Path

    @property
    def account_key(self) -> Path:
        return self.folder / "account.key"

    @property
    def challenges(self) -> Path:
        return self.folder / "challenges"

    @property
    def certs(self) -> Path:
        return self.folder / "certs"

    @property
    def live(self) -> Path:
        return self.folder / "live"

    @property
    def cert(self) -> Path:
        return self.live / "fullchain.pem"

    @property
    def key(self) -> Path:
        return self.live / "key.pem"

    @property
    def renew_request(self) -> Path:
        return self.folder / "renew"

    def install(self, name: str, fullchain_pem: str, key_pem: str) -> Path:
        """Write a pair into certs/<name>/ and make it the live one, atomically."""
        target = self.certs / name
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(target / "key.pem", key_pem, 0o600)
        write_atomic(target / "fullchain.pem", fullchain_pem, 0o644)
        link = self.folder / "live.new"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(Path("certs") / name)
        link.replace(self.live)  # rename(2): atomic
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._prune(name)
        return target

    def _prune(self, keep: str) -> None:
        folders = sorted(
            (p for p in self.certs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
        )
        old = [p for p in folders if p.name != keep][: -(KEEP_CERTIFICATES - 1) or None]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)

    def request_renewal(self, force: bool) -> None:
        write_atomic(self.renew_request, "force\n" if force else "due\n", 0o644)

    def take_renewal_request(self) -> str | None:
        """ "due" or "force" when a renewal was asked for (the request is consumed)."""
        try:
            text = self.renew_request.read_text().strip()
            self.renew_request.unlink()
        except OSError:
            return None
        return "force" if text == "force" else "due"
