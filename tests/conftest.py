"""Fixtures: a private MAILSTACK_ROOT, a sink, free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import Sink, free_port, private_root, smtp_sink

# Every property test without a deadline or a "too slow" health check: they measure time, and
# tests assert behaviour only (a busy machine, or the suite's parallel workers, slow a test
# case down without making it wrong). Tests with their own `settings` keep these defaults.
settings.register_profile("mailstack", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mailstack")


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
