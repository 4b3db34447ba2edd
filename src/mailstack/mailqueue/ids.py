"""Postfix queue ids, checked strictly before one goes near `postsuper`.

A queue id ends up in a file name the worker writes and as an argument of a command root
runs, so only Postfix's two shapes pass (mail_queue.h):

- short (the default): the microseconds as 5 upper-case hex digits, then the queue file's
  inode number in hex (`4C3F81A2B7`);
- long (`enable_long_queue_ids = yes`): the seconds (6 or more characters) and microseconds
  (exactly 4) in a base-52 alphabet without vowels, a `z`, then the inode number in the
  same alphabet without `z` (`3Pt2mN2VXxznjll`).

Nothing else: not `ALL` (which postsuper would take as every message), no path, no space.
"""

from __future__ import annotations

import re

from mailstack.errors import InvalidInput

MAX_LENGTH = 40
_SHORT = r"[0-9A-F]{6,24}"
_BASE52 = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z"  # digits and consonants
_BASE51 = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y"  # the same without z, the separator
_LONG = rf"[{_BASE52}]{{10,20}}z[{_BASE51}]{{1,16}}"
_QUEUE_ID = re.compile(rf"(?:{_SHORT}|{_LONG})")


def is_queue_id(text: str) -> bool:
    return len(text) <= MAX_LENGTH and _QUEUE_ID.fullmatch(text) is not None


def check_queue_id(text: str, field: str = "queue_id") -> str:
    """`text` if it is a Postfix queue id, else InvalidInput naming `field`."""
    if not is_queue_id(text):
        raise InvalidInput(field, f"{text[:50]!r} is not a Postfix queue id")
    return text
