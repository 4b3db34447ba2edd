"""A hand-written Postfix + Dovecot MX on loopback: the baseline of bench/server_bench.py.

What a competent admin would write for the inbound path mailstack's server profile runs
(postscreen, smtpd, cleanup, the virtual maps, LMTP to Dovecot, Sieve, Maildir), with the
lookups in Postfix's own `sqlite:` tables and Dovecot's `sql` passdb/userdb on one plain
SQLite file holding the same domain, users and aliases (bench/sqlite_maps.py). Needs
Debian's postfix-sqlite and dovecot-sqlite. Everything lives in one temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.relay_bench import descendants, free_port, wait
from bench.sqlite_maps import Dataset, build_plain, dovecot_sql_conf, write_map_files
from mailstack.render.dovecot import SPECIAL_FOLDERS

MASTER_CF = Path(__file__).parents[1] / "src/mailstack/render/data/master.cf"


def greets(address: tuple[str, int] | Path, greeting: bytes) -> bool:
    """Whether a TCP or Unix-socket server answers with `greeting` (connecting to Dovecot's
    LMTP socket starts an lmtp process that then idles, as mailstack's probe does)."""
    family = socket.AF_UNIX if isinstance(address, Path) else socket.AF_INET
    try:
        with socket.socket(family) as conn:
            conn.settimeout(1)
            conn.connect(str(address) if isinstance(address, Path) else address)
            return conn.recv(len(greeting)).startswith(greeting)
    except OSError:
        return False


def self_signed(folder: Path, hostname: str) -> tuple[Path, Path]:
    """A throwaway certificate for STARTTLS and IMAPS, as `openssl req` makes it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    new_pair = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*new_pair, "-subj", f"/CN={hostname}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


def postfix_main_cf(folder: Path, tables: dict[str, list[str]], lmtp: Path, tls: Path) -> str:
    """The MX's main.cf: the same restrictions as mailstack's port 25, `sqlite:` tables."""

    def maps(name: str) -> str:
        return ", ".join(tables[name])

    return f"""compatibility_level = 3.6
queue_directory = {folder}/spool
data_directory = {folder}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.com
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8 [::1]/128
biff = no
smtputf8_enable = no
maillog_file = {folder}/maillog
disable_vrfy_command = yes
smtpd_forbid_bare_newline = yes
virtual_mailbox_domains = {maps("domain")}
virtual_alias_domains = {maps("aliasdomain")}
virtual_mailbox_maps = {maps("mailbox")}
virtual_alias_maps = {maps("alias")}
virtual_transport = lmtp:unix:{lmtp}
smtpd_tls_cert_file = {tls}/cert.pem
smtpd_tls_key_file = {tls}/key.pem
smtpd_tls_security_level = may
smtpd_helo_required = yes
smtpd_helo_restrictions = reject_invalid_helo_hostname, permit
smtpd_sender_restrictions = reject_non_fqdn_sender, check_sender_access {maps("hostedsender")}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_non_fqdn_recipient,
    check_recipient_access pcre:{folder}/postfix/address_literals, reject_unlisted_recipient
smtpd_data_restrictions = reject_unauth_pipelining
postscreen_access_list = permit_mynetworks
postscreen_greet_action = enforce
postscreen_cache_map = btree:{folder}/data/postscreen_cache
"""


def dovecot_conf(folder: Path, imap: int, imaps: int, tls: Path) -> str:
    """LMTP and IMAP, passdb/userdb in SQLite, Sieve, quota and the special-use folders as
    in mailstack's; Dovecot's defaults left out (plaintext only on TLS or loopback, %Lu)."""
    boxes = "".join(
        f"  mailbox {name} {{\n    special_use = {flag}\n    auto = subscribe\n  }}\n"
        for name, flag in SPECIAL_FOLDERS
    )
    sql = f"{folder}/dovecot-sql.conf.ext"
    return f"""instance_name = bench-baseline-{folder.name}
base_dir = {folder}/dovecot-run
state_dir = {folder}/dovecot-state
log_path = {folder}/dovecot.log
protocols = imap lmtp
ssl_cert = <{tls}/cert.pem
ssl_key = <{tls}/key.pem
mail_location = maildir:~/Maildir
mail_home = {folder}/mail/%d/%n
mail_uid = vmail
mail_gid = vmail
mail_plugins = quota
namespace inbox {{
  inbox = yes
  separator = /
{boxes}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp-postfix {{
    user = postfix
    group = postfix
    mode = 0600
  }}
}}
passdb {{
  driver = sql
  args = {sql}
}}
userdb {{
  driver = sql
  args = {sql}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@mx.example.com
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  quota = maildir:User quota
}}
"""


class Baseline:
    """Postfix (postscreen on the MX port) and Dovecot, configured by hand."""

    def __init__(self, folder: Path, data: Dataset, password_hash: str) -> None:
        self.dir = folder
        self.dir.mkdir(mode=0o755)
        self.port, self.imap = free_port(), free_port()
        maps, self.conf = self.dir / "maps", self.dir / "postfix"
        maps.mkdir(mode=0o755)
        self.conf.mkdir()
        build_plain(maps / "mail.db", data, password_hash)
        (maps / "mail.db").chmod(0o644)
        tables = write_map_files(maps, maps / "mail.db")
        self_signed(self.dir, "mx.example.com")
        (self.dir / "mail").mkdir()
        shutil.chown(self.dir / "mail", "vmail", "vmail")
        self.mail = self.dir / "mail/example.com"  # where the Maildirs appear
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        (self.dir / "spool").mkdir()
        lmtp = self.dir / "dovecot-run/lmtp-postfix"
        (self.conf / "main.cf").write_text(postfix_main_cf(self.dir, tables, lmtp, self.dir))
        (self.conf / "address_literals").write_text(
            "/@\\[.*\\]$/ 550 5.1.1 Address literals are not accepted here\n"
        )
        mx = f"127.0.0.1:{self.port} inet n - n - 1 postscreen\nsmtpd pass - - n - - smtpd\n"
        extra = "dnsblog unix - - n - 0 dnsblog\ntlsproxy unix - - n - 0 tlsproxy\n"
        lmtp_client = "lmtp unix - - n - - lmtp\n"
        (self.conf / "master.cf").write_text(mx + extra + lmtp_client + MASTER_CF.read_text())
        (self.dir / "dovecot-sql.conf.ext").write_text(dovecot_sql_conf(maps / "mail.db"))
        self.dovecot_conf = self.dir / "dovecot.conf"
        self.dovecot_conf.write_text(dovecot_conf(self.dir, self.imap, free_port(), self.dir))
        self.procs: list[subprocess.Popen[bytes]] = []

    def check(self) -> None:
        """`postfix check` and `doveconf -n` must accept the files (errors name the line)."""
        for argv in (
            ["postfix", "-c", str(self.conf), "check"],
            ["doveconf", "-n", "-c", str(self.dovecot_conf)],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0 or any(w in done.stderr.lower() for w in ("warning", "fatal")):
                raise RuntimeError(f"{' '.join(argv[:1])}: {done.stderr.strip()}")

    def start(self) -> float:
        """Seconds from starting Dovecot and Postfix until the MX, IMAP and LMTP answer."""
        self.check()
        begin = time.monotonic()
        dovecot = subprocess.Popen(["dovecot", "-F", "-c", str(self.dovecot_conf)])
        master = subprocess.Popen(
            ["/usr/lib/postfix/sbin/master", "-c", str(self.conf), "-s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs = [dovecot, master]
        lmtp = self.dir / "dovecot-run/lmtp-postfix"
        wait(
            lambda: (
                greets(lmtp, b"220")
                and greets(("127.0.0.1", self.imap), b"* OK")
                and greets(("127.0.0.1", self.port), b"220")
            ),
            60,
            "the baseline's MX, IMAP and LMTP",
        )
        return time.monotonic() - begin

    def groups(self) -> dict[str, int]:
        """Process-tree roots by name, for CPU accounting."""
        return {"dovecot": self.procs[0].pid, "postfix": self.procs[1].pid}

    def start_milestones(self) -> dict[str, float]:
        """Nothing to break down: two daemons started at once."""
        return {}

    def pids(self) -> list[int]:
        return sorted(set(descendants([p.pid for p in self.procs])))

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs = []
