"""Markers of the deployment tests (container image, Helm chart)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds the container image with podman and runs it (minutes, root)"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the item, so fixtures can tell a failed test in teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
