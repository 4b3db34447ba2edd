"""The nightly training pass (and `mailstack spam train`): each user's Inbox teaches ham and
Junk teaches spam to that user's own statistics.

rspamd's learn cache remembers every message per user, so a message is learned once: a
second pass finds it "already learned" and changes nothing. Bulk learning: a message the
classifier is already sure of still counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.spam.controller import Kind, Outcome, learn

#: Maildir folders and what they teach; Junk is `.Junk` in Dovecot's Maildir++ layout.
FOLDERS: tuple[tuple[str, Kind], ...] = (("", "ham"), (".Junk", "spam"))
#: Larger messages are skipped: rspamd learns from text, and the controller has a limit.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


@dataclass
class UserTraining:
    user: str
    counts: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"user": self.user, **{key: self.counts[key] for key in _KEYS}}


_KEYS = (
    "spam_learned",
    "spam_already",
    "spam_refused",
    "ham_learned",
    "ham_already",
    "ham_refused",
    "skipped",
)


def messages(maildir: Path) -> Iterator[tuple[Path, Kind]]:
    """Every message file of the Inbox and Junk, with what it teaches."""
    for folder, kind in FOLDERS:
        for sub in ("cur", "new"):
            where = maildir / folder / sub if folder else maildir / sub
            try:
                entries = sorted(where.iterdir())
            except FileNotFoundError:
                continue
            for path in entries:
                if path.is_file():
                    yield path, kind


async def train_user(controller: Path, user: str, maildir: Path) -> UserTraining:
    """Learn one user's Inbox and Junk (raises ControllerUnavailable if rspamd is down)."""
    result = UserTraining(user)
    for path, kind in messages(maildir):
        try:
            if path.stat().st_size > MAX_MESSAGE_BYTES:
                result.counts["skipped"] += 1
                continue
            data = path.read_bytes()
        except FileNotFoundError:  # expunged or moved meanwhile
            continue
        learned = await learn(controller, kind, user, data, bulk=True)
        suffix = {Outcome.LEARNED: "learned", Outcome.ALREADY: "already"}.get(
            learned.outcome, "refused"
        )
        result.counts[f"{kind}_{suffix}"] += 1
    return result
