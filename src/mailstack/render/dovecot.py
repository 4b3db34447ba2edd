"""Dovecot configuration for the server profile: IMAP, LMTP, SASL for Postfix, Sieve.

Dovecot asks mailstack's lookup service for passwords, users and the active sieve script
over its dict protocol (see mailstack.lookup.dictserver), so there is no user file to keep in
sync. ManageSieve is served by mailstack itself (Pigeonhole's ManageSieve cannot write to a
dict), so Dovecot's own managesieve protocol stays off.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile
from mailstack.render.rspamd import spam_paths
from mailstack.render.server import tls_files
from mailstack.settings.server import ServerSettings
from mailstack.settings.values import HostPort
from mailstack.spam.spool import learn_script
from mailstack.store.apppasswords import IDENT_LENGTH

#: Folders every mailbox gets on first login: (name, special-use flag).
SPECIAL_FOLDERS = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
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
    before = _spam_plugin(paths) if settings.spam else ""
    imap_plugins = "imap_quota imap_sieve" if settings.spam else "imap_quota"
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
# app passwords: asked when the account password did not match (result_failure = continue)
passdb {{
  driver = dict
  args = {paths.server_config / "dovecot-dict-apppass.conf.ext"}
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
  mail_plugins = $mail_plugins {imap_plugins}
}}
plugin {{
  sieve = dict:proxy:{paths.sieve_dict_socket}:sieve;name=active
{before}  quota = maildir:User quota
}}
"""


#: Runs before each user's own script (sieve_before). Mail goes to Junk, and the user's
#: rules are not run on it, when rspamd's score at the MX reached the user's own threshold
#: (`mailstack spam set`; whole numbers) or, without one, rspamd marked it as spam
#: (`X-Spam: Yes`, MAILSTACK_SPAM_JUNK_SCORE), or when this recipient's own Bayes statistics
#: are 90 % or more sure it is spam. A user with the filter off gets everything in the Inbox.
#: Without an answer from rspamd at delivery the mail goes on.
SPAM_SIEVE = r"""require ["fileinto", "mailbox", "variables", "envelope", "regex", "relational",
         "comparator-i;ascii-numeric", "vnd.dovecot.environment", "vnd.dovecot.execute"];
if not environment :is "vnd.dovecot.config.spam_filter" "off" {
  set "threshold" "";
  if environment :matches "vnd.dovecot.config.spam_threshold" "*" {
    set "threshold" "${1}";
  }
  set "score" "";
  if header :matches "X-Spam-Status" "*score=*" {
    set "score" "${2}";
  }
  set "junk" "";
  if anyof (string :is "${threshold}" "", string :is "${score}" "") {
    if header :is "X-Spam" "Yes" {
      set "junk" "yes";
    }
  } elsif not string :matches "${score}" "-*" {
    if string :value "ge" :comparator "i;ascii-numeric" "${score}" "${threshold}" {
      set "junk" "yes";
    }
  }
  if string :is "${junk}" "" {
    if envelope :matches "to" "*" {
      set "recipient" "${1}";
    }
    if execute :pipe :output "bayes" "mailstack-bayes" ["${recipient}"] {
      if string :regex "${bayes}" "BAYES_SPAM \\([0-9.]+\\)\\[(9[0-9]|100)\\." {
        set "junk" "yes";
      }
    }
  }
  if string :is "${junk}" "yes" {
    fileinto :create "Junk";
    stop;
  }
}
"""

#: IMAPSieve, when a message is copied, moved or appended into Junk: learn it as spam for
#: this user.
LEARN_SPAM_SIEVE = """require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];
if environment :matches "imap.user" "*" {
  set "user" "${1}";
}
pipe :copy "mailstack-learn" ["spam", "${user}"];
"""

#: IMAPSieve, when a message is copied or moved out of Junk: learn it as ham for this
#: user, unless it went to the Trash.
LEARN_HAM_SIEVE = """require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];
if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string :is "${mailbox}" "Trash" {
  stop;
}
if environment :matches "imap.user" "*" {
  set "user" "${1}";
}
pipe :copy "mailstack-learn" ["ham", "${user}"];
"""


def sieve_folder(paths: Paths) -> Path:
    """The global scripts (compiled next to them at every start) and their programs."""
    return paths.server_config / "sieve"


