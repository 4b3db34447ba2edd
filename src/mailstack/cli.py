"""The `mailstack` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mailstack import __version__
from mailstack.admin import register as register_admin
from mailstack.errors import ConfigError, DaemonError, ExitCode, MailstackError
from mailstack.log import configure_logging, register_secret
from mailstack.paths import Paths
from mailstack.settings import RelaySettings, load_relay_settings

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
    files = render_postfix(settings, paths, bool(keys)) + render_opendkim(settings, paths, keys)
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
    from mailstack.runtime.supervisor import Supervisor

    notices: list[str] = []
    try:
        settings = _load(notices)
    except ConfigError as exc:
        _config_failure(exc)
    configure_logging(settings.log_format, settings.force_color)
    for secret in (
        settings.relayhost_password,
        settings.xoauth2_client_id,
        settings.xoauth2_secret,
        settings.xoauth2_initial_access_token,
        settings.xoauth2_initial_refresh_token,
    ):
        register_secret(secret.get_secret_value() if secret else None)
    for notice in notices:
        log.warning("%s", notice)
    log.info("mailstack %s starting (relay profile, root %s)", __version__, settings.root)
    paths = Paths(settings.root)

    async def supervise() -> int:
        prepared = prepare(settings, paths)
        return await Supervisor(settings, paths, prepared).run()

    _supervise(supervise)


def _config_failure(exc: ConfigError) -> NoReturn:
    _fallback_logging()
    for problem in exc.problems:
        log.error("bad setting %s", problem)
    log.error("not starting: %d problem(s) in the configuration", len(exc.problems))
    raise typer.Exit(ExitCode.CONFIG) from None


def _supervise(supervise: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run the supervisor; turn mailstack's errors into one log line and an exit code."""
    try:
        code = asyncio.run(supervise())
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
    log.info("stopped")
    raise typer.Exit(code)


def _run_server() -> None:
    from mailstack.runtime.server import ServerSupervisor, prepare_server
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

    async def supervise() -> int:
        prepared = prepare_server(settings, paths)
        return await ServerSupervisor(settings, paths, prepared).run()

    _supervise(supervise)


@app.command()
def health(profile: Profile = "relay") -> None:
    """Exit 0 when Postfix answers EHLO on the submission listener and, with DKIM on, the
    OpenDKIM milter accepts a connection (server: also the lookup service and Dovecot)."""
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


register_admin(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
