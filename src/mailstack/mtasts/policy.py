"""MTA-STS (RFC 8461) as text: the `_mta-sts` TXT record, the policy file, and the answer
Postfix's `smtp_tls_policy_maps` gets for a policy.

Pure functions, no I/O. Parsing is strict: anything RFC 8461 does not allow makes the whole
record or policy invalid (`PolicyError`), which the caller treats as "no policy", never as a
weaker one. Unknown fields are ignored, as the RFC requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 section 3.2: max_age MUST be no greater
MAX_POLICY_BYTES = 64 * 1024  # section 3.3: senders may refuse larger policy bodies

Mode = Literal["enforce", "testing", "none"]
_MODES: dict[str, Mode] = {"enforce": "enforce", "testing": "testing", "none": "none"}

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # printable, no ';' nor '='
_POLICY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_POLICY_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class PolicyError(ValueError):
    """The TXT record or the policy file is not valid RFC 8461."""


@dataclass(frozen=True)
class Policy:
    """A parsed policy: its mode, the allowed MX patterns, how long it may be cached."""

    mode: Mode
    mx: tuple[str, ...]
    max_age: int

    def to_text(self) -> str:
        """The policy as RFC 8461 text (for the cache file): parses back to itself."""
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines += [f"mx: {pattern}" for pattern in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return "\r\n".join(lines) + "\r\n"


def parse_record(texts: list[str]) -> str | None:
    """The policy id from the `_mta-sts.<domain>` TXT records (each one's strings joined).

    Records not starting with `v=STSv1` are someone else's and ignored; None when none is
    left. Raises PolicyError when more than one is left or the one left is malformed: the
    domain then has no usable policy (section 3.1).
    """
    ours = [text for text in texts if text.startswith("v=STSv1")]
    if not ours:
        return None
    if len(ours) > 1:
        raise PolicyError(f"{len(ours)} v=STSv1 TXT records, expected one")
    fields = [field.strip(" \t") for field in ours[0].split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # a trailing delimiter is allowed
    if not fields or fields[0] != "v=STSv1":
        raise PolicyError("the record does not start with v=STSv1")
    found_id: str | None = None
    for field in fields[1:]:
        name, equals, value = field.partition("=")
        if not equals:
            raise PolicyError(f"field {field[:40]!r} has no '='")
        if name == "id":
            if not _ID.fullmatch(value):
                raise PolicyError(f"id {value[:40]!r} is not 1 to 32 letters and digits")
            if found_id is None:
                found_id = value
        elif not (_EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            raise PolicyError(f"field {field[:40]!r} is malformed")
    if found_id is None:
        raise PolicyError("the record has no id")
    return found_id


def parse_policy(body: bytes) -> Policy:
    """The policy served at `https://mta-sts.<domain>/.well-known/mta-sts.txt`.

    Lines end with CRLF (LF is accepted too); each is `key: value`. `version: STSv1`,
    `mode` and `max_age` are required, `mx` too unless the mode is `none`. The first of a
    repeated field counts, except `mx`, which lists every allowed pattern.
    """
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is over {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise PolicyError("the policy is not ASCII text") from None
    fields: dict[str, str] = {}
    patterns: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        key, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _POLICY_KEY.fullmatch(key) or not _POLICY_VALUE.fullmatch(value):
            raise PolicyError(f"line {line[:60]!r} is not 'key: value'")
        if key == "mx":
            patterns.append(_mx_pattern(value))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("the policy has no 'version: STSv1'")
    mode = _MODES.get(fields.get("mode", ""))
    if mode is None:
        raise PolicyError(f"mode {fields.get('mode')!r} is not enforce, testing or none")
    max_age = fields.get("max_age", "")
    if not (max_age.isascii() and max_age.isdigit() and len(max_age) <= 10):
        raise PolicyError(f"max_age {max_age[:20]!r} is not a number of seconds")
    if int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} is over {MAX_AGE_LIMIT}")
    if not patterns and mode != "none":
        raise PolicyError(f"a policy in mode {mode} lists no mx")
    return Policy(mode, tuple(dict.fromkeys(patterns)), int(max_age))


def _mx_pattern(value: str) -> str:
    """A host name, or `*.` and a domain (the wildcard stands for one label)."""
    pattern = value.lower()
    name = pattern.removeprefix("*.")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(f"mx {value[:60]!r} is not a host name or *.domain")
    return pattern


def postfix_policy(policy: Policy) -> str | None:
    """What `smtp_tls_policy_maps` answers for `policy`: for `enforce`, TLS with a
    certificate valid for one of the MX patterns, the MX host name sent as SNI; None for
    `testing` and `none`, so that Postfix's default level applies.

    Postfix checks the MX's certificate against the patterns, so an MX swapped in by a
    forged DNS answer fails unless it holds a certificate for one of them. Postfix's
    `.domain` matches any name under the domain, a little wider than RFC 8461's one-label
    wildcard.
    """
    if policy.mode != "enforce":
        return None
    patterns = [pattern.removeprefix("*") for pattern in policy.mx]
    return f"secure match={':'.join(patterns)} servername=hostname"
