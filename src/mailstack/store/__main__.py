"""`python -m mailstack.store domains`: migrate the datastore, print its hosted domains.

Exit 75 when the database cannot be reached (the server starts anyway and answers 4xx),
78 when its URL is wrong.

The server's supervisor asks this in a short-lived child at start-up, so that SQLAlchemy and
Alembic (about 30 MiB) never load into the long-running supervisor process.
"""

from __future__ import annotations

import logging
import sys

from mailstack.errors import ExitCode


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["domains"]:
        print("usage: python -m mailstack.store domains", file=sys.stderr)
        return int(ExitCode.USAGE)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mailstack.errors import InvalidInput
    from mailstack.store import MailStore, StoreError, StoreUnavailable

    try:
        store = MailStore.open()  # MAILSTACK_DATABASE_URL
        try:
            names = [domain.name for domain in store.list_domains()]
        finally:
            store.close()
    except StoreUnavailable as exc:  # down or unreachable: worth retrying
        print(f"datastore: {exc}", file=sys.stderr)
        return int(ExitCode.TEMPFAIL)
    except (StoreError, InvalidInput) as exc:  # a bad URL, say: retrying will not help
        print(f"datastore: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    print("\n".join(names))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
