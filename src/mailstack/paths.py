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
    def requests_run(self) -> Path:
        """Where the unprivileged worker leaves requests for the supervisor (root) as files."""
        return self.run / "requests"

    @property
    def dkim_sync_request(self) -> Path:
        """Created by the worker when a domain was added: the supervisor runs `dkim sync`."""
        return self.requests_run / "dkim-sync"

    @property
    def queue_delete_request(self) -> Path:
        """Created by the worker after it left queue ids in `queue-delete.d/`: the supervisor
        runs `queue delete --requested` (mailstack.mailqueue.requests)."""
        return self.requests_run / "queue-delete"

    @property
    def dkim_rotation_request(self) -> Path:
        """Created by the worker after it left a step in `dkim-rotation.d/`: the supervisor
        runs `dkim requested` (mailstack.dkim.requests)."""
        return self.requests_run / "dkim-rotation"

    @property
    def opendkim_run(self) -> Path:
        """Folder of the OpenDKIM milter socket: owned by opendkim, group postfix."""
        return self.run / "opendkim"

    @property
    def opendkim_socket(self) -> Path:
        return self.opendkim_run / "opendkim.sock"

    @property
    def mta_sts_run(self) -> Path:
        """Folder of the MTA-STS policy map's socket: mailstack:postfix 0750."""
        return self.run / "mta-sts"

    @property
    def mta_sts_socket(self) -> Path:
        return self.mta_sts_run / "socketmap.sock"

    def mta_sts_cache(self, *, server: bool) -> Path:
        """The MTA-STS policy cache, on the state volume: the server's, or the relay's queue
        volume (its only one, as for the XOAUTH2 tokens)."""
        folder = self.under("/var/lib/mailstack") if server else self.postfix_queue
        return folder / "mta-sts" / "policies.json"

    @property
    def private_dev(self) -> Path:
        """The /dev given to OpenDKIM when mailstack cannot own the real /dev/log."""
        return self.run / "dev"

    # -- the server profile -------------------------------------------------------------

    @property
    def state(self) -> Path:
        """The server's state volume: datastore (SQLite), mailboxes, Dovecot state."""
        return self.under("/var/lib/mailstack")

    @property
    def database(self) -> Path:
        """The default SQLite datastore (MAILSTACK_DATABASE_URL picks another)."""
        return self.state / "mailstack.db"

    @property
    def mailboxes(self) -> Path:
        """Maildirs, one folder per domain and user: <domain>/<local part>/Maildir."""
        return self.state / "mail"

    def maildir(self, address: str) -> Path:
        """A user's Maildir (mail_home in dovecot.conf, then `Maildir`)."""
        local, _, domain = address.partition("@")
        return self.mailboxes / domain / local / "Maildir"

    @property
    def spam_spool(self) -> Path:
        """Messages users moved into or out of Junk, until the worker has learned them."""
        return self.state / "spam-learn"

    @property
    def delivery_log(self) -> Path:
        """The users' delivery log (mailstack.deliverylog): root writes, the worker reads."""
        return self.state / "deliveries"

    @property
    def dovecot_state(self) -> Path:
        return self.state / "dovecot"

    @property
    def env_file(self) -> Path:
        """The settings file `mailstack init` writes (mailstack.settings.envfile)."""
        return self.under("/etc/mailstack/mailstack.env")

    @property
    def server_config(self) -> Path:
        """Generated Dovecot configuration and the TLS certificate of the server profile."""
        return self.under("/etc/mailstack")

    @property
    def tls(self) -> Path:
        return self.server_config / "tls"

    @property
    def acme(self) -> Path:
        """ACME's account key, challenges and certificates (worker-owned, see acme/files.py)."""
        return self.state / "acme"

    @property
    def dovecot_run(self) -> Path:
        """Dovecot's base_dir: its sockets, including auth and LMTP for Postfix."""
        return self.run / "dovecot"

    @property
    def lookup_run(self) -> Path:
        """Folder of the socketmap socket: mailstack:postfix 0750, only Postfix gets in."""
        return self.run / "lookup"

    @property
    def milter_run(self) -> Path:
        """Folder of the worker's milter sockets: mailstack:postfix 0750."""
        return self.run / "milter"

    @property
    def policy_run(self) -> Path:
        """Folder of the worker's Postfix policy sockets: mailstack:postfix 0750."""
        return self.run / "policy"

    @property
    def greylist_socket(self) -> Path:
        """Greylisting on the MX (mailstack.policy), asked by check_policy_service."""
        return self.policy_run / "greylist.sock"

    @property
    def sender_milter_socket(self) -> Path:
        """Submission's header-From check (mailstack.milter), before OpenDKIM signs."""
        return self.milter_run / "sender.sock"

    @property
    def lookup_socket(self) -> Path:
        return self.lookup_run / "socketmap.sock"

    @property
    def dict_run(self) -> Path:
        """Folder of the dict socket with password hashes: mailstack:dovecot 0750, for
        Dovecot's auth process only."""
        return self.run / "dict"

    @property
    def sieve_dict_run(self) -> Path:
        """Folder of the dict socket with sieve scripts: mailstack:<mail user> 0750."""
        return self.run / "sieve-dict"

    @property
    def sieve_dict_socket(self) -> Path:
        return self.sieve_dict_run / "dict.sock"

    @property
    def dict_socket(self) -> Path:
        return self.dict_run / "dict.sock"
