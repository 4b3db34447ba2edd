"""The token file on its own: format compatibility, atomic writes, create-only seeding."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mailstack.xoauth2 import TokenFileError, Tokens, TokenStore, token_file_path


def test_reads_the_boky_postfix_layout(tmp_path: Path) -> None:
    """boky/postfix writes expiry as the string "0"; other keys survive a rewrite."""
    path = tmp_path / "user@example.com"
    path.write_text('{"access_token": "a", "refresh_token": "r", "expiry": "0", "user": "u"}')
    store = TokenStore(path)

    tokens = store.load()
    assert (tokens.access_token, tokens.refresh_token, tokens.expiry) == ("a", "r", 0.0)
    store.save(tokens.renewed("a2", 1234.5, None))

    saved = json.loads(path.read_text())
    assert saved == {"access_token": "a2", "refresh_token": "r", "expiry": 1234, "user": "u"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "u"
    store = TokenStore(path)
    for n in range(3):
        store.save(Tokens(f"a{n}", "r", 10.0))
    assert [p.name for p in path.parent.iterdir()] == ["u"]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_create_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "u"
    store = TokenStore(path)
    assert store.create(Tokens("a", "r1"))
    assert not store.create(Tokens("b", "r2"))
    assert store.load().refresh_token == "r1"
    assert [p.name for p in tmp_path.iterdir()] == ["u"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"access_token": "a"}', "no refresh_token"),
        ('{"refresh_token": "r", "expiry": "soon"}', "expiry"),
    ],
)
def test_bad_files_are_named_without_values(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "u"
    path.write_text(text)
    with pytest.raises(TokenFileError, match=message) as error:
        TokenStore(path).load()
    assert str(path) in str(error.value)


def test_tokens_repr_hides_values() -> None:
    assert "secret" not in repr(Tokens("secret-a", "secret-r", 1.0))


def test_token_file_path_is_under_the_queue() -> None:
    queue = Path("/var/spool/postfix")
    assert token_file_path(queue, "me@gmail.com") == queue / "xoauth2-tokens" / "me@gmail.com"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="RELAYHOST_USERNAME"):
            token_file_path(queue, bad)
