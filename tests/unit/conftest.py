"""Fixtures of the unit tier: settings loaded from small environments, the relay's main.cf.

Settings are built by the real loaders from plain dicts; nothing here starts a daemon, opens
a socket or runs a command.
"""

from __future__ import annotations

import pytest

from mailstack.errors import ConfigError, Problem
from mailstack.paths import Paths
from mailstack.render.postfix import main_cf_parameters, render_main_cf
from mailstack.settings.environ import load_relay_settings
from mailstack.settings.model import RelaySettings
from mailstack.settings.server import ServerSettings, load_server_settings
from tests.unit.support import (
    RELAY_ENV,
    ROOT,
    SERVER_ENV,
    MainCf,
    ProblemsOf,
    RelayLoader,
    ServerLoader,
)


@pytest.fixture
def paths() -> Paths:
    return Paths(ROOT)


@pytest.fixture
def relay() -> RelayLoader:
    """`relay(**env)`: RelaySettings for RELAY_ENV plus env, loaded by the real loader."""

    def load(**env: str) -> RelaySettings:
        return load_relay_settings({**RELAY_ENV, **env}, [])

    return load


@pytest.fixture
def server() -> ServerLoader:
    """`server(**env)`: ServerSettings for SERVER_ENV plus env."""

    def load(**env: str) -> ServerSettings:
        return load_server_settings({**SERVER_ENV, **env})

    return load


@pytest.fixture
def relay_main_cf(relay: RelayLoader) -> MainCf:
    """`relay_main_cf(dkim=False, **env)`: the relay's main.cf, as lines."""

    def lines(dkim: bool = False, **env: str) -> list[str]:
        settings = relay(**env)
        params = main_cf_parameters(settings, Paths(settings.root), dkim_enabled=dkim)
        return render_main_cf(params).splitlines()

    return lines


@pytest.fixture
def relay_problems() -> ProblemsOf:
    """`relay_problems(**env)`: every problem the relay loader reports for RELAY_ENV + env."""

    def problems(**env: str) -> list[Problem]:
        with pytest.raises(ConfigError) as refused:
            load_relay_settings({**RELAY_ENV, **env}, [])
        return refused.value.problems

    return problems