def spam_sieve_path(paths: Paths) -> Path:
    return sieve_folder(paths) / "spam.sieve"


def global_sieve_scripts(paths: Paths) -> list[Path]:
    folder = sieve_folder(paths)
    return [folder / "spam.sieve", folder / "learn-spam.sieve", folder / "learn-ham.sieve"]


def bayes_script(normal_socket: Path) -> str:
    """`mailstack-bayes ADDRESS`: this recipient's own Bayes verdict, from rspamd's normal
    worker with only the statistics enabled (settings id `delivery`)."""
    return f"""#!/bin/sh
# generated by mailstack: ask rspamd for this recipient's own Bayes verdict
exec rspamc -h "{normal_socket}" -t 5 -d "$1" --header "Settings-ID=delivery"
"""


def _spam_plugin(paths: Paths) -> str:
    folder = sieve_folder(paths)
    return f"""  sieve_before = {folder / "spam.sieve"}
  sieve_plugins = sieve_imapsieve sieve_extprograms
  # programs only for the global scripts above, never for users' own scripts
  sieve_global_extensions = +vnd.dovecot.pipe +vnd.dovecot.execute +vnd.dovecot.environment
  sieve_pipe_bin_dir = {folder / "bin"}
  sieve_execute_bin_dir = {folder / "bin"}
  imapsieve_mailbox1_name = Junk
  imapsieve_mailbox1_causes = COPY APPEND
  imapsieve_mailbox1_before = file:{folder / "learn-spam.sieve"}
  imapsieve_mailbox2_name = *
  imapsieve_mailbox2_from = Junk
  imapsieve_mailbox2_causes = COPY
  imapsieve_mailbox2_before = file:{folder / "learn-ham.sieve"}
"""


#: Milliseconds Dovecot's auth process keeps its dict connection to the worker open after a
#: lookup. Dovecot's own default, 0, hangs up after every lookup, so each delivery and each
#: login cost a new connection (accept, hello, close) in both processes. A lost connection
#: (the worker restarted) is opened again at the next lookup.
DICT_IDLE_MSECS = 600_000


def dict_uri(socket: Path) -> str:
    """The `uri` of a dict passdb/userdb file: the worker's dict socket, kept open."""
    return f"proxy:idle_msecs={DICT_IDLE_MSECS}:{socket}:mailstack"


def render_dict_auth(paths: Paths) -> str:
    return f"""{GENERATED_HEADER}uri = {dict_uri(paths.dict_socket)}
password_key = passdb/%u
user_key = userdb/%u
iterate_prefix = userdb/
default_pass_scheme = ARGON2ID
"""


def render_dict_app_passwords(paths: Paths) -> str:
    """The second passdb: the user and the first characters of the password typed name the
    one app password hash that may match (`mailstack.store.apppasswords`); Dovecot verifies
    it, so the rest of the password never leaves Dovecot."""
    return f"""{GENERATED_HEADER}uri = {dict_uri(paths.dict_socket)}
password_key = apppass/%u/%0.{IDENT_LENGTH}w
default_pass_scheme = ARGON2ID
"""


def render_dovecot(settings: ServerSettings, paths: Paths) -> list[RenderedFile]:
    instance = f"mailstack-{zlib.crc32(str(paths.root).encode()):08x}"
    config = paths.server_config
    files = [
        RenderedFile(config / "dovecot.conf", render_dovecot_conf(settings, paths, instance)),
        RenderedFile(config / "dovecot-dict-auth.conf.ext", render_dict_auth(paths)),
        RenderedFile(config / "dovecot-dict-apppass.conf.ext", render_dict_app_passwords(paths)),
    ]
    if settings.spam:
        folder = sieve_folder(paths)
        normal_socket = spam_paths(paths).normal_socket
        files += [
            RenderedFile(folder / "spam.sieve", SPAM_SIEVE),
            RenderedFile(folder / "learn-spam.sieve", LEARN_SPAM_SIEVE),
            RenderedFile(folder / "learn-ham.sieve", LEARN_HAM_SIEVE),
            RenderedFile(folder / "bin" / "mailstack-bayes", bayes_script(normal_socket), 0o755),
            RenderedFile(folder / "bin" / "mailstack-learn", learn_script(paths.spam_spool), 0o755),
        ]
    return files
