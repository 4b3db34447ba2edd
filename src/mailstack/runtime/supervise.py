"""`python -m mailstack.runtime.supervise --plan-fd N`: the long-running supervisor.

`mailstack run` prepares everything, writes the plan (`runtime.plan`) into an anonymous
in-memory file and replaces itself with this program, keeping its process id. What stays
in memory for the life of the stack is asyncio, the daemons' log pipeline and the plan: no
pydantic, typer, cryptography or SQLAlchemy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import NoReturn

from mailstack.errors import DaemonError, MailstackError
from mailstack.log import configure_logging, register_secret
from mailstack.runtime.plan import Plan, dump, load
from mailstack.runtime.supervisor import Supervisor

log = logging.getLogger("mailstack")


def exec_supervisor(plan: Plan) -> NoReturn:
    """Replace this process with the lean supervisor running `plan` (same pid, same stdio)."""
    fd = os.memfd_create("mailstack-plan", 0)  # no MFD_CLOEXEC: the new program reads it
    data = dump(plan)
    while data:
        data = data[os.write(fd, data) :]
    os.lseek(fd, 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "mailstack.runtime.supervise", "--plan-fd", str(fd)]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, argv list, no shell


def read_plan(fd: int) -> Plan:
    with os.fdopen(fd, "rb") as handle:
        return load(handle.read())


def run(plan: Plan) -> int:
    """Supervise until stopped; mailstack's errors become one log line and an exit code."""
    try:
        code = asyncio.run(Supervisor(plan).run())
    except DaemonError as exc:
        for line in exc.log_tail:
            log.error("%s last words: %s", exc.name, line)
        log.error("stopping: %s", exc)
        return int(exc.exit_code)
    except MailstackError as exc:
        log.error("stopping: %s", exc)
        return int(exc.exit_code)
    log.info("stopped")
    return int(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailstack.runtime.supervise")
    parser.add_argument("--plan-fd", type=int, required=True, help="file descriptor of the plan")
    args = parser.parse_args(argv)
    plan = read_plan(args.plan_fd)
    configure_logging(plan.log_format, plan.force_color)
    for secret in plan.secrets:
        register_secret(secret)
    return run(plan)


if __name__ == "__main__":
    sys.exit(main())
