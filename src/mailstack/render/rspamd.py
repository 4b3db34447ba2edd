"""rspamd and its private Redis for the server profile: every socket a Unix socket.

rspamd reads Debian's stock `/etc/rspamd/rspamd.conf` (its rules, scores and module defaults)
with the `LOCAL_CONFDIR`, `DBDIR` and `RUNDIR` variables pointed at mailstack's folders, so the
only local changes it sees are the `local.d/` and `override.d/` files rendered here, and
nothing is read from `/etc/rspamd/local.d`. The variables are given on the command line
(`rspamd_argv`); rspamd 3.4 also takes them from the environment for its Lua code, where the
command line wins.

What the files set:
- the proxy worker in milter mode on a Unix socket for Postfix's port 25, scanning in its own
  process (`self_scan`: one hop less than handing each message to the normal worker);
- the normal worker (HTTP checks) and the controller (learning, statistics) on Unix sockets
  in their own folder; a Unix-socket client of the controller needs no password, so that
  folder is the access control;
- Redis (Bayes statistics, history, greylisting when asked) over a Unix socket;
- logs on stderr without rspamd's own time stamp (the supervisor adds one);
- the action thresholds, the test patterns, the DNS block lists and the headers added.

`override.d/` holds only the workers' `bind_socket` lines (and keeps the fuzzy storage worker
off): the stock files bind TCP ports on localhost, which must be replaced, never merged with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile

RSPAMD_USER = "_rspamd"  # Debian's rspamd package's account
REDIS_USER = "redis"  # Debian's redis-server package's account
STOCK_CONFIG = Path("/etc/rspamd/rspamd.conf")

#: The rules of the stock `rbl` module in Debian 12's rspamd 3.4 (modules.d/rbl.conf): IP
#: lists, URL lists and e-mail lists alike, since 3.x all in one module. SPAMHAUS_ZEN_URIBL
#: is shipped disabled.
STOCK_DNS_LISTS = (
    "spamhaus",
    "mailspike",
    "senderscore",
    "sem",
    "semIPv6",
    "dnswl",
    "virusfree",
    "nixspam",
    "blocklistde",
    "dnswl_dwl",
    "RSPAMD_EMAILBL",
    "MSBL_EBL",
    "SURBL_MULTI",
    "URIBL_MULTI",
    "RSPAMD_URIBL",
    "DBL",
    "SPAMHAUS_ZEN_URIBL",
    "SEM_URIBL_UNKNOWN",
    "SEM_URIBL_FRESH15_UNKNOWN",
)

#: Modules that ask DNS or a server on the internet about every message and count a failed
#: answer against it: hfilter (HELO, reverse DNS and sender host must resolve), asn (the
#: client's network from asn.rspamd.com) and fuzzy_check (rspamd.com's hash servers).
HOST_CHECK_MODULES = ("hfilter", "asn", "fuzzy_check")

#: milter_headers routines: who checked what, the verdict and the score on every message.
#: rspamd's proxy adds `X-Spam: Yes` itself when the action is "add header".
HEADER_ROUTINES = (
    "authentication-results",
    "x-spamd-result",
    "x-spam-status",
    "x-rspamd-action",
    "x-rspamd-queue-id",
)


@dataclass(frozen=True)
class SpamPaths:
    """Where rspamd and Redis keep their configuration, state and sockets."""

    config: Path  # LOCAL_CONFDIR: local.d/, override.d/ (rendered at every start)
    db: Path  # DBDIR, on the state volume: compiled regex cache, history, statistics
    run: Path  # RUNDIR: rspamd's control socket (root only)
    milter_run: Path  # the milter socket's folder, for Postfix only
    api_run: Path  # the controller's socket, for mailstack only
    scan_run: Path  # the normal worker's socket, for Dovecot's delivery (per-user Bayes)
    redis_config: Path
    redis_data: Path  # on the state volume: Redis's snapshot (dump.rdb)
    redis_run: Path  # the Redis socket's folder, for rspamd only

    @property
    def milter_socket(self) -> Path:
        return self.milter_run / "milter.sock"

    @property
    def controller_socket(self) -> Path:
        return self.api_run / "controller.sock"

    @property
    def normal_socket(self) -> Path:
        return self.scan_run / "normal.sock"

    @property
    def control_socket(self) -> Path:
        return self.run / "control.sock"

    @property
    def redis_socket(self) -> Path:
        return self.redis_run / "redis.sock"

    @property
    def redis_pidfile(self) -> Path:
        return self.redis_run / "redis.pid"


def spam_paths(paths: Paths) -> SpamPaths:
    return SpamPaths(
        config=paths.server_config / "rspamd",
        db=paths.state / "rspamd",
        run=paths.run / "rspamd",
        milter_run=paths.run / "rspamd-milter",
        api_run=paths.run / "rspamd-api",
        scan_run=paths.run / "rspamd-scan",
        redis_config=paths.server_config / "redis.conf",
        redis_data=paths.state / "redis",
        redis_run=paths.run / "redis",
    )


@dataclass(frozen=True)
class RspamdOptions:
    """The choices the settings make; every default is rspamd's own unless said otherwise."""

    reject: float = 15.0  # score from which mail is refused with 554 at DATA
    add_header: float = 6.0  # score from which mail gets `X-Spam: Yes` and is delivered
    #: None: rspamd's greylisting off (mailstack's policy service greylists; mailstack's
    #: default). A score: from it up to `reject`, rspamd's greylist module delays mail it
    #: has not seen before with 4xx ("soft reject").
    greylist: float | None = None
    #: rspamd's GTUBE-like test patterns in a message body (XJS*... rejects, YJS*... adds
    #: the spam header): off in production.
    test_patterns: bool = False
    #: None: rspamd's own DNS block and allow lists (STOCK_DNS_LISTS). Otherwise only the
    #: rules named; the empty tuple turns every DNS list off.
    dns_lists: tuple[str, ...] | None = None
    #: False: hfilter, asn and fuzzy_check off (HOST_CHECK_MODULES); for hosts without DNS.
    host_checks: bool = True
    nameservers: tuple[str, ...] = ()  # empty: the system's resolv.conf
    dns_timeout: float | None = None  # seconds per try; None: rspamd's 1 s
    dns_retransmits: int | None = None  # None: rspamd's 5
    #: The compiled regex and public-suffix cache (hyperscan); None: DBDIR. Without it
    #: rspamd spends 15-30 s compiling before the milter socket opens.
    cache_dir: Path | None = None
    log_level: str = "info"
    #: Learned messages of each class a user needs before their Bayes says anything.
    bayes_min_learns: int = 20

    def __post_init__(self) -> None:
        for name in ("reject", "add_header"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: must be a number")
        if self.add_header >= self.reject:
            raise ValueError("add_header: must be below reject")
        if self.greylist is not None and not (
            math.isfinite(self.greylist) and self.greylist < self.add_header
        ):
            raise ValueError("greylist: must be below add_header")
        unknown = sorted(set(self.dns_lists or ()) - set(STOCK_DNS_LISTS))
        if unknown:
            raise ValueError(
                f"dns_lists: unknown rule(s) {', '.join(unknown)}; "
                f"rspamd has {', '.join(STOCK_DNS_LISTS)}"
            )
        if self.dns_timeout is not None and not self.dns_timeout > 0:
            raise ValueError("dns_timeout: must be above 0")
        if self.dns_retransmits is not None and self.dns_retransmits < 0:
            raise ValueError("dns_retransmits: must be 0 or more")
        if self.bayes_min_learns < 1:
            raise ValueError("bayes_min_learns: must be 1 or more")
        if self.log_level not in ("error", "warning", "notice", "info", "debug"):
            raise ValueError("log_level: one of error, warning, notice, info, debug")


@dataclass(frozen=True)
class RedisOptions:
    maxmemory_mb: int = 128  # then keys with the nearest expiry go first (volatile-ttl)

    def __post_init__(self) -> None:
        if self.maxmemory_mb < 16:
            raise ValueError("maxmemory_mb: at least 16")


# -- UCL values ---------------------------------------------------------------------------------


def _string(value: str) -> str:
    """A quoted UCL string. UCL expands `$NAME` inside strings, so a `$` is refused."""
    if "$" in value or "\n" in value:
        raise ValueError(f"cannot put {value!r} in rspamd's configuration")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _socket(path: Path, mode: str = "0666") -> str:
    """A bind_socket value: rspamd splits it at spaces (`path mode=...`)."""
    if any(c.isspace() for c in str(path)):
        raise ValueError(f"rspamd cannot listen on a socket path with spaces: {path}")
    return _string(f"{path} mode={mode}")


def _number(value: float) -> str:
    return f"{value:g}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _file(spam: SpamPaths, name: str, *lines: str) -> RenderedFile:
    body = "".join(f"{line}\n" for line in lines)
    return RenderedFile(spam.config / name, GENERATED_HEADER + body)


# -- rspamd ------------------------------------------------------------------------------------


def rspamd_argv(spam: SpamPaths) -> list[str]:
    """rspamd in the foreground on the stock configuration with mailstack's folders.

    The main process stays root (it binds the sockets and keeps the parent-death signal);
    the workers run as `_rspamd`. In the foreground rspamd writes no pid file.
    """
    return [
        "rspamd",
        "-f",
        "-u",
        RSPAMD_USER,
        "-g",
        RSPAMD_USER,
        "-c",
        str(STOCK_CONFIG),
        f"--var=LOCAL_CONFDIR={spam.config}",
        f"--var=DBDIR={spam.db}",
        f"--var=RUNDIR={spam.run}",
    ]


def _options(spam: SpamPaths, options: RspamdOptions) -> list[str]:
    lines = [
        f"enable_test_patterns = {_bool(options.test_patterns)};",
        # not on the state volume, where rspamd would put it: some volumes cannot hold sockets
        f"control_socket = {_socket(spam.control_socket, '0600')};",
    ]
    if options.cache_dir is not None:
        lines.append(f"hs_cache_dir = {_string(str(options.cache_dir) + '/')};")
    dns = []
    if options.nameservers:
        dns.append(f"  nameserver = [{', '.join(_string(s) for s in options.nameservers)}];")
    if options.dns_timeout is not None:
        dns.append(f"  timeout = {_number(options.dns_timeout)}s;")
    if options.dns_retransmits is not None:
        dns.append(f"  retransmits = {options.dns_retransmits};")
    if dns:
        lines += ["dns {", *dns, "}"]
    return lines


def _dns_lists(options: RspamdOptions) -> list[str]:
    chosen = options.dns_lists
    if chosen is None:
        return ["# rspamd's own DNS block and allow lists"]
    if not chosen:
        return ["# every DNS list off", "enabled = false;"]
    rules = [f'  "{name}" {{ enabled = {_bool(name in chosen)}; }}' for name in STOCK_DNS_LISTS]
    return ["rbls {", *rules, "}"]


def _milter_headers() -> list[str]:
    routines = ", ".join(f'"{name}"' for name in HEADER_ROUTINES)
    return [
        f"use = [{routines}];",
        # rspamd leaves these headers off for clients in local networks by default; the
        # milter sits on port 25 only, where a client behind NAT (a Kubernetes Service,
        # a load balancer) shows a private address and must get them all the same
        "skip_local = false;",
        # a sender's own X-Spam header is removed before rspamd's verdict is added
        "remove_upstream_spam_flag = true;",
    ]


#: Settings ids: the MX's scan (everything but the per-user statistics) and Dovecot's scan
#: of each delivered copy (only that user's Bayes classifier).
SMTP_SETTINGS = "mx"
DELIVERY_SETTINGS = "delivery"


def _settings() -> list[str]:
    return [
        f"{SMTP_SETTINGS} {{",
        f'  id = "{SMTP_SETTINGS}";',
        '  apply { groups_disabled = ["statistics"]; }',
        "}",
        f"{DELIVERY_SETTINGS} {{",
        f'  id = "{DELIVERY_SETTINGS}";',
        '  apply { symbols_enabled = ["BAYES_SPAM", "BAYES_HAM"]; }',
        "}",
    ]


def _bayes(options: RspamdOptions) -> list[str]:
    """Statistics per user: the `Deliver-To` of a check or learn request names the user
    (a mailbox, after alias expansion); nothing is learned automatically."""
    return [
        "per_user = true;",
        f"min_learns = {options.bayes_min_learns};",
        "autolearn = false;",
    ]


def _actions(options: RspamdOptions) -> list[str]:
    greylist = "null" if options.greylist is None else _number(options.greylist)
    return [
        f"reject = {_number(options.reject)};",
        f"add_header = {_number(options.add_header)};",
        f"greylist = {greylist};",
    ]


def render_rspamd(spam: SpamPaths, options: RspamdOptions) -> list[RenderedFile]:
    """Every file of LOCAL_CONFDIR. The same names each time, so that a setting turned off
    again leaves no file of an earlier start behind."""
    host = "" if options.host_checks else "enabled = false;"
    greylist = (
        "enabled = false;"
        if options.greylist is None
        else "# on: mail from the greylist score up to reject is delayed once"
    )
    binds = (
        ("worker-proxy.inc", _socket(spam.milter_socket)),
        ("worker-normal.inc", _socket(spam.normal_socket)),
        ("worker-controller.inc", _socket(spam.controller_socket)),
    )
    return [
        _file(spam, "local.d/options.inc", *_options(spam, options)),
        _file(
            spam,
            "local.d/logging.inc",
            'type = "console";',  # stderr
            f'level = "{options.log_level}";',
            "systemd = true;",  # no time stamp: the supervisor writes one
            "color = false;",
        ),
        _file(
            spam,
            "local.d/worker-proxy.inc",
            "milter = true;",
            'spam_header = "X-Spam";',
            'upstream "local" {',
            "  default = true;",
            "  self_scan = true;",
            # one verdict for every recipient: no Bayes here (it is per user, at delivery)
            f'  settings_id = "{SMTP_SETTINGS}";',
            "}",
        ),
        _file(spam, "local.d/settings.conf", *_settings()),
        _file(spam, "local.d/classifier-bayes.conf", *_bayes(options)),
        *(_file(spam, f"override.d/{name}", f"bind_socket = {bind};") for name, bind in binds),
        # off in the stock files too; bound here to a socket so that no TCP port is ever taken
        _file(
            spam,
            "override.d/worker-fuzzy.inc",
            f"bind_socket = {_socket(spam.run / 'fuzzy.sock', '0600')};",
            "count = -1;",
        ),
        _file(spam, "local.d/redis.conf", f"servers = {_string(str(spam.redis_socket))};"),
        _file(spam, "local.d/actions.conf", *_actions(options)),
        _file(spam, "local.d/milter_headers.conf", *_milter_headers()),
        _file(spam, "local.d/rbl.conf", *_dns_lists(options)),
        *(_file(spam, f"local.d/{module}.conf", host) for module in HOST_CHECK_MODULES),
        _file(spam, "local.d/greylist.conf", greylist),
        # neural learns from rspamd's own verdicts once thousands of messages went through,
        # keeps training vectors in Redis and forces every check on every message: off
        _file(spam, "local.d/neural.conf", "enabled = false;"),
    ]


# -- Redis -------------------------------------------------------------------------------------


def redis_argv(spam: SpamPaths) -> list[str]:
    """redis-server as user redis (it cannot drop root itself): setpriv changes the user and
    sets the parent-death signal again, which the change of user clears."""
    return [
        "setpriv",
        f"--reuid={REDIS_USER}",
        f"--regid={REDIS_USER}",
        "--init-groups",
        "--pdeathsig=TERM",
        "--",
        "redis-server",
        str(spam.redis_config),
    ]


def _redis_value(value: Path) -> str:
    text = str(value)
    if any(c.isspace() or c in "\"'\\" for c in text):
        raise ValueError(f"cannot put {text!r} in redis.conf")
    return text


def render_redis(spam: SpamPaths, options: RedisOptions) -> list[RenderedFile]:
    lines = [
        # no TCP at all: rspamd is the only client, over the socket
        "port 0",
        f"unixsocket {_redis_value(spam.redis_socket)}",
        # the folder (redis:_rspamd 0750) decides who gets in
        "unixsocketperm 666",
        "daemonize no",
        "supervised no",
        f"pidfile {_redis_value(spam.redis_pidfile)}",
        'logfile ""',  # stdout, read by the supervisor
        "loglevel notice",
        "always-show-logo no",
        f"dir {_redis_value(spam.redis_data)}",
        "dbfilename dump.rdb",
        # a snapshot now and then and at shutdown (Bayes statistics survive restarts); no
        # append-only log
        "save 3600 1 300 100 60 10000",
        "appendonly no",
        # a failed snapshot (full volume) must not stop rspamd's writes: mail goes on
        "stop-writes-on-bgsave-error no",
        f"maxmemory {options.maxmemory_mb}mb",
        "maxmemory-policy volatile-ttl",
    ]
    body = "".join(f"{line}\n" for line in lines)
    return [RenderedFile(spam.redis_config, GENERATED_HEADER + body)]
