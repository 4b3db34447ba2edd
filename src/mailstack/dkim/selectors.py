"""Each domain's DKIM selectors and their states: key rotation in the server profile.

A domain that was never rotated has no state file: `<domain>.private` signs under the
selector DKIM_SELECTOR gives it (the boky/postfix layout, unchanged). `mailstack dkim rotate`
writes `selectors/<domain>.json` beside the keys, and from then on that file says which
selector signs (active), which waits for its DNS record (pending) and which stay published
for mail still in flight (retiring). New keys go to `selectors/<domain>/<selector>.private`,
outside the `*.private` glob the relay (and boky/postfix) read, so they never sign there.

The state file is the one commit point: a key file is written before the file names it and
removed only after the file stops naming it, so a crash in between leaves a spare file,
never a selector without its key.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import count
from pathlib import Path

from mailstack.dkim.keys import DomainKey
from mailstack.errors import MailstackError

STATE_FOLDER = "selectors"
STATE_VERSION = 1
#: how long a retiring selector's record should stay published: Postfix retries a message
#: for 5 days (maximal_queue_lifetime), and receivers may verify later still
RETIRE_AFTER = timedelta(days=7)


class State(StrEnum):
    ACTIVE = "active"  # signs the domain's mail
    PENDING = "pending"  # made by `rotate`; signs once its record is published and activated
    RETIRING = "retiring"  # signed before; its record stays published until `retire`


class SelectorError(MailstackError):
    """A rotation step that does not fit the domain's selectors, or a bad state file."""


class UnknownSelector(SelectorError):
    """The domain has no such selector."""


@dataclass(frozen=True)
class SelectorKey:
    """One selector of a domain: its state since when, and its private key file (relative
    to the key folder)."""

    selector: str
    state: State
    key: str
    since: datetime

    def private_key(self, keys_dir: Path) -> Path:
        return keys_dir / self.key

    def advice(self, domain: str) -> str:
        """The state, and what to do about it, in a few words."""
        if self.state is State.PENDING:
            return f"pending: publish it, then `mailstack dkim activate {domain} {self.selector}`"
        if self.state is State.RETIRING:
            until = (self.since + RETIRE_AFTER).date()
            return (
                f"retiring since {self.since.date()}: keep it published until {until}, then "
                f"`mailstack dkim retire {domain} {self.selector}`"
            )
        return "active"

    def public_record(self, keys_dir: Path) -> Path:
        """The `.txt` beside the key: the record, readable by users who may not read the key."""
        return self.private_key(keys_dir).with_suffix(".txt")


@dataclass(frozen=True)
class DomainSelectors:
    """A domain's selectors: exactly one active, at most one pending, any retiring."""

    domain: str
    keys: tuple[SelectorKey, ...]

    @property
    def active(self) -> SelectorKey:
        return next(k for k in self.keys if k.state is State.ACTIVE)

    @property
    def pending(self) -> SelectorKey | None:
        return next((k for k in self.keys if k.state is State.PENDING), None)

    @property
    def selectors(self) -> list[str]:
        return [k.selector for k in self.keys]

    def get(self, selector: str) -> SelectorKey:
        for key in self.keys:
            if key.selector == selector:
                return key
        known = ", ".join(f"{k.selector} ({k.state})" for k in self.keys)
        raise UnknownSelector(f"{self.domain} has no selector {selector!r}; it has {known}")

    def rotated(self, selector: str, now: datetime) -> DomainSelectors:
        """With a new pending selector, whose key is `selector_key(domain, selector)`."""
        if (waiting := self.pending) is not None:
            raise SelectorError(
                f"{self.domain} already has a pending selector {waiting.selector}: activate "
                f"it (`mailstack dkim activate {self.domain} {waiting.selector}`) or drop it "
                f"(`mailstack dkim retire {self.domain} {waiting.selector}`) first"
            )
        if selector in self.selectors:
            raise SelectorError(f"{self.domain} already has a selector {selector!r}")
        new = SelectorKey(selector, State.PENDING, selector_key(self.domain, selector), now)
        return replace(self, keys=(*self.keys, new))

    def activated(self, selector: str, now: datetime) -> DomainSelectors:
        """`selector` (pending, or retiring to roll back) signs; the active one retires."""
        chosen = self.get(selector)
        if chosen.state is State.ACTIVE:
            raise SelectorError(f"{selector} already signs {self.domain}'s mail")
        keys = []
        for key in self.keys:
            if key.selector == selector:
                key = replace(key, state=State.ACTIVE, since=now)
            elif key.state is State.ACTIVE:
                key = replace(key, state=State.RETIRING, since=now)
            keys.append(key)
        return replace(self, keys=tuple(keys))

    def retired(self, selector: str) -> DomainSelectors:
        """Without `selector` (retiring, or pending to give it up)."""
        if self.get(selector).state is State.ACTIVE:
            raise SelectorError(
                f"{selector} signs {self.domain}'s mail: activate another selector first"
            )
        return replace(self, keys=tuple(k for k in self.keys if k.selector != selector))

    def to_json(self) -> str:
        keys = [
            {"selector": k.selector, "state": str(k.state), "key": k.key, "since": _time(k.since)}
            for k in self.keys
        ]
        data = {"version": STATE_VERSION, "domain": self.domain, "selectors": keys}
        return json.dumps(data, indent=2) + "\n"


