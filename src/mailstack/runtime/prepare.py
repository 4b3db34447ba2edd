"""Turn validated settings into a ready-to-start tree: folders, keys, config files, init scripts.

Order matters and follows boky/postfix: configuration first, then the custom init scripts (they
may edit what was rendered, e.g. with `postconf -e`), then the daemons start.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.dkim.keys import (
    DomainKey,
    domains_with_keys,
    generate_private_key,
    key_path,
    render_txt,
)
from mailstack.errors import ConfigError, InitScriptError, Problem
from mailstack.paths import Paths
from mailstack.render.opendkim import render_opendkim
from mailstack.render.postfix import render_postfix
from mailstack.runtime.files import ensure_dir, materialise, write_atomic
from mailstack.runtime.orphans import stop_leftover
from mailstack.settings.model import RelaySettings

log = logging.getLogger("mailstack.prepare")

ZONEINFO = Path("/usr/share/zoneinfo")

#: A pristine copy of Debian's /etc/postfix, made by the container image (deploy/Dockerfile).
POSTFIX_SKELETON = Path("/usr/share/mailstack/skel/etc/postfix")
SYSTEM_POSTFIX_CONFIG = Path("/etc/postfix")
#: Postfix's own files in its configuration folder. Only these are restored: the rest of a
#: system's /etc/postfix (its main.cf, sasl_passwd, tables) belongs to that system.
POSTFIX_STOCK_FILES = (
    "dynamicmaps.cf",
    "dynamicmaps.cf.d",
    "postfix-files",
    "postfix-files.d",
    "main.cf.proto",
    "master.cf.proto",
    "makedefs.out",
    "postfix-script",
    "post-install",
)


@dataclass(frozen=True)
class Prepared:
    """What `prepare` decided, needed to start the daemons."""

    dkim_keys: tuple[DomainKey, ...]
    #: the XOAUTH2 hop's password for this start (Postfix's sasl_passwd and the hop's config)
    hop_password: str | None = field(default=None, repr=False)

    @property
    def dkim_enabled(self) -> bool:
        return bool(self.dkim_keys)


def postfix_command(paths: Paths, *args: str) -> list[str]:
    return ["postfix", "-c", str(paths.postfix_config), *args]


def child_environment(tz: str | None, paths: Paths) -> dict[str, str]:
    """The whole environment a daemon gets: no secrets, nothing inherited by accident."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "MAIL_CONFIG": str(paths.postfix_config),
        "LANG": "C.UTF-8",
    }
    if tz:
        env["TZ"] = tz
    return env


def setup_dirs(paths: Paths) -> None:
    """The folders both profiles need: Postfix's, OpenDKIM's, the run folder."""
    ensure_dir(paths.postfix_config)
    ensure_dir(paths.postfix_queue, 0o755, "root", "root")
    ensure_dir(paths.postfix_data, 0o700, "postfix", "postfix")
    ensure_dir(paths.opendkim_config)
    ensure_dir(paths.dkim_keys, 0o755)
    ensure_dir(paths.run, 0o755)
    ensure_dir(paths.opendkim_run, 0o750, "opendkim", "postfix")
    ensure_dir(paths.private_dev, 0o755)
    # Postfix's master forks and OpenDKIM drops root, which clears their parent-death
    # signal: left by a killed mailstack, they would still hold the ports and the socket
    stop_leftover(paths.postfix_queue / "pid" / "master.pid", "master")
    stop_leftover(paths.opendkim_run / "opendkim.pid", "opendkim")


def postfix_skeleton(paths: Paths) -> Path | None:
    """Where to restore Postfix's stock files from: the image's skeleton, else (a host install
    with a relocated root) the system's /etc/postfix; None when that is the folder itself."""
    if POSTFIX_SKELETON.is_dir():
        return POSTFIX_SKELETON
    system = SYSTEM_POSTFIX_CONFIG
    if system.is_dir() and system.resolve() != paths.postfix_config.resolve():
        return system
    return None


