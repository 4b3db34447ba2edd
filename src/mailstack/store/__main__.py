"""`python -m mailstack.store domains`: migrate the datastore, print its hosted domains.

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
    from mailstack.store import MailStore, StoreError

    try:
        store = MailStore.open()  # MAILSTACK_DATABASE_URL
        try:
            names = [domain.name for domain in store.list_domains()]
        finally:
            store.close()
    except StoreError as exc:
        print(f"datastore: {exc}", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    print("\n".join(names))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
