"""Write the API's OpenAPI document: `python -m mailstack.api.openapi [FILE]`.

The repository keeps it in `docs/openapi.json` and a test compares; after changing the API,
run `python -m mailstack.api.openapi docs/openapi.json`. Without FILE it goes to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from mailstack.api.app import create_api


def document() -> dict[str, Any]:
    """The document as served; no database is touched to build it."""
    engine = create_engine("sqlite://")
    try:
        return create_api(engine, dkim_keys=Path("/nonexistent")).openapi()
    finally:
        engine.dispose()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
