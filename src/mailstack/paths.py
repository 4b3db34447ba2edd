"""Where every file and folder lives, relative to MAILSTACK_ROOT.

The defaults are the container layout of the boky/postfix image, so existing volumes
(`/var/spool/postfix`, `/etc/opendkim/keys`, `/docker-init.d`) keep working. Tests and host
installs move the whole tree by setting MAILSTACK_ROOT to another folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Every location mailstack reads or writes, resolved under one root."""

    root: Path

    def under(self, absolute: str) -> Path:
        """Map a container path such as `/etc/postfix` into the root."""
        return self.root / absolute.lstrip("/")

    @property
    def postfix_config(self) -> Path:
        return self.under("/etc/postfix")

    @property
    def postfix_queue(self) -> Path:
        return self.under("/var/spool/postfix")

    @property
    def postfix_data(self) -> Path:
        return self.under("/var/lib/postfix")

    @property
    def opendkim_config(self) -> Path:
        return self.under("/etc/opendkim")

    @property
    def dkim_keys(self) -> Path:
        return self.under("/etc/opendkim/keys")

    @property
    def init_dirs(self) -> tuple[Path, Path]:
        """Custom init script folders: the deprecated one first, as boky/postfix runs them."""
        return (self.under("/docker-init.db"), self.under("/docker-init.d"))

    @property
    def run(self) -> Path:
        """Runtime state: sockets and pid files, recreated on every start."""
        return self.under("/run/mailstack")

    @property
    def opendkim_run(self) -> Path:
        """Folder of the OpenDKIM milter socket: owned by opendkim, group postfix."""
        return self.run / "opendkim"

    @property
    def opendkim_socket(self) -> Path:
        return self.opendkim_run / "opendkim.sock"

    @property
    def private_dev(self) -> Path:
        """The /dev given to OpenDKIM when mailstack cannot own the real /dev/log."""
        return self.run / "dev"
