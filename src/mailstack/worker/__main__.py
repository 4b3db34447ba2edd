"""`python -m mailstack.worker`: run the profile's Python services until SIGTERM or SIGINT.

The supervisor passes the datastore URL in MAILSTACK_DATABASE_URL (never argv: it may hold
a password) and one option per service; a service without its option is not started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailstack.errors import ExitCode, MailstackError
from mailstack.worker.acme import add_acme_arguments

if TYPE_CHECKING:
    from mailstack.mtasts.service import MtaStsService

log = logging.getLogger("mailstack.worker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mailstack.worker", description=__doc__)
    parser.add_argument("--database", help="URL or SQLite path (default: MAILSTACK_DATABASE_URL)")
    parser.add_argument("--socketmap", help="lookup service for Postfix: unix:PATH or inet:H:P")
    parser.add_argument("--dict", help="lookup service for Dovecot: unix:PATH")
    parser.add_argument(
        "--sieve-dict", help="sieve scripts for Dovecot, apart from --dict (passwords): unix:PATH"
    )
    parser.add_argument("--socket-mode", default="660", help="octal mode of Unix sockets")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per store read")
    parser.add_argument("--sender-milter", type=Path, help="submission's From check: PATH")
    parser.add_argument("--greylist", type=Path, help="the MX's greylisting policy: PATH")
    parser.add_argument("--greylist-delay", type=int, default=300, help="seconds")
    parser.add_argument("--greylist-autoallow", type=int, default=5, help="retries, 0: never")
    parser.add_argument("--greylist-allow-network", action="append", default=[], help="repeat")
    parser.add_argument("--greylist-allow-domain", action="append", default=[], help="repeat")
    parser.add_argument("--api", action="store_true", help="the REST API at /api/v1 on HTTPS")
    parser.add_argument("--webui", action="store_true", help="the users' web UI at / on HTTPS")
    parser.add_argument("--dkim-keys", type=Path, help="the DKIM key folder (for the API)")
    parser.add_argument("--dkim-selector", default="mail", help="DKIM_SELECTOR (for the API)")
    parser.add_argument(
        "--dkim-sync-request", type=Path, help="file asking the supervisor for `dkim sync`"
    )
    parser.add_argument(
        "--queue-delete-request", type=Path, help="file asking the supervisor for postsuper -d"
    )
    parser.add_argument(
        "--dkim-rotation-request", type=Path, help="file asking the supervisor for a DKIM step"
    )
    parser.add_argument("--dkim-rotate-selector", help="MAILSTACK_DKIM_ROTATE_SELECTOR")
    parser.add_argument("--dkim-nameserver", help="ADDR[:PORT] checking DKIM records (API)")
    parser.add_argument(
        "--postfix-queue", type=Path, help="Postfix's queue folder: the API lists its queue"
    )
    parser.add_argument(
        "--delivery-log", type=Path, help="the users' delivery log folder (API and web UI)"
    )
    parser.add_argument("--spam-spool", type=Path, help="messages users moved, to learn: DIR")
    parser.add_argument("--rspamd-controller", type=Path, help="rspamd's controller socket")
    parser.add_argument("--managesieve", help="ManageSieve listener, address:port")
    parser.add_argument("--cert", type=Path, help="TLS certificate (PEM) of the TLS listeners")
    parser.add_argument("--key", type=Path, help="TLS private key (PEM)")
    parser.add_argument("--xoauth2", type=Path, help="the relay's XOAUTH2 hop: its config file")
    parser.add_argument("--user", help="system user to become once every socket is bound")
    sts = parser.add_argument_group("outbound MTA-STS")
    sts.add_argument("--mta-sts", type=Path, help="the policy map for Postfix: unix socket PATH")
    sts.add_argument("--mta-sts-cache", type=Path, help="the policy cache: a JSON file")
    sts.add_argument("--mta-sts-ca-file", type=Path, help="trust for policy hosts (PEM)")
    sts.add_argument("--nameserver", action="append", default=[], help="ADDR[:PORT], repeat")
    sts.add_argument(
        "--dane-resolver", help="validating resolver ADDR[:PORT]: DANE wins over MTA-STS"
    )
    web = parser.add_argument_group("web listeners")
    web.add_argument("--http", help="HTTP listener (challenges, MTA-STS, autoconfig): address:port")
    web.add_argument("--https", help="HTTPS listener (needs --cert and --key): address:port")
    web.add_argument("--hostname", default="localhost", help="the server's name (MX, clients)")
    web.add_argument("--mta-sts-mode", default="testing", help="testing, enforce or none")
    web.add_argument(
        "--client-port", action="append", default=[], help="NAME=PORT of a mail client listener"
    )
    add_acme_arguments(parser)
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="the datastore was unreachable at start: keep trying to migrate it",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from mailstack.settings.values import parse_listen
    from mailstack.worker.privileges import drop_privileges
    from mailstack.worker.services import (
        Greylisting,
        GreylistOptions,
        Lookup,
        LookupEndpoints,
        ManageSieve,
        SenderCheck,
        Service,
        XOAuth2,
        server_tls_context,
        tls_reloader,
    )

    mode = int(args.socket_mode, 8)
    services: list[Service] = []
    if args.xoauth2:
        services.append(XOAuth2(args.xoauth2))
    if args.mta_sts:
        services.append(mta_sts_service(args, mode))
    needs_store = bool(
        args.socketmap or args.dict or args.managesieve or args.greylist or args.http or args.https
    )
    # the supervisor migrated the schema before starting us: no Alembic in this process
    engine = None
    lookup: Lookup | None = None
    if needs_store:
        from mailstack.store.engine import create_engine_for

        engine = create_engine_for(args.database)
    if engine is not None and (args.socketmap or args.dict):
        from mailstack.lookup.service import Endpoint

        endpoints = LookupEndpoints(
            socketmap=Endpoint.parse(args.socketmap, mode) if args.socketmap else None,
            dict=Endpoint.parse(args.dict, mode) if args.dict else None,
            timeout=args.timeout,
            sieve_dict=Endpoint.parse(args.sieve_dict, mode) if args.sieve_dict else None,
        )
        lookup = Lookup(engine, endpoints)
        services.append(lookup)  # started first, stopped last: the milter uses its gateway
        if args.sender_milter:
            services.append(SenderCheck(lookup, args.sender_milter, mode))
    if engine is not None and args.greylist:
        networks = tuple(args.greylist_allow_network)
        domains = tuple(args.greylist_allow_domain)
        options = GreylistOptions(args.greylist_delay, args.greylist_autoallow, networks, domains)
        services.append(Greylisting(engine, args.greylist, mode, options))
    # one context for every Python TLS listener, so that a renewed certificate reaches all
    context = server_tls_context(args.cert, args.key) if args.cert and args.key else None
    if engine is not None and args.managesieve:
        if context is None:
            raise ValueError("--managesieve needs --cert and --key")
        services.append(ManageSieve(engine, parse_listen(args.managesieve), context))
    if args.spam_spool:
        if args.rspamd_controller is None:
            raise ValueError("--spam-spool needs --rspamd-controller")
        from mailstack.spam.learner import SpamLearner

        services.append(SpamLearner(args.spam_spool, args.rspamd_controller))
    if engine is not None and (args.http or args.https):
        from mailstack.worker.web import web_services

        gateway = lookup.service.gateway if lookup is not None else None
        services += web_services(args, engine, gateway, context)
    if args.acme_email:
        from mailstack.worker.acme import acme_renewer

        services.append(acme_renewer(args, context, os.environ))
    if not services:
        raise ValueError(
            "no service to run: give --socketmap, --dict, --managesieve, --mta-sts or --xoauth2"
        )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # SIGHUP: the certificate files changed (the supervisor saw it): load them again
    loop.add_signal_handler(signal.SIGHUP, tls_reloader(context, args.cert, args.key))
    started: list[Service] = []
    try:
        # Root was needed only to read the TLS keys above; every socket lives in a folder
        # or on a port the worker's user may use, and files it creates (token files) are its.
        if args.user:
            # postdrop: Postfix's public/ folder, where showq lists the queue for the API
            drop_privileges(args.user, ["postdrop"] if args.postfix_queue else [])
        for service in services:
            await service.start()
            started.append(service)
        log.info("serving %s", ", ".join(s.name for s in started))
        if args.migrate and engine is not None:
            from mailstack.worker.migration import migrate_when_reachable

            migration = asyncio.create_task(migrate_when_reachable(engine, stopping))
        await stopping.wait()
        if args.migrate and engine is not None:
            migration.cancel()
        log.info("stopping")
    finally:
        for service in reversed(started):
            await service.stop()
        if engine is not None:
            engine.dispose()


def mta_sts_service(args: argparse.Namespace, mode: int) -> MtaStsService:
    from mailstack.mtasts.service import MtaStsOptions, MtaStsService
    from mailstack.settings.values import parse_nameserver

    nameservers = tuple(parse_nameserver(text) for text in args.nameserver)
    cache, ca_file = args.mta_sts_cache, args.mta_sts_ca_file
    dane = parse_nameserver(args.dane_resolver) if args.dane_resolver else None
    options = MtaStsOptions(args.mta_sts, cache, nameservers, ca_file, mode, dane_resolver=dane)
    return MtaStsService(options)


def main(argv: list[str] | None = None) -> int:
    # `LEVEL logger: text`: the supervisor reads the level back (logparse.parse_worker_line)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
    )
    # aiosmtpd logs every SMTP command (addresses included) at INFO: keep only its problems
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (MailstackError, ValueError, OSError, LookupError) as exc:
        log.error("worker failed: %s", exc)
        return int(getattr(exc, "exit_code", ExitCode.UNAVAILABLE))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
