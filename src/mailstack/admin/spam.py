"""`mailstack spam train|stats`: per-user spam training and what each user's statistics hold.

Run on the server (as root, like the supervisor's nightly job): they read the Maildirs and
talk to rspamd's controller and Redis over their Unix sockets under MAILSTACK_ROOT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import (
    AdminError,
    AsJson,
    Database,
    group,
    open_store,
    reporting,
    root_option,
    show,
)
from mailstack.errors import ExitCode
from mailstack.paths import Paths

app = group("Per-user spam training (rspamd's Bayes statistics, one set per user).")

Root = Annotated[
    Path, root_option("the running server's root (its Maildirs and rspamd's sockets).")
]


def _users(database: str | None, user: str | None) -> list[str]:
    with open_store(database) as store:
        known = [info.address for info in store.list_users()]
    if user is None:
        return known
    wanted = user.strip().lower()
    if wanted not in known:
        raise AdminError(f"no user {user!r}")
    return [wanted]


@app.command()
def train(
    user: Annotated[
        str | None,
        typer.Option("--user", metavar="ADDRESS", show_default=False, help="Only this user."),
    ] = None,
    as_json: AsJson = False,
    database: Database = None,
    root: Root = Path("/"),
) -> None:
    """Learn each user's Inbox as ham and Junk as spam, for that user only.

    Each message is learned once (rspamd remembers it): a second run learns nothing new.
    The server runs this every night (MAILSTACK_SPAM_TRAIN_AT)."""
    import asyncio  # here, as the modules below: `mailstack run` registers this command

    from mailstack.spam.controller import ControllerUnavailable
    from mailstack.spam.training import train_user

    paths = Paths(root)
    controller = spam_controller(paths)
    with reporting():
        users = _users(database, user)
        results = []
        try:
            for address in users:
                maildir = paths.maildir(address)
                results.append(asyncio.run(train_user(controller, address, maildir)).as_dict())
        except ControllerUnavailable as exc:
            raise AdminError(f"rspamd cannot learn now: {exc}", ExitCode.TEMPFAIL) from None
    keys = ["spam_learned", "spam_already", "ham_learned", "ham_already", "skipped"]
    show(
        as_json,
        results,
        ["USER", *(key.upper() for key in keys)],
        [[str(r["user"]), *(str(r[key]) for key in keys)] for r in results],
        "no users",
    )


@app.command()
def stats(
    user: Annotated[
        str, typer.Argument(metavar="ADDRESS", help="The user, e.g. alice@example.com.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    root: Root = Path("/"),
) -> None:
    """How many messages USER's statistics learned as spam and ham, and whether their Bayes
    classifier is active (rspamd needs min_learns of each class first)."""
    from mailstack.render.rspamd import spam_paths
    from mailstack.spam.statistics import StatisticsUnavailable, min_learns, user_statistics

    spam = spam_paths(Paths(root))
    with reporting():
        try:
            minimum = min_learns(spam.config / "local.d" / "classifier-bayes.conf")
        except (OSError, ValueError) as exc:
            raise AdminError(f"spam filtering is not set up under {root}: {exc}") from None
        try:
            found = user_statistics(spam.redis_socket, user, minimum)
        except StatisticsUnavailable as exc:
            raise AdminError(f"cannot read statistics: {exc}", ExitCode.TEMPFAIL) from None
    if as_json:
        typer.echo(json.dumps(found.as_dict()))
        return
    state = "active" if found.active else f"inactive (needs {found.min_learns} of each)"
    typer.echo(f"{found.user}: spam {found.spam}, ham {found.ham}; classifier {state}")


@app.command("set")
def set_spam(
    user: Annotated[
        str, typer.Argument(metavar="ADDRESS", help="The user, e.g. alice@example.com.")
    ],
    threshold: Annotated[
        int | None,
        typer.Option(
            "--threshold",
            metavar="N",
            show_default=False,
            help="File mail into Junk from this rspamd score on (a whole number), instead of "
            "MAILSTACK_SPAM_JUNK_SCORE.",
        ),
    ] = None,
    server_threshold: Annotated[
        bool, typer.Option("--server-threshold", help="Use MAILSTACK_SPAM_JUNK_SCORE again.")
    ] = False,
    off: Annotated[
        bool, typer.Option("--off", help="Deliver spam to the Inbox (nothing goes to Junk).")
    ] = False,
    on: Annotated[bool, typer.Option("--on", help="File spam into Junk again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    database: Database = None,
) -> None:
    """Set USER's own spam filing; applies to the next message delivered, no restart.

    Mail the MX refuses (MAILSTACK_SPAM_REJECT_SCORE) is refused for everyone."""
    from mailstack.store import UNCHANGED

    if off and on:
        raise typer.BadParameter("give --off or --on, not both")
    if threshold is not None and server_threshold:
        raise typer.BadParameter("give --threshold or --server-threshold, not both")
    chosen = None if server_threshold else (UNCHANGED if threshold is None else threshold)
    with open_store(database) as store:
        found = store.set_spam(user, threshold=chosen, enabled=(not off) if off or on else None)
    record = {"user": found.address, "threshold": found.threshold, "filter": found.filter}
    if as_json:
        typer.echo(json.dumps(record))
        return
    limit = "the server's" if found.threshold is None else str(found.threshold)
    typer.echo(
        f"{found.address}: spam into Junk {'on' if found.filter else 'off'}, threshold {limit}"
    )


def spam_controller(paths: Paths) -> Path:
    from mailstack.render.rspamd import spam_paths

    return spam_paths(paths).controller_socket
