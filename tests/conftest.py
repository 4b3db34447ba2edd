"""Fixtures: a private MAILSTACK_ROOT, a sink, free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Sink, free_port, private_root, smtp_sink


@pytest.fixture
def root() -> Iterator[Path]:
    with private_root() as path:
        yield path


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def port() -> int:
    return free_port()
