"""Dovecot configuration for the server profile: IMAP, LMTP, SASL for Postfix, Sieve.

Dovecot asks mailstack's lookup service for passwords, users and the active sieve script
over its dict protocol (see mailstack.lookup.dictserver), so there is no user file to keep in
sync. ManageSieve is served by mailstack itself (Pigeonhole's ManageSieve cannot write to a
dict), so Dovecot's own managesieve protocol stays off.
"""

from __future__ import annotations

import zlib

from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile
from mailstack.render.server import tls_files
from mailstack.settings.server import ServerSettings
from mailstack.settings.values import HostPort

#: Folders every mailbox gets on first login: (name, special-use flag).
SPECIAL_FOLDERS = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Spam", "\\Junk"),
    ("Archive", "\\Archive"),
)


def _inet_listener(name: str, address: HostPort | None, ssl: bool = False) -> str:
    if address is None:
        return f"  inet_listener {name} {{\n    port = 0\n  }}\n"
    host = address.host if address.host not in ("", "0.0.0.0") else "*"
    if host == "::":
        host = "[::]"
    lines = [f"  inet_listener {name} {{", f"    address = {host}", f"    port = {address.port}"]
    if ssl:
        lines.append("    ssl = yes")
    return "\n".join(lines) + "\n  }\n"


def render_dovecot_conf(settings: ServerSettings, paths: Paths, instance: str) -> str:
    cert, key = tls_files(settings, paths)
    mail_user = settings.mail_user
    folders = "".join(
        f"  mailbox {name} {{\n    special_use = {flag}\n    auto = subscribe\n  }}\n"
        for name, flag in SPECIAL_FOLDERS
    )
    imap_listeners = _inet_listener("imap", settings.listen_imap) + _inet_listener(
        "imaps", settings.listen_imaps, ssl=True
    )
    return f"""{GENERATED_HEADER}
instance_name = {instance}
base_dir = {paths.dovecot_run}
state_dir = {paths.dovecot_state}
log_path = /dev/stderr
protocols = imap lmtp
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
# a reload (a renewed certificate) keeps open IMAP sessions; new ones get the new pair
shutdown_clients = no
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_username_format = %Lu
mail_location = maildir:~/Maildir
mail_home = {paths.mailboxes}/%d/%n
mail_uid = {mail_user}
mail_gid = {mail_user}
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_plugins = $mail_plugins quota

namespace inbox {{
  inbox = yes
  separator = /
{folders}}}

service imap-login {{
{imap_listeners}}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp-postfix {{
    user = postfix
    group = postfix
    mode = 0600
  }}
}}
service auth {{
  # runs as dovecot: the only user (besides mailstack's worker) that may enter the folder
  # of the dict socket with password hashes
  unix_listener auth-postfix {{
    user = postfix
    group = postfix
    mode = 0600
  }}
}}
passdb {{
  driver = dict
  args = {paths.server_config / "dovecot-dict-auth.conf.ext"}
}}
userdb {{
  driver = dict
  args = {paths.server_config / "dovecot-dict-auth.conf.ext"}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@{settings.myhostname}
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  sieve = dict:proxy:{paths.sieve_dict_socket}:sieve;name=active
  quota = maildir:User quota
}}
"""


def render_dict_auth(paths: Paths) -> str:
    return f"""{GENERATED_HEADER}uri = proxy:{paths.dict_socket}:mailstack
password_key = passdb/%u
user_key = userdb/%u
iterate_prefix = userdb/
default_pass_scheme = ARGON2ID
"""


def render_dovecot(settings: ServerSettings, paths: Paths) -> list[RenderedFile]:
    instance = f"mailstack-{zlib.crc32(str(paths.root).encode()):08x}"
    config = paths.server_config
    return [
        RenderedFile(config / "dovecot.conf", render_dovecot_conf(settings, paths, instance)),
        RenderedFile(config / "dovecot-dict-auth.conf.ext", render_dict_auth(paths)),
    ]
