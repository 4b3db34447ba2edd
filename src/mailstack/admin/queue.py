"""`mailstack queue delete`: remove messages from Postfix's queue, as root.

The REST API and the web UI only list and flush (the worker is not root); their deletes
come here through the supervisor (`--requested`, see mailstack.mailqueue.requests). Run
by hand, it is `postsuper -d` that accepts Postfix queue ids only (never `ALL`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import fail, group, reporting, root_option
from mailstack.errors import ExitCode
from mailstack.paths import Paths

app = group("Postfix's mail queue (as root). List it with `postqueue -p` or the REST API.")

_REMOVED = re.compile(r"postsuper: (\S+): removed")

Root = Annotated[Path, root_option("Postfix's configuration is DIR/etc/postfix.")]


@app.command("delete")
def delete(
    queue_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="Queue ids as `postqueue -p` shows them."),
    ] = None,
    requested: Annotated[
        bool,
        typer.Option(
            "--requested",
            help="Delete what the REST API and the web UI asked for (the server runs this).",
        ),
    ] = False,
    root: Root = Path("/"),
) -> None:
    """Delete queued messages without a bounce (postsuper -d). Exit 1 if one is not queued."""
    from mailstack.mailqueue.ids import check_queue_id
    from mailstack.mailqueue.requests import postsuper_delete, take_requested

    paths = Paths(root)
    given = list(queue_ids or [])
    if requested == bool(given):
        fail("give queue ids, or --requested", ExitCode.USAGE)
    with reporting():
        ids = [check_queue_id(queue_id, "ID") for queue_id in given]
    if os.geteuid() != 0:
        fail("only root may delete queued mail (postsuper -d)", ExitCode.FAILURE)
    try:
        if requested:  # a folder swapped for a link: ELOOP, an OSError
            ids = take_requested(paths.queue_delete_request)
        output = postsuper_delete(paths.postfix_config, ids)
    except OSError as exc:
        fail(str(exc), ExitCode.FAILURE)
    removed = set(_REMOVED.findall(output))
    for queue_id in ids:
        typer.echo(f"{queue_id}: {'deleted' if queue_id in removed else 'not in the queue'}")
    if not requested and removed != set(ids):
        raise typer.Exit(ExitCode.FAILURE)
