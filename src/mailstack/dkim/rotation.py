"""The steps of a DKIM key rotation: one set of rules for `mailstack dkim rotate|activate|
retire` (an admin, as root) and for the REST API, whose worker checks a step when it is
asked for and whose supervisor has root carry it out (mailstack.dkim.requests).

A step reads the domain's selectors, checks the change against them, then writes: key files
first, the state file last (the commit point, see mailstack.dkim.selectors). The writing
steps take the key folder's lock themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailstack.dkim.keys import dns_record_value, published_value
from mailstack.dkim.selectors import (
    RETIRE_AFTER,
    DomainSelectors,
    SelectorError,
    SelectorKey,
    State,
    domain_selectors,
    load_state,
    locked,
    new_selector,
    save_state,
)
from mailstack.errors import ExitCode

#: writes a new private key (and its `.txt` record) for (path, domain, selector); its PEM
WriteKey = Callable[[Path, str, str], bytes]
#: raises NotPublished (or LookupFailed) unless DNS publishes the selector's record
CheckPublished = Callable[[str, SelectorKey, str], None]


class RotationRefused(SelectorError):
    """The step does not fit the domain's selectors now (a conflict, not a bad request)."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotPublished(RotationRefused):
    """DNS does not publish the record of the selector to activate."""


class LookupFailed(RotationRefused):
    """DNS could not be asked: try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.TEMPFAIL)


@dataclass(frozen=True)
class Rotated:
    """What `rotate` made: the new state, the new pending selector and its TXT value."""

    state: DomainSelectors
    added: SelectorKey
    value: str


def current_selectors(keys_dir: Path, domain: str, selector: str) -> DomainSelectors:
    """The domain's selectors (a never-rotated domain: its one key under `selector`, the
    DKIM_SELECTOR one); RotationRefused when it has no key at all."""
    current = domain_selectors(keys_dir, domain, selector)
    if current is None:
        raise RotationRefused(
            f"{domain} has no DKIM key to rotate: "
            f"`mailstack dkim show {domain} --generate` makes its first"
        )
    return current


def rotated_state(keys_dir: Path, domain: str) -> DomainSelectors:
    """The state file's selectors; RotationRefused for a domain never rotated."""
    state = load_state(keys_dir, domain)
    if state is None:
        raise RotationRefused(f"{domain} was never rotated: `mailstack dkim rotate {domain}` first")
    return state


def plan_rotation(
    current: DomainSelectors, selector: str | None, pattern: str, now: datetime
) -> DomainSelectors:
    """`current` with a new pending selector: `selector`, else the date in `pattern`."""
    chosen = new_selector(pattern, now, current.selectors) if selector is None else selector
    return current.rotated(chosen, now)


def rotate(
    keys_dir: Path,
    domain: str,
    selector: str | None,
    *,
    default_selector: str,
    pattern: str,
    now: datetime,
    write_key: WriteKey,
) -> Rotated:
    """A new key under a new pending selector; the active one keeps signing."""
    with locked(keys_dir):
        current = current_selectors(keys_dir, domain, default_selector)
        state = plan_rotation(current, selector, pattern, now)
        added = next(k for k in state.keys if k.state is State.PENDING)
        pem = write_key(added.private_key(keys_dir), domain, added.selector)
        save_state(keys_dir, state)
    return Rotated(state, added, dns_record_value(pem))


def record_value(keys_dir: Path, domain: str, key: SelectorKey) -> str:
    """The TXT value of a selector's key (from its `.txt` for who may not read the key)."""
    value = published_value(key.private_key(keys_dir), domain)
    if value is None:
        raise RotationRefused(f"the key of {key.selector} ({key.key}) is missing")
    return value


def activate(
    keys_dir: Path,
    domain: str,
    selector: str,
    *,
    now: datetime,
    check: CheckPublished | None,
) -> tuple[str, DomainSelectors]:
    """`selector` signs from now on, once `check` (None: no check) finds its record; the
    selector that signed until now retires. The previous selector and the new state."""
    with locked(keys_dir):
        state = rotated_state(keys_dir, domain)
        previous = state.active.selector
        state = state.activated(selector, now)
        if check is not None:
            chosen = state.get(selector)
            check(domain, chosen, record_value(keys_dir, domain, chosen))
        save_state(keys_dir, state)
    return previous, state


def check_retire(
    key: SelectorKey, domain: str, now: datetime, force: bool, force_hint: str = "--force"
) -> None:
    """Refuse to forget a selector that stopped signing less than RETIRE_AFTER ago, unless
    `force`: mail it signed may still be on its way to receivers who will verify it.
    `force_hint` names the way to force it in the refusal."""
    since = now - key.since
    if key.state is State.RETIRING and since < RETIRE_AFTER and not force:
        raise RotationRefused(
            f"{key.selector} stopped signing {domain}'s mail {since.days} days ago: mail it "
            f"signed may still be on its way; retire it after {RETIRE_AFTER.days} days "
            f"({(key.since + RETIRE_AFTER).date()}), or now with {force_hint}"
        )


def plan_retirement(
    state: DomainSelectors, selector: str, now: datetime, force: bool, force_hint: str = "--force"
) -> tuple[DomainSelectors, SelectorKey]:
    """`state` without `selector` (retiring, or pending to give it up), and its key."""
    key = state.get(selector)
    remaining = state.retired(selector)
    check_retire(key, state.domain, now, force, force_hint)
    return remaining, key


def retire(
    keys_dir: Path,
    domain: str,
    selector: str,
    *,
    now: datetime,
    force: bool,
    force_hint: str = "--force",
) -> SelectorKey:
    """Forget `selector` and remove its key files; the retired key."""
    with locked(keys_dir):
        state = rotated_state(keys_dir, domain)
        state, key = plan_retirement(state, selector, now, force, force_hint)
        save_state(keys_dir, state)
        for path in (key.private_key(keys_dir), key.public_record(keys_dir)):
            path.unlink(missing_ok=True)
    return key


def dns_check(nameserver: tuple[str, int] | None, force_hint: str) -> CheckPublished:
    """A check that DNS (`nameserver`, else the system's resolver) answers the selector's
    name with this key's p= (dnspython, as `mailstack dns --check` compares). `force_hint`
    names the way to skip it in the refusal (`--force`)."""

    def check(domain: str, key: SelectorKey, value: str) -> None:
        from mailstack.dns.check import DnsLookup, ResolverUnavailable, check_records
        from mailstack.dns.records import Record

        record = Record("DKIM", f"{key.selector}._domainkey.{domain}", "TXT", value)
        try:
            (finding,) = check_records([record], domain, DnsLookup(nameserver))
        except ResolverUnavailable as exc:
            raise LookupFailed(str(exc)) from None
        if finding.status == "ok":
            return
        found = "; ".join(finding.found) or "nothing"
        why = f"{finding.status}: {finding.detail}" if finding.detail else finding.status
        message = (
            f"the DKIM record {record.name} is not published as expected ({why}; found "
            f"{found}). Publish `{value}` there (`mailstack dkim show {domain}`), wait until "
            f"it is visible, and try again; {force_hint} skips this check"
        )
        raise LookupFailed(message) if finding.status == "error" else NotPublished(message)

    return check
