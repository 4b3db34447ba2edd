"""The `mailstack` command line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from mailstack import __version__
from mailstack.errors import ConfigError, DaemonError, ExitCode, MailstackError
from mailstack.log import configure_logging, register_secret
from mailstack.paths import Paths
from mailstack.settings import RelaySettings, load_relay_settings

if TYPE_CHECKING:
    from mailstack.runtime.plan import Plan

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mailstack: a boky/postfix-compatible mail relay (and more) run by Python.",
)
log = logging.getLogger("mailstack")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailstack {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Configure everything from environment variables; see README.md for every setting."""


def _load(notices: list[str]) -> RelaySettings:
    return load_relay_settings(os.environ, notices)


def _fallback_logging() -> None:
    fmt = os.environ.get("LOG_FORMAT", "plain").strip().lower()
    configure_logging("json" if fmt == "json" else "plain")


@app.command()
def check(profile: Profile = "relay") -> None:
    """Validate the settings only; list every problem; exit 78 if there is any."""
    from mailstack.settings.server import load_server_settings

    name = _check_profile(profile)
    try:
        settings = load_server_settings(os.environ) if name == "server" else _load([])
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in the configuration", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    typer.echo(f"configuration OK ({name}, root {settings.root})")


@app.command()
def render(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
) -> None:
    """Write every generated configuration file under OUT; start nothing."""
    from mailstack.render.opendkim import render_opendkim
    from mailstack.render.postfix import render_postfix
    from mailstack.runtime.files import write_atomic
    from mailstack.runtime.prepare import signing_keys

    try:
        settings = _load([])
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    paths = Paths(settings.root)
    keys = signing_keys(settings, paths)
    files = render_postfix(settings, paths, bool(keys)) + render_opendkim(
        settings, paths, keys, log_why=settings.inbound_debugging
    )
    for item in files:
        target = out / item.path.relative_to(paths.root)
        write_atomic(target, item.content, item.mode)
        typer.echo(str(target))


Profile = Annotated[
    str,
    typer.Option(
        "--profile",
        envvar="MAILSTACK_PROFILE",
        help="relay (the boky/postfix-compatible relay) or server (MX, IMAP, Sieve).",
    ),
]
PROFILES = ("relay", "server")


def _check_profile(profile: str) -> str:
    name = profile.strip().lower()
    if name not in PROFILES:
        _fallback_logging()
        log.error("bad setting MAILSTACK_PROFILE: must be relay or server (got %r)", profile)
        raise typer.Exit(ExitCode.CONFIG)
    return name


@app.command()
def run(profile: Profile = "relay") -> None:
    """Validate, configure and run mailstack in the foreground until SIGTERM/SIGINT."""
    if _check_profile(profile) == "server":
        _run_server()
        return
    from mailstack.runtime.prepare import prepare
    from mailstack.runtime.relay import relay_plan, relay_secrets

    notices: list[str] = []
    try:
        settings = _load(notices)
    except ConfigError as exc:
        _config_failure(exc)
    configure_logging(settings.log_format, settings.force_color)
    for secret in relay_secrets(settings):
        register_secret(secret)
    for notice in notices:
        log.warning("%s", notice)
    log.info("mailstack %s starting (relay profile, root %s)", __version__, settings.root)
    paths = Paths(settings.root)
    _start(lambda: relay_plan(settings, paths, prepare(settings, paths)))


def _config_failure(exc: ConfigError) -> NoReturn:
    _fallback_logging()
    for problem in exc.problems:
        log.error("bad setting %s", problem)
    log.error("not starting: %d problem(s) in the configuration", len(exc.problems))
    raise typer.Exit(ExitCode.CONFIG) from None


def _start(make_plan: Callable[[], Plan]) -> NoReturn:
    """Prepare and plan here, then hand over to the lean supervisor (same process id)."""
    from mailstack.runtime.supervise import exec_supervisor

    try:
        plan = make_plan()
    except DaemonError as exc:
        for line in exc.log_tail:
            log.error("%s last words: %s", exc.name, line)
        log.error("stopping: %s", exc)
        raise typer.Exit(exc.exit_code) from None
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("bad setting %s", problem)
        raise typer.Exit(exc.exit_code) from None
    except MailstackError as exc:
        log.error("stopping: %s", exc)
        raise typer.Exit(exc.exit_code) from None
    exec_supervisor(plan)


def _run_server() -> None:
    from mailstack.runtime.server import prepare_server, server_plan
    from mailstack.settings.server import load_server_settings

    try:
        settings = load_server_settings(os.environ)
    except ConfigError as exc:
        _config_failure(exc)
    configure_logging(settings.log_format, settings.force_color)
    password = settings.relayhost_password
    register_secret(password.get_secret_value() if password else None)
    log.info("mailstack %s starting (server profile, root %s)", __version__, settings.root)
    paths = Paths(settings.root)
    _start(lambda: server_plan(settings, paths, prepare_server(settings, paths)))


@app.command()
def health(profile: Profile = "relay") -> None:
    """Exit 0 when Postfix answers EHLO on the submission listener and, with DKIM on, the
    OpenDKIM milter accepts a connection (server: also the lookup service and Dovecot)."""
    import asyncio  # here: `mailstack run` need not load it before it execs the supervisor

    from mailstack.runtime.prepare import signing_keys
    from mailstack.runtime.probes import smtp_ready, unix_socket_accepts

    if _check_profile(profile) == "server":
        _server_health()
        return
    try:
        settings = _load([])
    except ConfigError as exc:
        typer.echo(f"unhealthy: bad configuration: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    paths = Paths(settings.root)
    if not asyncio.run(smtp_ready(settings.listen_submission, helo="health.mailstack")):
        typer.echo(f"unhealthy: no SMTP service on {settings.listen_submission}", err=True)
        raise typer.Exit(ExitCode.FAILURE)
    if signing_keys(settings, paths) and not unix_socket_accepts(paths.opendkim_socket):
        typer.echo(f"unhealthy: DKIM milter not answering on {paths.opendkim_socket}", err=True)
        raise typer.Exit(ExitCode.FAILURE)
    typer.echo("healthy")


def _server_health() -> None:
    import asyncio

    from mailstack.runtime.server import server_problems
    from mailstack.settings.server import load_server_settings

    try:
        settings = load_server_settings(os.environ)
    except ConfigError as exc:
        typer.echo(f"unhealthy: bad configuration: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    problems = asyncio.run(server_problems(settings, Paths(settings.root)))
    for problem in problems:
        typer.echo(f"unhealthy: {problem}", err=True)
    if problems:
        raise typer.Exit(ExitCode.FAILURE)
    typer.echo("healthy")


def _read_env_file() -> None:
    """The settings `mailstack init` wrote, under whatever the environment sets itself."""
    from mailstack.settings.envfile import apply_env_file

    try:
        apply_env_file(os.environ)
    except MailstackError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)


def main() -> None:
    _read_env_file()
    if sys.argv[1:2] != ["run"]:
        # the admin commands' modules load only where they can be asked for: `mailstack run`
        # would wait for them before its first banner
        from mailstack.admin import register as register_admin

        register_admin(app)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
