"""The types of settings fields: a parser of `values` each, as pydantic runs it, and the
markers the sources read (see sources.py).

A parser gets the text of a variable; a value that is typed already (a default, a keyword
argument) is taken as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr

from mailstack.settings import values
from mailstack.settings.sources import EmptyDisables, FromFile, ItemList, PassThrough, Switch
from mailstack.settings.values import DkimSelectors, HostPort, RelayHost


def parsed(parse: Callable[[str], Any]) -> BeforeValidator:
    """Run `parse` on the variable's text."""

    def validate(raw: Any) -> Any:
        return parse(raw) if isinstance(raw, str) else raw

    return BeforeValidator(validate)


def _listener(raw: str) -> HostPort | None:
    return values.parse_listen(raw) if raw.strip() else None


STRIPPED = parsed(str.strip)

Flag = Annotated[bool, Switch(), parsed(values.parse_flag)]
Text = Annotated[str, STRIPPED]
OptionalText = Annotated[str | None, STRIPPED]
OptionalPath = Annotated[Path | None, STRIPPED]
Number = Annotated[float, STRIPPED]
Count = Annotated[int, Field(ge=0), STRIPPED]
Port = Annotated[int, Field(ge=1, le=65535), STRIPPED]
Size = Annotated[int, Field(ge=0), parsed(values.parse_size)]
Root = Annotated[Path, parsed(values.parse_root)]

LogFormat = Annotated[Literal["plain", "json"], parsed(lambda raw: raw.strip().lower())]
TlsLevel = Annotated[
    Literal["none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"],
    STRIPPED,
]

Domains = Annotated[tuple[str, ...], ItemList(), parsed(values.parse_domain_list)]
Networks = Annotated[tuple[str, ...], ItemList(), parsed(values.parse_networks)]
#: One variable of networks and domains, read by a field for each (see values.parse_allow_list)
AllowedNetworks = Annotated[
    tuple[str, ...], ItemList(), parsed(lambda raw: values.parse_allow_list(raw)[0])
]
AllowedDomains = Annotated[
    tuple[str, ...], ItemList(), parsed(lambda raw: values.parse_allow_list(raw)[1])
]

#: A list that is None (a default) when unset and empty when set but empty.
OptionalItems = Annotated[
    tuple[str, ...] | None,
    EmptyDisables(),
    ItemList(),
    parsed(lambda raw: tuple(values.split_items(raw))),
]
#: A number that an empty variable switches off (None).
OptionalNumber = Annotated[float | None, EmptyDisables(), parsed(values.parse_optional_number)]
#: HH:MM (24 hours), or None when set but empty.
DailyTime = Annotated[str | None, EmptyDisables(), parsed(values.parse_daily_time)]
SpamFailure = Annotated[Literal["defer", "accept"], parsed(lambda raw: raw.strip().lower())]

#: DNS servers, `ADDR[:PORT]` or `[IPV6]:PORT`, separated by whitespace or commas.
Nameservers = Annotated[tuple[tuple[str, int], ...], ItemList(), parsed(values.parse_nameservers)]
#: One IP address, or None when unset or empty.
OptionalAddress = Annotated[str | None, parsed(values.parse_optional_address)]

Listen = Annotated[HostPort, parsed(values.parse_listen)]
OptionalListen = Annotated[HostPort | None, parsed(values.parse_listen)]
#: A listener that an empty variable switches off.
Listener = Annotated[HostPort | None, EmptyDisables(), parsed(_listener)]
Relayhost = Annotated[RelayHost | None, parsed(values.parse_relayhost)]
Selectors = Annotated[DkimSelectors, parsed(values.parse_selectors)]
SelectorFormat = Annotated[str, parsed(values.parse_selector_format)]

#: Secrets may come from `<VARIABLE>_FILE`; a password is taken as it is, never stripped.
Username = Annotated[str | None, FromFile(), STRIPPED]
Secret = Annotated[SecretStr | None, FromFile(), STRIPPED]
Password = Annotated[SecretStr | None, FromFile()]

#: `POSTFIX_<param>` (main.cf) and `OPENDKIM_<Key>` (opendkim.conf): key -> value, None to remove.
PostfixOverrides = Annotated[dict[str, str | None], PassThrough(re.compile(r"[a-z][A-Za-z0-9_]*"))]
OpendkimOverrides = Annotated[dict[str, str | None], PassThrough(re.compile(r"[A-Z][A-Za-z0-9]*"))]
