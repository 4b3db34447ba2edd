"""`python -m mailstack.managesieve`: the ManageSieve service as its own process.

The server profile's supervisor starts it like this; the datastore URL comes from
MAILSTACK_DATABASE_URL (an environment variable, not argv: it may hold a password).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from mailstack.errors import ExitCode, MailstackError
from mailstack.settings.values import parse_listen

log = logging.getLogger("mailstack.managesieve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mailstack.managesieve", description=__doc__)
    parser.add_argument("--listen", default="0.0.0.0:4190", help="address:port")
    parser.add_argument("--cert", required=True, help="TLS certificate (PEM) for STARTTLS")
    parser.add_argument("--key", required=True, help="TLS private key (PEM)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from mailstack.managesieve.server import ManageSieveServer
    from mailstack.store import MailStore, create_engine_for

    address = parse_listen(args.listen)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    # the supervisor migrated the schema before starting us: no Alembic in this process
    store = MailStore(create_engine_for(None))
    server = ManageSieveServer(store, ssl_context=context)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await server.start(address.host, address.port)
    log.info("ManageSieve listening on %s", address)
    try:
        await stopping.wait()
    finally:
        await server.stop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (MailstackError, ValueError, OSError) as exc:
        log.error("ManageSieve service failed: %s", exc)
        return int(getattr(exc, "exit_code", ExitCode.UNAVAILABLE))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
