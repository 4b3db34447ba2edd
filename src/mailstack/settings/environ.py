"""Read the relay's settings from environment variables, the boky/postfix way.

`RelaySettings` (model.py) declares the variables; sources.py reads them: `*_FILE` secrets,
the deprecated names, `POSTFIX_<param>` and `OPENDKIM_<Key>` pass-through (an empty value
removes the parameter), and the variables Kubernetes injects that look like ours but are not.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailstack.errors import Problem
from mailstack.settings.base import ProfileSettings
from mailstack.settings.model import RelaySettings
from mailstack.settings.sources import Environment, FromFile, Reading, marker

#: Variables that may be given as `<NAME>_FILE` pointing at a file holding the value.
SECRET_VARIABLES = tuple(
    str(field.alias) for field in RelaySettings.model_fields.values() if marker(field, FromFile)
)


def load_relay_settings(
    environ: Mapping[str, str], notices: list[str] | None = None
) -> RelaySettings:
    """Validate the environment into RelaySettings, or raise ConfigError listing every problem.

    `notices` collects deprecation lines for the caller to log once logging is set up.
    """
    return RelaySettings.load(environ, notices)


def myhostname(env: Mapping[str, str], problems: list[Problem]) -> str:
    """POSTFIX_myhostname, else HOSTNAME (checked like a setting when it is the one used);
    empty when neither is set."""
    reading = Reading(env, [])
    value = Environment(ProfileSettings, reading).value_for(
        "myhostname", ProfileSettings.model_fields["myhostname"]
    )
    problems.extend(map(reading.named, reading.problems))
    return str(value or "").strip()
