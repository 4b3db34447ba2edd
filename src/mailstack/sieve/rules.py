"""Simple filing rules ("mail from X / subject containing Y goes to folder Z") as Sieve.

The web UI's rule form writes a whole script with `render_rules`. The script is plain,
commented Sieve a user can read and edit; `parse_rules` gives the form back its rules only
when the text is exactly what `render_rules` would write for them, so a script edited by
hand is never half-understood by the form: it opens in the raw editor instead.

Quoting follows RFC 5228 2.4.2: in a quoted string only `"` and `\\` need a backslash.
Control characters (line breaks included) are refused, so a value can never end a string,
a comment or a line early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstack.errors import InvalidInput

HEADER = "# mailstack filing rules: made by the web UI's rule form.\n"
REQUIRE = 'require ["fileinto", "mailbox"];\n'
MAX_RULES = 100
MAX_VALUE = 200  # characters of a sender, subject or folder

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _quoted(name: str) -> str:
    """A pattern for one quoted string, its inside as group `name`."""
    return rf'"(?P<{name}>(?:[^"\\]|\\.)*)"'


_BLOCK = re.compile(
    r"\n# rule \d+\n"
    r"if (?P<test>[^\n]*) \{\n"
    rf"    fileinto :create {_quoted('folder')};\n"
    r"    stop;\n"
    r"\}\n"
)
_TEST = re.compile(
    r"^(?:allof \()?"
    rf'(?:address (?P<domain>:domain )?:is "from" {_quoted("sender")})?'
    r"(?:, )?"
    rf'(?:header :contains "subject" {_quoted("subject")})?'
    r"\)?$"
)


@dataclass(frozen=True)
class Rule:
    """File mail into `folder` when it is from `sender` (an address, or a whole domain
    when it has no @) and its subject contains `subject`; an empty field matches all."""

    folder: str
    sender: str = ""
    subject: str = ""

    @property
    def sender_is_domain(self) -> bool:
        return bool(self.sender) and "@" not in self.sender


def _checked(field: str, value: str, *, required: bool = False) -> str:
    text = value.strip()
    if required and not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > MAX_VALUE:
        raise InvalidInput(field, f"is longer than {MAX_VALUE} characters")
    if _CONTROL.search(text):
        raise InvalidInput(field, "must not contain line breaks or control characters")
    return text


def make_rule(folder: str, sender: str = "", subject: str = "") -> Rule:
    """A rule from what a user typed (trimmed), or InvalidInput naming the field."""
    rule = Rule(
        folder=_checked("folder", folder, required=True),
        sender=_checked("sender", sender).lower(),
        subject=_checked("subject", subject),
    )
    if " " in rule.sender:
        raise InvalidInput("sender", "must be an address or a domain, without spaces")
    if rule.sender.startswith("@"):
        rule = Rule(rule.folder, rule.sender[1:], rule.subject)
    if not rule.sender and not rule.subject:
        raise InvalidInput("sender", "give a sender, a subject text or both")
    return rule


def quote(value: str) -> str:
    """`value` as a Sieve quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(body: str) -> str:
    """The value of a quoted string's inside (what `quote` wrote between the quotes)."""
    return re.sub(r"\\(.)", r"\1", body)


def _tests(rule: Rule) -> list[str]:
    tests = []
    if rule.sender_is_domain:
        tests.append(f'address :domain :is "from" {quote(rule.sender)}')
    elif rule.sender:
        tests.append(f'address :is "from" {quote(rule.sender)}')
    if rule.subject:
        tests.append(f'header :contains "subject" {quote(rule.subject)}')
    return tests


def render_rules(rules: list[Rule]) -> str:
    """The whole script for `rules`, checked first to last; the first that matches files
    the message and stops (nothing else runs). No rules: a script that keeps everything."""
    if len(rules) > MAX_RULES:
        raise InvalidInput("rules", f"at most {MAX_RULES} rules fit in one script")
    parts = [HEADER, REQUIRE]
    for number, rule in enumerate(rules, 1):
        tests = _tests(rule)
        test = tests[0] if len(tests) == 1 else f"allof ({', '.join(tests)})"
        parts.append(
            f"\n# rule {number}\n"
            f"if {test} {{\n"
            f"    fileinto :create {quote(rule.folder)};\n"
            "    stop;\n"
            "}\n"
        )
    return "".join(parts)


def _parse_test(text: str) -> tuple[str, str] | None:
    """(sender, subject) of a test as `_tests` writes it; the caller checks the exact form
    by rendering again."""
    match = _TEST.match(text)
    if match is None:
        return None
    return unquote(match["sender"] or ""), unquote(match["subject"] or "")


def parse_rules(script: str) -> list[Rule] | None:
    """The rules a form-made script holds, or None when the script is anything else
    (hand-written or edited), so that saving from the form cannot lose someone's Sieve."""
    if not script.startswith(HEADER + REQUIRE):
        return None
    rules: list[Rule] = []
    position = len(HEADER + REQUIRE)
    while position < len(script):
        match = _BLOCK.match(script, position)
        if match is None:
            return None
        found = _parse_test(match["test"])
        if found is None:
            return None
        sender, subject = found
        rules.append(Rule(unquote(match["folder"]), sender, subject))
        position = match.end()
    if render_rules(rules) != script:  # anything not exactly as written: hands off
        return None
    return rules
