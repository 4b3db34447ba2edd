"""Typed settings: environment variables in, a validated frozen model out.

The loaders (and pydantic) are imported on first use, so that processes which only need the
small value types of `settings.values` (the supervisor, the worker) stay lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailstack.settings.environ import load_relay_settings
    from mailstack.settings.model import RelaySettings

__all__ = ["RelaySettings", "load_relay_settings"]


def __getattr__(name: str) -> Any:
    if name == "load_relay_settings":
        from mailstack.settings.environ import load_relay_settings

        return load_relay_settings
    if name == "RelaySettings":
        from mailstack.settings.model import RelaySettings

        return RelaySettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