def _copy_missing(source: Path, target: Path) -> list[Path]:
    """Copy `source` (file, symlink or folder tree) to `target`, keeping what already exists."""
    copied: list[Path] = []
    if not os.path.lexists(target):
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_dir():
            target.mkdir(mode=source.stat().st_mode & 0o7777)
        else:
            shutil.copy2(source, target)
        copied.append(target)
    if source.is_dir() and not source.is_symlink() and target.is_dir():
        for child in sorted(source.iterdir()):
            copied += _copy_missing(child, target / child.name)
    return copied


def restore_postfix_stock_files(paths: Paths) -> list[str]:
    """Refill an emptied /etc/postfix (a tmpfs or Kubernetes emptyDir mounted over it).

    Postfix reads `dynamicmaps.cf` (and its .d folder) from meta_directory to learn which
    table types live in plugins: without it every `pcre:` or `lmdb:` table fails with
    "unsupported dictionary type". Missing stock files are copied back before rendering;
    files already there, edited or not, are kept. Returns the names of what was restored.
    """
    skeleton = postfix_skeleton(paths)
    config = paths.postfix_config
    restored: list[str] = []
    if skeleton is not None:
        for name in POSTFIX_STOCK_FILES:
            if os.path.lexists(skeleton / name) and _copy_missing(skeleton / name, config / name):
                restored.append(name)
    if restored:
        log.info("restored Postfix's own files in %s from %s: %s", config, skeleton, restored)
    elif skeleton is None and not (config / "dynamicmaps.cf").exists():
        log.warning(
            "%s has no dynamicmaps.cf and %s does not exist: pcre: and lmdb: tables will fail",
            config,
            POSTFIX_SKELETON,
        )
    return restored


def generate_key(keys_dir: Path, domain: str, selector: str) -> str | None:
    """Make `<domain>.private` (owned by opendkim) and its `.txt` record when no key exists;
    returns the record text when a key was made, None when one was already there."""
    private = key_path(keys_dir, domain)
    if private.exists():
        return None
    pem = generate_private_key()
    write_atomic(private, pem.decode("ascii"), 0o600, "opendkim")
    txt = render_txt(selector, domain, pem)
    write_atomic(keys_dir / f"{domain}.txt", txt, 0o644)
    return " ".join(txt.split())


def _autogenerate_keys(settings: RelaySettings, paths: Paths) -> None:
    if not settings.allowed_sender_domains:
        log.warning(
            "DKIM_AUTOGENERATE is set but ALLOWED_SENDER_DOMAINS is empty: nothing to generate"
        )
        return
    for domain in settings.allowed_sender_domains:
        selector = settings.dkim_selectors.for_domain(domain)
        record = generate_key(paths.dkim_keys, domain, selector)
        if record is not None:
            log.warning(
                "generated a new DKIM key for %s; publish this DNS record: %s", domain, record
            )


def make_readable_by_opendkim(private: Path) -> None:
    """OpenDKIM reads keys after dropping privileges; hand it keys it cannot read."""
    user = pwd.getpwnam("opendkim")
    info = private.stat()
    readable = (info.st_uid == user.pw_uid and info.st_mode & 0o400) or info.st_mode & 0o004
    if not readable:
        os.chown(private, user.pw_uid, info.st_gid)
        private.chmod(info.st_mode | 0o400)


def signing_keys(settings: RelaySettings, paths: Paths) -> list[DomainKey]:
    """The keys to sign with: allowed domains that have a key, or, when any sender is
    allowed, every key in the folder."""
    on_disk = domains_with_keys(paths.dkim_keys)
    if settings.allowed_sender_domains:
        for domain in settings.allowed_sender_domains:
            if domain not in on_disk:
                log.info(
                    "no DKIM key for %s (%s): its mail is not signed",
                    domain,
                    key_path(paths.dkim_keys, domain),
                )
        domains = [d for d in settings.allowed_sender_domains if d in on_disk]
    else:
        domains = on_disk
    return [
        DomainKey(d, settings.dkim_selectors.for_domain(d), key_path(paths.dkim_keys, d))
        for d in domains
    ]


