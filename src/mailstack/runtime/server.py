"""`mailstack run --profile server`: prepare the tree, then supervise the server's processes.

Started together, each ready before Postfix starts (rspamd after Redis):
1. the worker (`mailstack.worker`): one unprivileged Python process with the lookup service
   (socketmap for Postfix, dict for Dovecot) and ManageSieve, on one datastore engine;
2. Redis and rspamd (MAILSTACK_SPAM), the milter of port 25 (see runtime/spam.py);
3. OpenDKIM, when a hosted domain has a key (it signs what users submit);
4. Dovecot (IMAP, LMTP, SASL for Postfix, Sieve), which asks the lookup service;
5. Postfix, last, so that no mail is accepted before it can be delivered; at a stop it
   goes first, gracefully, and the others after it, together.
Restart budget, back-off and the graceful stop are the relay's (see supervisor.py).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from mailstack.dkim.keys import DomainKey, domains_with_keys
from mailstack.dkim.selectors import rotated_domains, signing_key
from mailstack.errors import ConfigError, ExitCode, Problem
from mailstack.paths import Paths
from mailstack.render.dovecot import global_sieve_scripts, render_dovecot
from mailstack.render.opendkim import render_opendkim
from mailstack.render.rspamd import SpamPaths
from mailstack.render.server import (
    listener_addresses,
    render_server_master_cf,
    render_server_postfix,
    tls_files,
)
from mailstack.runtime.acme import acme_options, acme_secrets
from mailstack.runtime.files import ensure_dir, materialise
from mailstack.runtime.mtasts import mta_sts_options, prepare_mta_sts
from mailstack.runtime.orphans import stop_leftover
from mailstack.runtime.plan import Job, Plan, Probe, Process
from mailstack.runtime.postfix import postfix_plan
from mailstack.runtime.prepare import (
    check_timezone,
    child_environment,
    generate_key,
    make_readable_by_opendkim,
    postfix_permissions,
    run_init_scripts,
    setup_dirs,
)
from mailstack.runtime.probes import is_socket, unix_ready
from mailstack.runtime.profile import (
    WORKER_USER,
    assemble_plan,
    opendkim_with_log,
    worker_account,
)
from mailstack.runtime.spam import prepare_spam, redis_process, rspamd_process
from mailstack.runtime.tls import ensure_certificate
from mailstack.settings.locations import database_location
from mailstack.settings.server import ServerSettings

log = logging.getLogger("mailstack.server")

DATABASE_ENV = "MAILSTACK_DATABASE_URL"


@dataclass(frozen=True)
class PreparedServer:
    dkim_keys: tuple[DomainKey, ...]
    database: str
    hosted_domains: tuple[str, ...]
    store_ready: bool = True  # False: unreachable at start; the worker migrates it later
    spam: SpamPaths | None = None  # rspamd and Redis, when MAILSTACK_SPAM is on

    @property
    def dkim_enabled(self) -> bool:
        """OpenDKIM always runs in the server, with no key too: a domain added while the
        server runs is signed at once (`refresh_dkim`), without a restart."""
        return True


def _setup_server_dirs(settings: ServerSettings, paths: Paths) -> None:
    setup_dirs(paths)
    stop_leftover(paths.dovecot_run / "master.pid", "dovecot")
    ensure_dir(paths.state, 0o755)
    ensure_dir(paths.mailboxes, 0o750, settings.mail_user, settings.mail_user)
    ensure_dir(paths.dovecot_state, 0o750)
    ensure_dir(paths.delivery_log, 0o2750, "root", WORKER_USER)  # new files: group mailstack
    ensure_dir(paths.server_config, 0o755)
    ensure_dir(paths.tls, 0o755)
    # Sockets are reachable only by who needs them: Postfix for the socketmap; Dovecot's
    # auth (extra group) and mail processes (mail user) for the dict with password hashes.
    # The worker owns the folders, so it can remove its sockets after giving up root.
    ensure_dir(paths.lookup_run, 0o750, WORKER_USER, "postfix")
    ensure_dir(paths.milter_run, 0o750, WORKER_USER, "postfix")
    ensure_dir(paths.policy_run, 0o750, WORKER_USER, "postfix")
    ensure_dir(paths.requests_run, 0o700, WORKER_USER, WORKER_USER)
    # password hashes for Dovecot's auth process (user dovecot) only; sieve scripts for the
    # mail processes (the mail user)
    ensure_dir(paths.dict_run, 0o750, WORKER_USER, "dovecot")
    ensure_dir(paths.sieve_dict_run, 0o750, WORKER_USER, grp.getgrgid(_mail_gid(settings)).gr_name)


def _mail_gid(settings: ServerSettings) -> int:
    return pwd.getpwnam(settings.mail_user).pw_gid


def start_store_check(
    settings: ServerSettings, paths: Paths, database: str
) -> subprocess.Popen[str]:
    """Migrate the datastore to the current schema and list its domains, in a child process
    (SQLAlchemy and Alembic stay out of the long-running supervisor) that runs while the
    rest is prepared; `hosted_domains` collects its answer."""
    env = base_environment(settings, paths)
    env[DATABASE_ENV] = database
    return subprocess.Popen(
        [sys.executable, "-m", "mailstack.store", "domains"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hosted_domains(check: subprocess.Popen[str]) -> list[str] | None:
    """The domains `start_store_check` found; None when the datastore cannot be reached now."""
    try:
        stdout, stderr = check.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        check.kill()
        check.communicate()
        stdout, stderr = "", "no answer from the datastore within 120 s"
    reason = stderr.strip() or f"exit code {check.returncode}"
    if check.returncode == ExitCode.TEMPFAIL:
        # Not a crash loop: the MX answers 4xx (nothing bounces) and the worker keeps
        # trying to reach and migrate the datastore.
        log.error("%s; starting anyway: mail is deferred with 4xx until it is back", reason)
        return None
    if check.returncode != 0:
        raise ConfigError([Problem(DATABASE_ENV, f"cannot open the datastore: {reason}")])
    return stdout.split()


def _worker_account() -> pwd.struct_passwd:
    return worker_account("MAILSTACK_PROFILE")


def sqlite_file(database: str) -> Path | None:
    """The file behind a SQLite path or `sqlite:///` URL; None for other databases."""
    if "://" not in database:
        return Path(database)
    if database.startswith("sqlite:///"):
        return Path("/" + database.removeprefix("sqlite:///").lstrip("/"))
    return None


def hand_datastore_to_worker(database: str, paths: Paths) -> None:
    """Let the unprivileged worker read and write a SQLite datastore, and nobody else.

    SQLite makes its -wal and -shm files beside the database, so the worker needs the
    folder too; the default folder (the state volume's top) is given to it, a folder the
    user chose is not changed. Admin commands run as root keep working: SQLite gives the
    files it creates to the database's owner.
    """
    path = sqlite_file(database)
    if path is None or not path.exists():
        return
    account = _worker_account()
    if path.parent == paths.state:
        os.chown(path.parent, account.pw_uid, account.pw_gid)
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists():
            os.chown(candidate, account.pw_uid, account.pw_gid)
            candidate.chmod(0o600)
    if not os.access(path.parent, os.W_OK) or path.parent.stat().st_uid != account.pw_uid:
        log.warning(
            "the worker (user %s) may be unable to write beside %s; give it that folder",
            WORKER_USER,
            path,
        )


def refresh_dkim(settings: ServerSettings, paths: Paths, domains: list[str]) -> list[DomainKey]:
    """Keys for `domains` (made when missing, with DKIM_AUTOGENERATE), readable by OpenDKIM,
    and its KeyTable and SigningTable rewritten: at start, and by `mailstack domain add`
    while the server runs (then `reload_opendkim`)."""
    keys = _server_keys(settings, paths, domains)
    for key in keys:
        make_readable_by_opendkim(key.private_key)
    materialise(render_opendkim(settings, paths, keys, mode="s"))
    return keys


def reload_opendkim(paths: Paths) -> bool:
    """Ask the running OpenDKIM to read its tables again (SIGUSR1); False if none runs."""
    try:
        pid = int((paths.opendkim_run / "opendkim.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    if b"opendkim" not in cmdline:  # a stale pid file: that number is someone else now
        return False
    os.kill(pid, signal.SIGUSR1)
    return True


def _server_keys(settings: ServerSettings, paths: Paths, domains: list[str]) -> list[DomainKey]:
    """Keys of hosted domains; with DKIM_AUTOGENERATE (on by default here) missing ones are
    made. Keys on disk for domains not hosted are used too (e.g. a parent domain). A rotated
    domain signs with its state file's active selector (`mailstack dkim rotate`) and never
    gets a `<domain>.private` again once that one is retired."""
    keys_dir = paths.dkim_keys
    rotated = rotated_domains(keys_dir)
    if settings.dkim_autogenerate:
        for domain in (d for d in domains if d not in rotated):
            selector = settings.dkim_selectors.for_domain(domain)
            record = generate_key(paths.dkim_keys, domain, selector)
            if record is not None:
                log.warning(
                    "generated a DKIM key for %s; publish its DNS record "
                    "(`mailstack dkim show %s`): %s",
                    domain,
                    domain,
                    record,
                )
    keys = []
    for domain in sorted({*domains_with_keys(keys_dir), *rotated}):
        key = signing_key(keys_dir, domain, settings.dkim_selectors.for_domain(domain))
        if key.private_key.exists():
            keys.append(key)
        else:
            log.error("no DKIM key %s (%s): its mail is not signed", key.private_key, key.selector)
    return keys


def prepare_server(settings: ServerSettings, paths: Paths) -> PreparedServer:
    """Folders, datastore schema, TLS certificate, DKIM keys, configuration, init scripts."""
    check_timezone(settings.tz)
    _setup_server_dirs(settings, paths)
    database = database_location(settings.root, settings.database_url)
    _worker_account()
    store_check = start_store_check(settings, paths, database)
    try:  # what needs no domain list is done while the child opens the datastore
        if settings.tls_cert_file is None:
            self_signed = ensure_certificate(paths.tls, settings.myhostname)
            if settings.acme_email:
                from mailstack.acme.files import AcmeFiles
                from mailstack.acme.setup import prepare_acme_folder

                prepare_acme_folder(AcmeFiles(paths.acme), self_signed, WORKER_USER)
        materialise(render_server_postfix(settings, paths, dkim_enabled=True))
        materialise(render_dovecot(settings, paths))
        spam = _prepare_spam(settings, paths) if settings.spam else None
        postfix_permissions(paths, base_environment(settings, paths))
    except BaseException:
        with contextlib.suppress(subprocess.TimeoutExpired):  # a migration is left to finish
            store_check.communicate(timeout=120)
        raise
    found = hosted_domains(store_check)
    domains = found or []
    hand_datastore_to_worker(database, paths)
    if found == []:
        log.warning("no domains in the datastore yet: add one with `mailstack domain add`")
    keys = refresh_dkim(settings, paths, domains)
    if keys:
        log.info("DKIM signing for %s", ", ".join(f"{k.domain} (s={k.selector})" for k in keys))
    run_init_scripts(paths)
    return PreparedServer(
        tuple(keys), database, tuple(domains), store_ready=found is not None, spam=spam
    )


def _prepare_spam(settings: ServerSettings, paths: Paths) -> SpamPaths:
    """rspamd's and Redis's folders and files, the learning spool, and the global Sieve
    scripts (spam into Junk, learning on moves), compiled now: the mail processes cannot
    write next to them."""
    if settings.spam_test_patterns:
        log.warning(
            "MAILSTACK_SPAM_TEST_PATTERNS is on: anyone can get a message refused or filed as "
            "spam with a test string; turn it off outside tests"
        )
    mail_group = grp.getgrgid(_mail_gid(settings)).gr_name
    spam = prepare_spam(paths, settings.rspamd_options(), mail_group=mail_group)
    # Dovecot's learn program (the mail user) writes here, the worker reads and removes
    for folder in (paths.spam_spool, paths.spam_spool / "tmp", paths.spam_spool / "new"):
        ensure_dir(folder, 0o2770, settings.mail_user, WORKER_USER)
    for script in global_sieve_scripts(paths):
        result = subprocess.run(
            ["sievec", "-c", str(paths.server_config / "dovecot.conf"), str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            problem = f"sievec {script}: {result.stderr.strip()}"
            raise ConfigError([Problem("MAILSTACK_SPAM", problem)])
    return spam


# -- the processes ----------------------------------------------------------------------------


def base_environment(settings: ServerSettings, paths: Paths) -> dict[str, str]:
    return child_environment(settings.tz, paths)


def worker_process(settings: ServerSettings, paths: Paths, prepared: PreparedServer) -> Process:
    """The worker: lookup service and ManageSieve in one process that drops root."""
    env = base_environment(settings, paths)
    env[DATABASE_ENV] = prepared.database  # by environment: a URL may hold a password
    argv = [
        sys.executable,
        "-m",
        "mailstack.worker",
        "--socketmap",
        f"unix:{paths.lookup_socket}",
        "--dict",
        f"unix:{paths.dict_socket}",
        "--sieve-dict",
        f"unix:{paths.sieve_dict_socket}",
        "--sender-milter",
        str(paths.sender_milter_socket),
        "--socket-mode",
        "666",
        "--user",
        WORKER_USER,
    ]
    if not prepared.store_ready:
        argv.append("--migrate")
    probes = [
        Probe("unix", str(paths.lookup_socket)),
        Probe("unix", str(paths.dict_socket)),
        Probe("unix", str(paths.sieve_dict_socket)),
        Probe("unix", str(paths.sender_milter_socket)),
    ]
    if settings.greylist:
        argv += ["--greylist", str(paths.greylist_socket)]
        argv += ["--greylist-delay", str(settings.greylist_delay)]
        argv += ["--greylist-autoallow", str(settings.greylist_autoallow)]
        for network in settings.greylist_allow_networks:
            argv += ["--greylist-allow-network", network]
        for domain in settings.greylist_allow_domains:
            argv += ["--greylist-allow-domain", domain]
        probes.append(Probe("unix", str(paths.greylist_socket)))
    if prepared.spam is not None:
        argv += ["--spam-spool", str(paths.spam_spool)]
        argv += ["--rspamd-controller", str(prepared.spam.controller_socket)]
    managesieve = settings.listen_managesieve
    if managesieve is not None or settings.listen_https is not None:
        cert, key = tls_files(settings, paths)
        argv += ["--cert", cert, "--key", key]
    if managesieve is not None:
        argv += ["--managesieve", str(managesieve)]
        probes.append(Probe("tcp", str(managesieve)))
    if settings.mta_sts_active:
        prepare_mta_sts(paths, server=True)
        sts_argv, sts_probe = mta_sts_options(settings, paths, server=True)
        argv += sts_argv
        probes.append(sts_probe)
    web_argv, web_probes = web_options(settings, paths)
    argv += web_argv
    probes += web_probes
    acme_argv, acme_env = acme_options(settings, paths)
    argv += acme_argv
    env.update(acme_env)
    # not critical: while it is down the MX answers 4xx and IMAP logins fail, nothing is lost
    return Process("worker", argv, env, probes, log_parser="worker", critical=False)


def web_options(settings: ServerSettings, paths: Paths) -> tuple[list[str], list[Probe]]:
    """The worker's options and probes for its HTTP/HTTPS listeners."""
    argv: list[str] = []
    probes: list[Probe] = []
    for option, address in (("--http", settings.listen_http), ("--https", settings.listen_https)):
        if address is not None:
            argv += [option, str(address)]
            probes.append(Probe("tcp", str(address)))
    if not argv:
        return argv, probes
    argv += ["--hostname", settings.myhostname, "--mta-sts-mode", settings.mta_sts_mode]
    if settings.listen_https is not None:  # the admin REST API at /api/v1, the web UI at /
        argv += ["--api", "--webui", "--dkim-keys", str(paths.dkim_keys)]
        argv += ["--dkim-sync-request", str(paths.dkim_sync_request)]
        argv += ["--queue-delete-request", str(paths.queue_delete_request)]
        argv += dkim_rotation_options(settings, paths)
        argv += ["--dkim-selector", settings.dkim_selectors.text]
        argv += ["--postfix-queue", str(paths.postfix_queue)]
        argv += ["--delivery-log", str(paths.delivery_log)]
    for name in ("imaps", "imap", "submissions", "submission"):
        address = getattr(settings, f"listen_{name}")
        if address is not None:
            argv += ["--client-port", f"{name}={address.port}"]
    return argv, probes


def dkim_rotation_options(settings: ServerSettings, paths: Paths) -> list[str]:
    """The worker's options for DKIM key rotation through the API: where it asks root, the
    new selectors' pattern, and the resolver that checks a record before an activation
    (MAILSTACK_DNS_NAMESERVERS' first, as for MTA-STS; none: the system's)."""
    argv = ["--dkim-rotation-request", str(paths.dkim_rotation_request)]
    argv += ["--dkim-rotate-selector", settings.dkim_rotate_selector]
    for host, port in settings.policy_nameservers[:1]:
        argv += ["--dkim-nameserver", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    return argv


def tls_reload(settings: ServerSettings, paths: Paths) -> tuple[list[str], list[list[str]]]:
    """(files the supervisor watches, commands it runs when one changes): a renewed or
    replaced certificate reaches Postfix and Dovecot without dropping open sessions."""
    cert, key = tls_files(settings, paths)
    commands = [
        ["postfix", "-c", str(paths.postfix_config), "reload"],
        ["doveadm", "-c", str(paths.server_config / "dovecot.conf"), "reload"],
    ]
    return [cert, key], commands


def dovecot_process(settings: ServerSettings, paths: Paths) -> Process:
    config = paths.server_config / "dovecot.conf"
    # Dovecot's master makes every listener before it accepts on any: once auth answers,
    # LMTP's socket is the new one (connecting to it would start an LMTP process for nothing)
    probes = [
        Probe("unix", str(paths.dovecot_run / "auth-postfix")),
        Probe("socket-file", str(paths.dovecot_run / "lmtp-postfix")),
    ]
    argv = ["dovecot", "-F", "-c", str(config)]
    env = base_environment(settings, paths)
    # shutdown_clients = no keeps sessions across a reload; its own group ends them at a stop
    return Process("dovecot", argv, env, probes, log_parser="dovecot", own_group=True)


def server_plan(settings: ServerSettings, paths: Paths, prepared: PreparedServer) -> Plan:
    """What the server runs, in start order (see the module's docstring)."""
    env = base_environment(settings, paths)
    processes = [worker_process(settings, paths, prepared)]
    syslog: Path | None = None
    if prepared.spam is not None:
        processes += [redis_process(prepared.spam, env), rspamd_process(prepared.spam, env)]
    if prepared.dkim_enabled:
        opendkim, syslog = opendkim_with_log(paths, env)
        processes.append(opendkim)
    processes.append(dovecot_process(settings, paths))
    postfix = postfix_plan(
        paths.postfix_config,
        paths.postfix_queue,
        env,
        [str(address) for address in listener_addresses(settings)],
        render_server_master_cf(settings, paths, prepared.dkim_enabled, accepting=True),
        render_server_master_cf(settings, paths, prepared.dkim_enabled, accepting=False),
    )
    password = settings.relayhost_password
    secrets = [password.get_secret_value()] if password else []
    secrets += acme_secrets(settings)
    ready_on = settings.listen_submission or settings.listen_smtp
    plan = assemble_plan(
        "server", settings, processes, postfix, ready_on=ready_on, syslog=syslog, secrets=secrets
    )
    watch, commands = tls_reload(settings, paths)
    plan = replace(plan, tls_watch=watch, tls_reload=commands, tls_hangup=["worker"])
    plan = replace(plan, delivery_log=str(paths.delivery_log))
    jobs = [dkim_sync_job(settings, paths, prepared), queue_delete_job(settings, paths)]
    jobs.append(dkim_rotation_job(settings, paths))
    if prepared.spam is not None and settings.spam_train_at is not None:
        jobs.append(spam_training_job(settings, paths, prepared))
    return replace(plan, jobs=jobs)


def dkim_sync_job(settings: ServerSettings, paths: Paths, prepared: PreparedServer) -> Job:
    """`mailstack dkim sync` (as root) when the worker asks: a domain added through the
    REST API gets its key and is signed at once."""
    env = base_environment(settings, paths) | settings.dkim_environment()
    env[DATABASE_ENV] = prepared.database
    argv = [sys.executable, "-m", "mailstack", "dkim", "sync"]
    return Job("dkim-sync", argv, env, trigger=str(paths.dkim_sync_request))


def dkim_rotation_job(settings: ServerSettings, paths: Paths) -> Job:
    """`mailstack dkim requested` (as root) when the worker asks: a DKIM key rotation step
    asked for through the REST API (mailstack.dkim.requests)."""
    env = base_environment(settings, paths) | settings.dkim_environment()
    argv = [sys.executable, "-m", "mailstack", "dkim", "requested", "--root", str(paths.root)]
    return Job("dkim-rotation", argv, env, trigger=str(paths.dkim_rotation_request))


def queue_delete_job(settings: ServerSettings, paths: Paths) -> Job:
    """`mailstack queue delete --requested` (as root, `postsuper -d`) when the worker asks:
    a queued message deleted through the REST API or the web UI."""
    env = base_environment(settings, paths)
    argv = [sys.executable, "-m", "mailstack", "queue", "delete", "--requested"]
    argv += ["--root", str(paths.root)]
    return Job("queue-delete", argv, env, trigger=str(paths.queue_delete_request))


def spam_training_job(settings: ServerSettings, paths: Paths, prepared: PreparedServer) -> Job:
    """The nightly pass: every user's Inbox as ham, Junk as spam (`mailstack spam train`)."""
    env = base_environment(settings, paths)
    env[DATABASE_ENV] = prepared.database
    argv = [sys.executable, "-m", "mailstack", "spam", "train", "--root", str(paths.root)]
    return Job("spam-training", argv, env, at=str(settings.spam_train_at))


def mail_folder(paths: Paths, address: str) -> Path:
    """Where a user's Maildir lives (mail_home in dovecot.conf)."""
    return paths.maildir(address)


async def server_problems(settings: ServerSettings, paths: Paths) -> list[str]:
    """What `mailstack health --profile server` finds wrong; empty when all answers."""
    from mailstack.runtime.probes import smtp_ready, tcp_ready

    problems = []
    # the MX first: postscreen fronts it, so idle sessions held on 587 do not fail the probe
    smtp = settings.listen_smtp or settings.listen_submission
    if smtp is not None and not await smtp_ready(smtp, helo="health.mailstack"):
        problems.append(f"no SMTP service on {smtp}")
    sockets = {
        "lookup service": paths.lookup_socket,
        "Dovecot auth": paths.dovecot_run / "auth-postfix",
    }
    for what, path in sockets.items():
        if not await unix_ready(path):
            problems.append(f"{what} not answering on {path}")
    # its socket only, as at start (dovecot_process): a connection would start an LMTP
    # process that a probe every few seconds would keep alive for good
    lmtp = paths.dovecot_run / "lmtp-postfix"
    if not is_socket(lmtp):
        problems.append(f"Dovecot LMTP has no socket at {lmtp}")
    imap = settings.listen_imap or settings.listen_imaps
    if imap is not None and not await tcp_ready(imap):
        problems.append(f"no IMAP service on {imap}")
    return problems