def _time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def selector_key(domain: str, selector: str) -> str:
    """Where a rotated selector's private key lives, relative to the key folder."""
    return f"{STATE_FOLDER}/{domain}/{selector}.private"


def boky_key(domain: str) -> str:
    """The boky/postfix key file, relative to the key folder."""
    return f"{domain}.private"


def state_path(keys_dir: Path, domain: str) -> Path:
    return keys_dir / STATE_FOLDER / f"{domain}.json"


def parse_state(text: str, domain: str) -> DomainSelectors:
    """The state file's text, checked: right domain, known states, one active selector,
    key files where rotation puts them (nothing outside the key folder)."""
    try:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION or data.get("domain") != domain:
            raise SelectorError(f"version {STATE_VERSION} for {domain} expected")
        keys = tuple(
            SelectorKey(
                str(item["selector"]),
                State(item["state"]),
                str(item["key"]),
                datetime.fromisoformat(item["since"]),
            )
            for item in data["selectors"]
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SelectorError(f"not a selector state file ({exc})") from None
    for key in keys:
        if key.key not in (boky_key(domain), selector_key(domain, key.selector)):
            raise SelectorError(f"selector {key.selector}: unexpected key file {key.key!r}")
    if [k.state for k in keys].count(State.ACTIVE) != 1:
        raise SelectorError("exactly one selector must be active")
    if len({k.selector for k in keys}) != len(keys):
        raise SelectorError("a selector is listed twice")
    return DomainSelectors(domain, keys)


def load_state(keys_dir: Path, domain: str) -> DomainSelectors | None:
    """The domain's selectors, None when it was never rotated."""
    path = state_path(keys_dir, domain)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SelectorError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_state(text, domain)
    except SelectorError as exc:
        raise SelectorError(f"{path}: {exc}") from None


def domain_selectors(keys_dir: Path, domain: str, selector: str) -> DomainSelectors | None:
    """The state file's selectors; for a domain never rotated, its `<domain>.private` as
    the active key under `selector` (DKIM_SELECTOR's); None when it has no key at all."""
    state = load_state(keys_dir, domain)
    if state is not None:
        return state
    if not (keys_dir / boky_key(domain)).exists():
        return None
    since = datetime.fromtimestamp((keys_dir / boky_key(domain)).stat().st_mtime, UTC)
    return DomainSelectors(domain, (SelectorKey(selector, State.ACTIVE, boky_key(domain), since),))


def signing_key(keys_dir: Path, domain: str, selector: str) -> DomainKey:
    """The key OpenDKIM signs the domain's mail with: the state file's active selector, else
    `<domain>.private` under `selector` (DKIM_SELECTOR's), as before any rotation."""
    state = load_state(keys_dir, domain)
    if state is None:
        return DomainKey(domain, selector, keys_dir / boky_key(domain))
    return DomainKey(domain, state.active.selector, state.active.private_key(keys_dir))


def rotated_domains(keys_dir: Path) -> list[str]:
    """Domains with a state file, sorted."""
    folder = keys_dir / STATE_FOLDER
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".json") for p in folder.glob("*.json"))


def save_state(keys_dir: Path, state: DomainSelectors) -> None:
    """Replace the state file whole (write, fsync, rename): readers see old or new."""
    from mailstack.runtime.files import write_atomic

    write_atomic(state_path(keys_dir, state.domain), state.to_json(), 0o644)


@contextmanager
def locked(keys_dir: Path) -> Iterator[None]:
    """One rotation step at a time on this key folder (two admins, or a script run twice)."""
    folder = keys_dir / STATE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_selector(pattern: str, now: datetime, taken: Collection[str]) -> str:
    """The date-based selector for `now` (`ms202611`), with `-2`, `-3`... when that one is
    already the domain's (a second rotation in the same month)."""
    base = now.strftime(pattern)
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in count(2) if f"{base}-{n}" not in taken)
