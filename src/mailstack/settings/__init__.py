"""Typed settings: environment variables in, a validated frozen model out."""

from mailstack.settings.environ import load_relay_settings
from mailstack.settings.model import RelaySettings

__all__ = ["RelaySettings", "load_relay_settings"]
