"""`python -m mailstack.lookup`: run the lookup service until SIGTERM or SIGINT.

The supervisor starts it with the database URL in MAILSTACK_DATABASE_URL (or --database)
and one endpoint per protocol. Each endpoint's real address is logged once it listens,
so port 0 can be used and read back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from mailstack.errors import ExitCode, MailstackError

log = logging.getLogger("mailstack.lookup")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mailstack.lookup", description=__doc__)
    parser.add_argument("--database", help="URL or SQLite path (default: MAILSTACK_DATABASE_URL)")
    parser.add_argument(
        "--socketmap", default="unix:/run/mailstack/lookup.sock", help="unix:PATH or inet:HOST:PORT"
    )
    parser.add_argument("--dict", default="unix:/run/mailstack/dict.sock", help="unix:PATH")
    parser.add_argument(
        "--socket-mode", default="660", help="octal mode of Unix sockets (default 660)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per store read")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from mailstack.lookup.service import Endpoint, LookupService
    from mailstack.store.engine import create_engine_for

    mode = int(args.socket_mode, 8)
    service = LookupService(
        create_engine_for(args.database),
        socketmap=Endpoint.parse(args.socketmap, mode) if args.socketmap else None,
        dict=Endpoint.parse(args.dict, mode) if args.dict else None,
        timeout=args.timeout,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await service.start()
    try:
        await stopping.wait()
        log.info("stopping")
    finally:
        await service.stop()
        service.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (MailstackError, ValueError, OSError) as exc:
        log.error("lookup service failed: %s", exc)
        return int(getattr(exc, "exit_code", ExitCode.UNAVAILABLE))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
