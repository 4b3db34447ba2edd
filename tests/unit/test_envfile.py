"""The settings file `mailstack init` writes and every command reads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.errors import InvalidInput
from mailstack.settings.envfile import apply_env_file, env_file, read_env_file, render_env_file

VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"),
    max_size=40,
)


@given(value=VALUES)
def test_any_single_line_value_reads_back_as_written(value: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mailstack.env"
        path.write_text(render_env_file({"POSTFIX_myhostname": value, "MAILSTACK_X": "plain"}))
        assert read_env_file(path) == {"POSTFIX_myhostname": value, "MAILSTACK_X": "plain"}


def test_the_environment_wins_over_the_file_and_the_file_fills_in(tmp_path: Path) -> None:
    environ = {"MAILSTACK_ROOT": str(tmp_path), "POSTFIX_myhostname": "from.environment"}
    path = env_file(environ)
    assert path == tmp_path / "etc/mailstack/mailstack.env"
    path.parent.mkdir(parents=True)
    path.write_text(
        "# written by hand\nMAILSTACK_PROFILE=server\nPOSTFIX_myhostname=from.file\n"
        "export MAILSTACK_SPAM='0'\n"
    )
    assert apply_env_file(environ) == path
    assert environ["POSTFIX_myhostname"] == "from.environment"
    assert environ["MAILSTACK_PROFILE"] == "server"
    assert environ["MAILSTACK_SPAM"] == "0"


def test_no_file_changes_nothing(tmp_path: Path) -> None:
    environ = {"MAILSTACK_ROOT": str(tmp_path)}
    assert apply_env_file(environ) is None
    assert environ == {"MAILSTACK_ROOT": str(tmp_path)}


def test_a_line_that_is_not_a_setting_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mailstack.env"
    path.write_text("MAILSTACK_PROFILE=server\nthis is not a setting\n")
    with pytest.raises(InvalidInput) as caught:
        read_env_file(path)
    assert caught.value.field == f"{path}, line 2"
    assert "not NAME=value" in caught.value.message
