"""DKIM rotation steps asked for through the REST API: the worker asks, root does them.

The worker is not root and may not write keys, but it may read the selectors' state and
records. It checks a step against them (and DNS, for an activation) when asked, so a refusal
is answered at once; then it writes the step as one small JSON file into a folder of its own
(`<trigger>.d/<id>.json`) and creates the trigger file. The supervisor, seeing the trigger,
runs `mailstack dkim requested` as root: it takes the files in the order they were made
(opened without following links, at most MAX_REQUEST_BYTES, every field checked again),
carries each step out with the CLI's rules (mailstack.dkim.rotation) and records what became
of it in `selectors/requests/<domain>.json` beside the keys (root's folder, readable by the
worker), which the API shows. A request made while that runs creates the trigger again:
none is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mailstack.dkim.selectors import STATE_FOLDER
from mailstack.settings.values import DEFAULT_SELECTOR_FORMAT, parse_domain, parse_selector

log = logging.getLogger(__name__)

Action = Literal["rotate", "activate", "retire"]
ACTIONS: tuple[Action, ...] = ("rotate", "activate", "retire")
_ACTION_OF: dict[str, Action] = {action: action for action in ACTIONS}
Status = Literal["done", "refused", "failed"]
#: a request file is a few hundred bytes; anything larger is not one of ours
MAX_REQUEST_BYTES = 4096
#: one run carries out at most this many; the rest wait for the next trigger
MAX_PER_RUN = 100
#: outcomes kept per domain, newest last
KEEP_OUTCOMES = 20
OUTCOME_FOLDER = "requests"
#: `20261126T120000123456Z-3f9a1c2b`: sorts in the order the requests were made
_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")


def pending_folder(trigger: Path) -> Path:
    """Where the requests wait, beside the trigger file."""
    return trigger.with_name(trigger.name + ".d")


@dataclass(frozen=True)
class RotationRequest:
    """One step asked for: `selector` is the new one for `rotate`, the one to change else."""

    id: str
    action: Action
    domain: str
    selector: str
    force: bool
    requested_at: datetime

    def to_json(self) -> str:
        data = asdict(self)
        data["requested_at"] = _time(self.requested_at)
        return json.dumps(data)

    @classmethod
    def parse(cls, data: Any, expected_id: str | None = None) -> RotationRequest:
        """A request from its JSON data, every field checked; ValueError names the field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        request_id = _field(data, "id", str)
        if not _ID.match(request_id) or expected_id not in (None, request_id):
            raise ValueError(f"id: {request_id[:40]!r} is not this request's id")
        named = _field(data, "action", str)
        action = _ACTION_OF.get(named)
        if action is None:
            raise ValueError(f"action: {named[:20]!r} is none of {', '.join(ACTIONS)}")
        domain = _field(data, "domain", str)
        if parse_domain(domain) != domain:
            raise ValueError(f"domain: {domain[:80]!r} is not a normalised domain")
        selector = _field(data, "selector", str)
        if parse_selector(selector) != selector:
            raise ValueError(f"selector: {selector[:80]!r} is not a selector")
        force = _field(data, "force", bool)
        requested_at = datetime.fromisoformat(_field(data, "requested_at", str))
        return cls(request_id, action, domain, selector, force, requested_at)


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{name}: missing or not a {kind.__name__}")
    return value


def _time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Outcome:
    """What became of a request: done, refused (the rules said no; `detail` says why) or
    failed (something broke: a key could not be written)."""

    request: RotationRequest
    status: Status
    detail: str
    finished_at: datetime

    def as_dict(self) -> dict[str, Any]:
        request = json.loads(self.request.to_json())
        finished = _time(self.finished_at)
        return {**request, "status": self.status, "detail": self.detail, "finished_at": finished}


