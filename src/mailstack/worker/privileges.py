"""Give up root once every socket is bound."""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Sequence

from mailstack.runtime.orphans import die_with_parent

log = logging.getLogger(__name__)


def _group(name: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


class UnknownUserError(LookupError):
    """The system user to run as does not exist."""


def drop_privileges(user: str, extra_groups: Sequence[str] = ()) -> bool:
    """Become `user` (its primary and supplementary groups too, plus `extra_groups` that
    exist) if running as root.

    Returns whether anything changed: a worker started by an unprivileged account (a
    developer's own shell) simply keeps running as that account.
    """
    if os.geteuid() != 0:
        return False
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UnknownUserError(f"no system user {user!r} to run the worker as") from None
    os.initgroups(user, entry.pw_gid)
    extra = [found.gr_gid for found in map(_group, extra_groups) if found is not None]
    if extra:
        os.setgroups([*os.getgroups(), *extra])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.geteuid() == 0 or os.getuid() == 0:  # setuid must not be undoable
        raise PermissionError(f"could not give up root for {user!r}")
    die_with_parent()  # changing the user cleared it: end with the supervisor, as before
    log.info("running as %s (uid %d)", user, entry.pw_uid)
    return True
