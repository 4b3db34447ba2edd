"""Rules for the package's own source that no linter checks."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "mailstack"


def test_no_type_checker_escape_in_the_package() -> None:
    """mypy --strict checks src/ whole: a `type: ignore` would hide what it finds."""
    escapes = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert escapes == []