class RotationRequests:
    """The worker's side: ask root for a step, and list the steps still waiting."""

    def __init__(self, trigger: Path) -> None:
        self.trigger = trigger
        self.folder = pending_folder(trigger)

    def request(
        self, action: Action, domain: str, selector: str, *, force: bool = False
    ) -> RotationRequest:
        now = datetime.now(UTC)
        request_id = f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"
        made = RotationRequest(request_id, action, domain, selector, force, now)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        temporary = self.folder / f".{request_id}.tmp"
        temporary.write_text(made.to_json())
        temporary.rename(self.folder / f"{request_id}.json")  # whole, or not there
        self.trigger.touch()  # after the request: the job that sees it also sees the file
        return made

    def waiting(self, domain: str) -> list[RotationRequest]:
        """The domain's requests root has not taken yet, oldest first."""
        with _folder(self.folder) as fd:
            if fd is None:
                return []
            found = (request for _, request in _read_requests(fd))
            return [r for r in found if isinstance(r, RotationRequest) and r.domain == domain]


@contextlib.contextmanager
def _folder(path: Path) -> Iterator[int | None]:
    """The request folder, opened without following a link (None when it is missing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _read_requests(folder_fd: int) -> Iterator[tuple[str, RotationRequest | ValueError]]:
    """(file name, its request or why it is none) for the first MAX_PER_RUN requests."""
    # by descriptor (opened without following links): pathlib cannot list one
    names = sorted(n for n in os.listdir(folder_fd) if n.endswith(".json"))
    for name in names[:MAX_PER_RUN]:
        try:
            data = json.loads(_read_small(folder_fd, name))
            yield name, RotationRequest.parse(data, name.removesuffix(".json"))
        except ValueError as exc:
            yield name, exc
        except OSError as exc:
            yield name, ValueError(exc.strerror or str(exc))


def take_requests(trigger: Path) -> list[RotationRequest]:
    """Root's side: the valid requests waiting beside `trigger`, oldest first, their files
    removed. Anything else found there is removed and logged, never used."""
    taken: list[RotationRequest] = []
    with _folder(pending_folder(trigger)) as fd:
        if fd is None:
            return []
        for name, found in _read_requests(fd):
            if isinstance(found, RotationRequest):
                taken.append(found)
            else:
                log.warning("ignored the DKIM request %r: %s", name[:60], found)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    return taken


def _read_small(folder_fd: int, name: str) -> str:
    """A regular file's text in the worker's folder: no link followed, no FIFO waited on."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_REQUEST_BYTES:
            raise ValueError("not a small regular file")
        return os.read(fd, MAX_REQUEST_BYTES + 1).decode("utf-8")
    finally:
        os.close(fd)


def outcome_path(keys_dir: Path, domain: str) -> Path:
    return keys_dir / STATE_FOLDER / OUTCOME_FOLDER / f"{domain}.json"


def read_outcomes(keys_dir: Path, domain: str) -> list[dict[str, Any]]:
    """The domain's last outcomes, oldest first, as root recorded them (empty if none)."""
    try:
        data = json.loads(outcome_path(keys_dir, domain).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("cannot read the DKIM request outcomes of %s: %s", domain, exc)
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def record_outcomes(keys_dir: Path, domain: str, outcomes: list[Outcome]) -> None:
    """Append `outcomes` to the domain's record (the last KEEP_OUTCOMES stay), atomically,
    readable by the worker."""
    from mailstack.runtime.files import write_atomic

    kept = [*read_outcomes(keys_dir, domain), *(o.as_dict() for o in outcomes)]
    text = json.dumps(kept[-KEEP_OUTCOMES:], indent=2) + "\n"
    path = outcome_path(keys_dir, domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)  # whatever the umask: the worker reads it
    write_atomic(path, text, 0o644)


@dataclass(frozen=True)
class RotationSetup:
    """How the API has rotation steps done: `requests` leaves them for root; new selectors
    follow `selector_format` (MAILSTACK_DKIM_ROTATE_SELECTOR); activations are checked with
    `nameserver` (None: the system's resolver)."""

    requests: RotationRequests
    selector_format: str = DEFAULT_SELECTOR_FORMAT
    nameserver: tuple[str, int] | None = None
