"""Where a profile's settings come from: pydantic-settings sources over one environment.

The settings are read in layers, each able to override the ones before it:

1. `Environment`: each field's variable (its alias) as given. An empty or blank value counts
   as unset, so the default applies, unless the field is switched off by an empty value
   (`EmptyDisables`). A `Fallback` variable is read when the field's own is unset.
2. `SecretFiles`: `<VARIABLE>_FILE` for the fields marked `FromFile`: the file's contents less
   one final line break. Setting both is an error, and so is a file that cannot be read.
3. `DeprecatedNames`: the profile's old names (the relay keeps boky/postfix's `MYNETWORKS`...);
   one that is set wins over the current name, with a notice.
4. `PassThrough`: `POSTFIX_<param>` and `OPENDKIM_<Key>` into the fields marked `PassThrough`,
   less the variables that are settings of their own; an empty value removes the parameter.
   All-capital names are ignored: Kubernetes injects service links such as
   `POSTFIX_MAIL_SERVICE_PORT` that look like ours but are not.

Values end up on lines of configuration files (main.cf, master.cf, opendkim.conf,
sasl_passwd), so a control character in one is refused and the value is not used: a newline
would start a line of the value's own choosing (`POSTFIX_smtpd_banner="x<newline>mynetworks =
0.0.0.0/0"`). Only switches, which are never written out, are not checked.

Sources raise nothing: every problem (and every deprecation notice) goes to the `Reading` of
the load, so that `mailstack check` reports them all at once.
"""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from mailstack.errors import Problem

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)

CONTROL_CHARACTER = (
    "contains a control character ({}); a value must fit on one line of a configuration file"
)
#: Control characters (C0 but tab, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\n": "newline",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "DEL",
}
_ALL_CAPS = re.compile(r"[A-Z0-9_]+")
_Marker = TypeVar("_Marker")


# -- what a source needs to know about a field: markers in its Annotated metadata ----------


@dataclass(frozen=True)
class FromFile:
    """The value may be given as `<VARIABLE>_FILE=/path` instead (Docker/Kubernetes secrets)."""


@dataclass(frozen=True)
class ItemList:
    """A list: any whitespace separates items, so only other control characters are refused."""


@dataclass(frozen=True)
class Switch:
    """Parsed to on or off and never written out as text: control characters do no harm."""


@dataclass(frozen=True)
class EmptyDisables:
    """Set but empty means "off" (None), where an empty value elsewhere means the default."""


@dataclass(frozen=True)
class Fallback:
    """Another variable that sets the field when the field's own is unset or empty."""

    variable: str


@dataclass(frozen=True)
class PassThrough:
    """`<PREFIX><key>=value` pairs (the field's alias is `<PREFIX>*`), keys matching `key`."""

    key: re.Pattern[str]


def marker(found: FieldInfo, kind: type[_Marker]) -> _Marker | None:
    """The field's marker of type `kind`, if it has one."""
    return next((m for m in found.metadata if isinstance(m, kind)), None)