def check_timezone(tz: str | None) -> None:
    if tz and not (ZONEINFO / tz).is_file():
        log.warning("TZ=%s: no such time zone in %s; times stay in UTC", tz, ZONEINFO)


def prepare(settings: RelaySettings, paths: Paths) -> Prepared:
    """Create folders, keys and configuration; run init scripts. Raises on any failure."""
    check_timezone(settings.tz)
    setup_dirs(paths)
    restore_postfix_stock_files(paths)
    if settings.dkim_autogenerate:
        _autogenerate_keys(settings, paths)
    keys = signing_keys(settings, paths)
    for key in keys:
        make_readable_by_opendkim(key.private_key)
    hop_password = secrets.token_urlsafe(32) if settings.xoauth2_enabled else None
    materialise(render_postfix(settings, paths, bool(keys), hop_password=hop_password))
    materialise(render_opendkim(settings, paths, keys, log_why=settings.inbound_debugging))
    if keys:
        log.info("DKIM signing for %s", ", ".join(f"{k.domain} (s={k.selector})" for k in keys))
    else:
        log.info("no DKIM keys found: mail is not signed")
    postfix_permissions(paths, child_environment(settings.tz, paths))
    run_init_scripts(paths)
    return Prepared(dkim_keys=tuple(keys), hop_password=hop_password)


#: Postfix's queue folders: (name, owner, group, mode), as `postfix set-permissions` makes them.
QUEUE_DIRS = (
    *(
        (name, "postfix", "root", 0o700)
        for name in (
            "active",
            "bounce",
            "corrupt",
            "defer",
            "deferred",
            "flush",
            "hold",
            "incoming",
            "private",
            "saved",
            "trace",
        )
    ),
    ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710),
    ("pid", "root", "root", 0o755),
)


def postfix_permissions(paths: Paths, env: dict[str, str]) -> None:
    """Create the queue folders. A queue from another image (other postfix uid) is handed to
    `postfix set-permissions`, which re-owns every queue file; that is slow, so only then."""
    postfix_uid = pwd.getpwnam("postfix").pw_uid
    foreign = False
    for name, owner, group, mode in QUEUE_DIRS:
        folder = paths.postfix_queue / name
        if folder.is_dir():
            foreign = foreign or (owner == "postfix" and folder.stat().st_uid != postfix_uid)
        else:
            ensure_dir(folder, mode, owner, group)
    if not foreign:
        return
    log.warning("queue files belong to another user id; running postfix set-permissions")
    result = subprocess.run(
        postfix_command(paths, "set-permissions"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(
            [Problem("MAILSTACK_ROOT", f"postfix set-permissions failed: {result.stderr.strip()}")]
        )


def init_scripts(paths: Paths) -> list[Path]:
    """`*.sh` in /docker-init.db (deprecated) then /docker-init.d, each folder sorted by name."""
    scripts: list[Path] = []
    for folder in paths.init_dirs:
        if folder.is_dir():
            scripts += sorted(p for p in folder.iterdir() if p.suffix == ".sh" and p.is_file())
    return scripts


def run_init_scripts(paths: Paths) -> None:
    """Run each script with bash; a non-zero exit stops start-up naming the script."""
    deprecated = paths.init_dirs[0]
    env = dict(os.environ)
    env["MAIL_CONFIG"] = str(paths.postfix_config)
    env["MAILSTACK_ROOT"] = str(paths.root)
    for script in init_scripts(paths):
        if script.parent == deprecated:
            log.warning("%s: /docker-init.db is deprecated, move it to /docker-init.d", script)
        log.info("running init script %s", script)
        result = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, check=False
        )
        for line in (result.stdout + result.stderr).splitlines():
            log.info("%s: %s", script.name, line)
        if result.returncode != 0:
            raise InitScriptError(str(script), result.returncode)
