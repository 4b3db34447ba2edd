"""rspamd's local configuration and Redis's redis.conf for the server profile (pure)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstack.paths import Paths
from mailstack.render.files import RenderedFile
from mailstack.render.rspamd import (
    HOST_CHECK_MODULES,
    STOCK_DNS_LISTS,
    RedisOptions,
    RspamdOptions,
    SpamPaths,
    redis_argv,
    render_redis,
    render_rspamd,
    rspamd_argv,
    spam_paths,
)
from mailstack.runtime.spam import RSPAMD_READY_TIMEOUT, redis_process, rspamd_process
from tests.unit.support import ROOT


@pytest.fixture
def spam() -> SpamPaths:
    return spam_paths(Paths(ROOT))


def files(spam: SpamPaths, **options: object) -> dict[str, str]:
    """Rendered files by their path inside LOCAL_CONFDIR."""
    rendered = render_rspamd(spam, RspamdOptions(**options))  # type: ignore[arg-type]
    return {str(f.path.relative_to(spam.config)): f.content for f in rendered}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def setting(text: str, name: str) -> str | None:
    """The value of a top-level `name = value;` line, None when absent."""
    found = [
        line.split("=", 1)[1].strip().rstrip(";")
        for line in lines(text)
        if line.split("=", 1)[0].strip() == name
    ]
    assert len(found) <= 1, f"{name} is set {len(found)} times"
    return found[0] if found else None


# -- where things are ---------------------------------------------------------------------------


def test_every_location_is_under_the_root(spam: SpamPaths) -> None:
    assert spam.config == ROOT / "etc/mailstack/rspamd"
    assert spam.db == ROOT / "var/lib/mailstack/rspamd"  # the state volume: the regex cache
    assert spam.redis_data == ROOT / "var/lib/mailstack/redis"
    assert spam.milter_socket == ROOT / "run/mailstack/rspamd-milter/milter.sock"
    # the controller (any command) for mailstack only; the scanner for Dovecot's delivery
    assert spam.controller_socket == ROOT / "run/mailstack/rspamd-api/controller.sock"
    assert spam.normal_socket == ROOT / "run/mailstack/rspamd-scan/normal.sock"
    assert spam.redis_socket == ROOT / "run/mailstack/redis/redis.sock"


def test_rspamd_runs_the_stock_configuration_with_our_folders(spam: SpamPaths) -> None:
    argv = rspamd_argv(spam)

    assert argv[:2] == ["rspamd", "-f"]  # in the foreground, for the supervisor
    assert argv[argv.index("-c") + 1] == "/etc/rspamd/rspamd.conf"
    assert argv[argv.index("-u") + 1] == argv[argv.index("-g") + 1] == "_rspamd"
    assert f"--var=LOCAL_CONFDIR={spam.config}" in argv
    assert f"--var=DBDIR={spam.db}" in argv
    assert f"--var=RUNDIR={spam.run}" in argv


def test_redis_runs_as_its_own_user(spam: SpamPaths) -> None:
    argv = redis_argv(spam)

    assert argv[0] == "setpriv"
    assert {"--reuid=redis", "--regid=redis", "--pdeathsig=TERM"} <= set(argv)
    assert argv[-2:] == ["redis-server", str(spam.redis_config)]


# -- sockets ------------------------------------------------------------------------------------


def test_every_worker_listens_on_a_unix_socket_only(spam: SpamPaths) -> None:
    rendered = files(spam)
    binds = {
        name: setting(text, "bind_socket")
        for name, text in rendered.items()
        if "bind_socket" in text
    }

    # only override.d may replace the stock `localhost:1133x` binds (local.d would merge)
    assert set(binds) == {
        "override.d/worker-proxy.inc",
        "override.d/worker-normal.inc",
        "override.d/worker-controller.inc",
        "override.d/worker-fuzzy.inc",
    }
    assert binds["override.d/worker-proxy.inc"] == f'"{spam.milter_socket} mode=0666"'
    assert binds["override.d/worker-normal.inc"] == f'"{spam.normal_socket} mode=0666"'
    assert binds["override.d/worker-controller.inc"] == f'"{spam.controller_socket} mode=0666"'
    for value in binds.values():
        assert value is not None
        assert value.startswith(f'"{ROOT}/run/mailstack/')
    assert not any(re.search(r"localhost|:\d{2,5}\b", text) for text in rendered.values())


def test_the_proxy_is_a_milter_that_scans_itself(spam: SpamPaths) -> None:
    proxy = files(spam)["local.d/worker-proxy.inc"]

    assert setting(proxy, "milter") == "true"
    assert setting(proxy, "spam_header") == '"X-Spam"'
    assert "self_scan = true;" in proxy


def test_redis_is_reached_over_its_socket(spam: SpamPaths) -> None:
    assert setting(files(spam)["local.d/redis.conf"], "servers") == f'"{spam.redis_socket}"'


def test_the_control_socket_is_not_on_the_state_volume(spam: SpamPaths) -> None:
    options = files(spam)["local.d/options.inc"]

    assert setting(options, "control_socket") == f'"{spam.control_socket} mode=0600"'


# -- what rspamd does ---------------------------------------------------------------------------


def test_same_files_whatever_the_options(spam: SpamPaths) -> None:
    """A setting turned off again must not leave a file of an earlier start behind."""
    plain = set(files(spam))
    everything = set(
        files(
            spam,
            greylist=4.0,
            test_patterns=True,
            dns_lists=(),
            host_checks=False,
            nameservers=("127.0.0.1:53",),
            dns_timeout=0.5,
            dns_retransmits=1,
            cache_dir=Path("/var/cache/rspamd"),
        )
    )

    assert plain == everything


def test_actions_default_to_rspamds_thresholds_without_greylisting(spam: SpamPaths) -> None:
    rendered = files(spam)
    actions = rendered["local.d/actions.conf"]

    assert setting(actions, "reject") == "15"
    assert setting(actions, "add_header") == "6"
    # mailstack's policy service greylists; rspamd's module would delay mail a second time
    assert setting(actions, "greylist") == "null"
    assert setting(rendered["local.d/greylist.conf"], "enabled") == "false"


def test_actions_from_the_options(spam: SpamPaths) -> None:
    rendered = files(spam, reject=12.5, add_header=5, greylist=3.5)
    actions = rendered["local.d/actions.conf"]

    assert setting(actions, "reject") == "12.5"
    assert setting(actions, "add_header") == "5"
    assert setting(actions, "greylist") == "3.5"
    assert setting(rendered["local.d/greylist.conf"], "enabled") is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"add_header": 15.0}, "add_header"),
        ({"reject": 5.0}, "add_header"),
        ({"greylist": 6.0}, "greylist"),
        ({"reject": float("nan")}, "reject"),
        ({"dns_lists": ("spamhaus", "nosuchlist")}, "dns_lists"),
        ({"dns_timeout": 0.0}, "dns_timeout"),
        ({"dns_retransmits": -1}, "dns_retransmits"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        RspamdOptions(**options)  # type: ignore[arg-type]


def test_test_patterns_only_when_asked(spam: SpamPaths) -> None:
    assert setting(files(spam)["local.d/options.inc"], "enable_test_patterns") == "false"
    options = files(spam, test_patterns=True)["local.d/options.inc"]
    assert setting(options, "enable_test_patterns") == "true"


def test_dns_lists_are_rspamds_own_by_default(spam: SpamPaths) -> None:
    assert lines(files(spam)["local.d/rbl.conf"]) == []


def test_no_dns_lists_turns_the_module_off(spam: SpamPaths) -> None:
    assert lines(files(spam, dns_lists=())["local.d/rbl.conf"]) == ["enabled = false;"]


def test_only_the_dns_lists_named(spam: SpamPaths) -> None:
    rbl = files(spam, dns_lists=("spamhaus", "DBL"))["local.d/rbl.conf"]
    rules = dict(re.findall(r'"(\w+)" \{ enabled = (true|false); \}', rbl))

    assert set(rules) == set(STOCK_DNS_LISTS)
    assert {name for name, on in rules.items() if on == "true"} == {"spamhaus", "DBL"}
    assert setting(rbl, "enabled") is None  # the module itself stays on


def test_host_checks_off_without_dns(spam: SpamPaths) -> None:
    on = files(spam)
    off = files(spam, host_checks=False)

    for module in HOST_CHECK_MODULES:
        assert setting(on[f"local.d/{module}.conf"], "enabled") is None
        assert setting(off[f"local.d/{module}.conf"], "enabled") == "false"


def test_resolver_options(spam: SpamPaths) -> None:
    assert "dns {" not in files(spam)["local.d/options.inc"]

    options = files(
        spam, nameservers=("127.0.0.1:53", "[::1]:53"), dns_timeout=0.25, dns_retransmits=1
    )["local.d/options.inc"]
    block = options[options.index("dns {") :]
    assert 'nameserver = ["127.0.0.1:53", "[::1]:53"];' in block
    assert "timeout = 0.25s;" in block
    assert "retransmits = 1;" in block


def test_regex_cache_folder(spam: SpamPaths) -> None:
    assert setting(files(spam)["local.d/options.inc"], "hs_cache_dir") is None
    options = files(spam, cache_dir=Path("/var/cache/rspamd"))["local.d/options.inc"]
    assert setting(options, "hs_cache_dir") == '"/var/cache/rspamd/"'


def test_headers_for_every_message_on_port_25(spam: SpamPaths) -> None:
    headers = files(spam)["local.d/milter_headers.conf"]
    routines = re.findall(r'"([\w-]+)"', setting(headers, "use") or "")

    assert {"authentication-results", "x-spamd-result", "x-spam-status"} <= set(routines)
    # clients behind NAT show private addresses: headers for them too
    assert setting(headers, "skip_local") == "false"
    assert setting(headers, "remove_upstream_spam_flag") == "true"


def test_logs_go_to_stderr_without_a_time_stamp(spam: SpamPaths) -> None:
    logging = files(spam, log_level="notice")["local.d/logging.inc"]

    assert setting(logging, "type") == '"console"'
    assert setting(logging, "level") == '"notice"'
    assert setting(logging, "systemd") == "true"


def test_neural_is_off(spam: SpamPaths) -> None:
    assert setting(files(spam)["local.d/neural.conf"], "enabled") == "false"


def test_unsafe_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="spaces"):
        render_rspamd(spam_paths(Paths(Path("/srv/mail stack"))), RspamdOptions())
    with pytest.raises(ValueError, match="cannot put"):
        render_rspamd(spam_paths(Paths(Path("/srv/$HOME"))), RspamdOptions())


# -- Redis --------------------------------------------------------------------------------------


def redis_conf(spam: SpamPaths, options: RedisOptions | None = None) -> dict[str, str]:
    (rendered,) = render_redis(spam, options or RedisOptions())
    assert isinstance(rendered, RenderedFile)
    assert rendered.path == spam.redis_config
    return dict(line.split(" ", 1) for line in lines(rendered.content))


def test_redis_on_a_unix_socket_only(spam: SpamPaths) -> None:
    conf = redis_conf(spam)

    assert conf["port"] == "0"
    assert conf["unixsocket"] == str(spam.redis_socket)
    assert conf["daemonize"] == "no"
    assert conf["logfile"] == '""'


def test_redis_keeps_its_data_on_the_state_volume(spam: SpamPaths) -> None:
    conf = redis_conf(spam)

    assert conf["dir"] == str(spam.redis_data)
    assert conf["appendonly"] == "no"
    assert conf["save"]  # snapshots, and one at shutdown
    assert conf["stop-writes-on-bgsave-error"] == "no"


def test_redis_memory_is_capped(spam: SpamPaths) -> None:
    assert redis_conf(spam)["maxmemory"] == "128mb"
    assert redis_conf(spam, RedisOptions(maxmemory_mb=64))["maxmemory"] == "64mb"
    with pytest.raises(ValueError, match=r"^maxmemory_mb:"):
        RedisOptions(maxmemory_mb=1)


# -- the processes ------------------------------------------------------------------------------


def test_rspamd_process_waits_for_a_cold_start(spam: SpamPaths) -> None:
    env = {"PATH": "/usr/bin", "LOCAL_CONFDIR": "/etc/rspamd", "TZ": "UTC"}
    process = rspamd_process(spam, env)

    assert process.argv == rspamd_argv(spam)
    assert process.ready_timeout == RSPAMD_READY_TIMEOUT >= 90
    assert {p.target for p in process.probes} == {
        str(spam.milter_socket),
        str(spam.controller_socket),
        str(spam.normal_socket),
    }
    assert all(p.kind == "unix" for p in process.probes)
    assert process.env == {"PATH": "/usr/bin", "TZ": "UTC"}  # the command line sets paths
    # down, it only delays mail (Postfix answers 4xx): never takes IMAP down with it
    assert not process.critical


def test_redis_process(spam: SpamPaths) -> None:
    process = redis_process(spam, {"PATH": "/usr/bin"})

    assert process.argv == redis_argv(spam)
    assert [(p.kind, p.target) for p in process.probes] == [("unix", str(spam.redis_socket))]
    assert not process.critical


def test_bayes_is_per_user_at_delivery_and_off_at_the_mx(spam: SpamPaths) -> None:
    """The MX's scan (settings id `mx`) skips the statistics; Dovecot's per-recipient scan
    (`delivery`) runs only them; each user's statistics are their own; nothing autolearns."""
    files = {
        f.path.relative_to(spam.config).as_posix(): f.content
        for f in render_rspamd(spam, RspamdOptions(bayes_min_learns=5))
    }
    assert 'settings_id = "mx";' in files["local.d/worker-proxy.inc"]
    settings = files["local.d/settings.conf"]
    assert 'id = "mx";\n  apply { groups_disabled = ["statistics"]; }' in settings
    assert 'apply { symbols_enabled = ["BAYES_SPAM", "BAYES_HAM"]; }' in settings
    bayes = files["local.d/classifier-bayes.conf"]
    for line in ("per_user = true;", "min_learns = 5;", "autolearn = false;"):
        assert line in bayes.splitlines()
    with pytest.raises(ValueError, match="bayes_min_learns"):
        RspamdOptions(bayes_min_learns=0)