def control_character(text: str) -> str | None:
    """The name of the first control character in `text` (tabs are allowed), or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    char = found.group()
    return _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")


# -- one load ---------------------------------------------------------------------------------


@dataclass
class Reading:
    """One load of settings: the environment read, and what its sources found."""

    environ: Mapping[str, str]
    notices: list[str]
    problems: list[Problem] = field(default_factory=list)
    #: field alias -> the variable its value came from, where that is another one (an old
    #: name, a fallback): a problem with the value is named after the variable that was set
    read_from: dict[str, str] = field(default_factory=dict)
    #: aliases whose values the sources leave out (the values failed, see `ProfileSettings.load`)
    set_aside: set[str] = field(default_factory=set)

    def single_line(self, variable: str, value: str, found: FieldInfo) -> bool:
        """Whether `value` may be used; a problem naming `variable` if it may not."""
        if marker(found, Switch):
            return True
        char = control_character(re.sub(r"\s", " ", value) if marker(found, ItemList) else value)
        if char is not None:
            self.problems.append(Problem(variable, CONTROL_CHARACTER.format(char)))
        return char is None

    def named(self, problem: Problem) -> Problem:
        """`problem` named after the variable that was actually set."""
        return Problem(self.read_from.get(problem.variable, problem.variable), problem.message)


class Source(PydanticBaseSettingsSource):
    """A layer of one load. It reads its values once, so that each problem and notice is
    recorded once however often pydantic-settings asks; each value is keyed by its field's
    alias, the variable."""

    def __init__(self, settings_cls: type[BaseSettings], reading: Reading) -> None:
        super().__init__(settings_cls)
        self.reading = reading
        self.environ = reading.environ
        self.found: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self.found is None:
            self.found = {}
            for name, info in self.settings_cls.model_fields.items():
                value, key, _ = self.get_field_value(info, name)
                if value is not None:
                    self.found[key] = value
        return {k: v for k, v in self.found.items() if k not in self.reading.set_aside}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """(value or None, the field's alias, False): what this layer gives the field."""
        return self.value_for(field_name, field), field.alias or field_name, False

    @abstractmethod
    def value_for(self, name: str, found: FieldInfo) -> Any:
        """The value this layer gives the field `name`, or None."""


class Environment(Source):
    """Each field's variable as given; empty means unset, except for `EmptyDisables`."""

    def value_for(self, name: str, found: FieldInfo) -> Any:
        variable = found.alias or name
        if marker(found, PassThrough):
            return None
        fallback = marker(found, Fallback)
        empty_counts = marker(found, EmptyDisables) is not None
        for candidate in (variable, fallback.variable) if fallback else (variable,):
            value = self.environ.get(candidate)
            if value is None or not (value.strip() or empty_counts):
                continue
            if candidate != variable:
                self.reading.read_from[variable] = candidate
            return value if self.reading.single_line(candidate, value, found) else None
        return None


class SecretFiles(Source):
    """`<VARIABLE>_FILE` of the `FromFile` fields: the file's contents, of which one final
    line break is dropped and nothing else (a secret goes into a file verbatim)."""

    def value_for(self, name: str, found: FieldInfo) -> Any:
        variable = found.alias or name
        file_variable = f"{variable}_FILE"
        path = self.environ.get(file_variable) if marker(found, FromFile) else None
        if not path:
            return None
        problems = self.reading.problems
        if self.environ.get(variable):
            message = f"set both {variable} and {file_variable}; set only one"
            problems.append(Problem(variable, message))
            return None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(Problem(file_variable, f"cannot read {path}: {reason}"))
            return None
        value = text.removesuffix("\n").removesuffix("\r")
        char = control_character(value)
        if char is None:
            return value if value.strip() else None
        problems.append(
            Problem(
                file_variable,
                f"{path} {CONTROL_CHARACTER.format(char)} (only one final line break is dropped)",
            )
        )
        return None


class DeprecatedNames(Source):
    """Old names of some fields (field name -> old variable); set, the old name wins."""

    def __init__(
        self, settings_cls: type[BaseSettings], reading: Reading, names: Mapping[str, str]
    ) -> None:
        self.names = names
        super().__init__(settings_cls, reading)

    def value_for(self, name: str, found: FieldInfo) -> Any:
        old = self.names.get(name)
        value = self.environ.get(old, "") if old else ""
        if not old or not value.strip():
            return None
        variable = found.alias or name
        self.reading.notices.append(f"{old} is deprecated; use {variable} instead")
        if not self.reading.single_line(old, value, found):
            return None
        self.reading.read_from[variable] = old
        return value


class PassThroughs(Source):
    """`PREFIX<key>=value` for the `PassThrough` fields: key -> value, None (remove the
    parameter) for an empty value. Variables that are settings of their own are left out."""

    def value_for(self, name: str, found: FieldInfo) -> Any:
        pass_through = marker(found, PassThrough)
        if pass_through is None:
            return None
        settings = {f.alias for f in self.settings_cls.model_fields.values()}
        prefix = (found.alias or name).removesuffix("*")
        result: dict[str, str | None] = {}
        for variable, value in self.environ.items():
            key = variable.removeprefix(prefix)
            if not variable.startswith(prefix) or variable in settings:
                continue
            if _ALL_CAPS.fullmatch(key):
                log.debug("ignoring %s: not a configuration key (service link?)", variable)
            elif not pass_through.key.fullmatch(key):
                message = f"{key!r} is not a valid configuration key name"
                self.reading.problems.append(Problem(variable, message))
            elif self.reading.single_line(variable, value, found):
                result[key] = value if value.strip() else None
        return result
