"""The rule form's Sieve generator: safe quoting, exact round trips, hands off edited scripts.

The scripts are read back here with a small lexer written from RFC 5228 section 8.1, apart
from the generator's own patterns, so a quoting mistake shared by both sides still fails.
(tests/server/test_sieve_rules_filing.py runs the scripts through Pigeonhole itself.)
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.errors import InvalidInput
from mailstack.sieve.rules import HEADER, Rule, make_rule, parse_rules, render_rules

# any text a form field may carry: no control characters, but quotes, backslashes, Sieve
# syntax and non-ASCII letters, which are what could break a quoted string
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\;{}[]#*:,() /.@-'),
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
    ),
    max_size=40,
)
_NONEMPTY = _TEXT.filter(lambda s: s.strip() == s and s != "")


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    folder = draw(_NONEMPTY)
    sender = draw(st.one_of(st.just(""), _NONEMPTY))
    subject = draw(_NONEMPTY if not sender else st.one_of(st.just(""), _NONEMPTY))
    return Rule(folder, sender, subject)


_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*")'
    r"|(?P<comment>#[^\n]*\n)"
    r"|(?P<tag>:[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<identifier>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<special>[;{}\[\](),])"
    r"|(?P<space>[ \t\r\n]+)",
    re.DOTALL,
)


def lex(script: str) -> list[tuple[str, str]]:
    """(kind, value) tokens; strings decoded as RFC 5228 2.4.2 says (backslash escapes)."""
    tokens = []
    position = 0
    while position < len(script):
        match = _TOKEN.match(script, position)
        assert match is not None, f"not Sieve at {position}: {script[position : position + 20]!r}"
        kind = match.lastgroup
        assert kind is not None
        text = match.group()
        if kind == "string":
            decoded, escaped = [], False
            for char in text[1:-1]:
                if not escaped and char == "\\":
                    escaped = True
                    continue
                decoded.append(char)
                escaped = False
            tokens.append((kind, "".join(decoded)))
        elif kind not in ("comment", "space"):
            tokens.append((kind, text))
        position = match.end()
    return tokens


@given(st.lists(rules(), max_size=4))
def test_parse_gives_back_exactly_the_rules_rendered(found: list[Rule]) -> None:
    """A form-made script opens in the form with the very rules it was made from."""
    assert parse_rules(render_rules(found)) == found


@given(rules())
def test_values_stay_inside_their_strings(rule: Rule) -> None:
    """Quotes and backslashes in a value cannot end its string: the script has exactly the
    commands a rule makes, and each string decodes to the value typed."""
    tokens = lex(render_rules([rule]))
    identifiers = [value for kind, value in tokens if kind == "identifier"]
    strings = [value for kind, value in tokens if kind == "string"]
    tests = ["address"] if rule.sender else []
    tests += ["header"] if rule.subject else []
    allof = ["allof"] if len(tests) == 2 else []
    assert identifiers == ["require", "if", *allof, *tests, "fileinto", "stop"]
    expected = ["fileinto", "mailbox"]
    expected += ["from", rule.sender] if rule.sender else []
    expected += ["subject", rule.subject] if rule.subject else []
    assert strings == [*expected, rule.folder]


@given(st.lists(rules(), min_size=1, max_size=3), st.data())
def test_an_edited_script_is_not_taken_for_a_form_script(
    found: list[Rule], data: st.DataObject
) -> None:
    """Any one-character change either reads as rules that render to exactly the new text
    or is left to the raw editor: the form never drops what someone typed by hand."""
    script = render_rules(found)
    at = data.draw(st.integers(0, len(script) - 1))
    char = data.draw(st.characters(blacklist_categories=("Cs",)))
    edited = script[:at] + char + script[at + 1 :]
    parsed = parse_rules(edited)
    assert parsed is None or render_rules(parsed) == edited


def test_hand_written_scripts_open_in_the_raw_editor() -> None:
    written = 'require "fileinto";\nif header :contains "subject" "x" { fileinto "X"; }\n'
    assert parse_rules(written) is None
    made = render_rules([Rule("Boss", "boss@example.org")])
    assert parse_rules(made.replace("stop;", "discard;")) is None
    assert parse_rules(made + "discard;\n") is None
    assert parse_rules(made.removeprefix(HEADER)) is None


def test_the_generated_script_reads_plainly() -> None:
    script = render_rules([Rule("Boss", "boss@example.org"), Rule("Lists", "example.net", "[x]")])
    assert 'if address :is "from" "boss@example.org" {' in script
    assert 'address :domain :is "from" "example.net", header :contains "subject" "[x]"' in script
    assert 'fileinto :create "Boss";' in script


def test_make_rule_trims_and_checks_what_was_typed() -> None:
    assert make_rule(" Boss ", " Boss@Example.org ") == Rule("Boss", "boss@example.org")
    assert make_rule("News", "@example.net").sender == "example.net"
    assert make_rule("News", "@example.net").sender_is_domain
    for folder, sender, subject, field in [
        ("", "a@b", "", "folder"),
        ("X", "", "", "sender"),
        ("X", "a b@c", "", "sender"),
        ("X", "", "line\nbreak", "subject"),
        ("X\ry", "a@b", "", "folder"),
        ("X", "a@b", "x" * 201, "subject"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            make_rule(folder, sender, subject)
        assert caught.value.field == field
