"""Helpers of the unit tier: the base environments, and reading rendered configuration the
way a user reads it (a parameter's line, a service's entry)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from mailstack.errors import Problem
from mailstack.render.files import RenderedFile
from mailstack.settings.model import RelaySettings
from mailstack.settings.server import ServerSettings

#: A root that does not exist: renderers only compute paths under it.
ROOT = Path("/srv/mailstack")
RELAY_ENV = {
    "ALLOWED_SENDER_DOMAINS": "example.com",
    "POSTFIX_myhostname": "relay.example.com",
    "MAILSTACK_ROOT": str(ROOT),
}
#: `vmail` must exist: the server loader refuses a mail user the system does not know
#: (scripts/install.sh --server creates it).
SERVER_ENV = {
    "POSTFIX_myhostname": "mx.example.com",
    "MAILSTACK_ROOT": str(ROOT),
    "MAILSTACK_MAIL_USER": "vmail",
}

#: What the relay-host credentials need around them to be valid.
RELAY_AUTH = {"RELAYHOST": "[smtp.example.com]:587", "RELAYHOST_USERNAME": "user"}

#: The OpenDKIM milter as Postfix reaches it under ROOT.
MILTER = "unix:/srv/mailstack/run/mailstack/opendkim/opendkim.sock"
#: The master.cf option that turns new clients away during a graceful stop.
CLOSING = (
    "-o {smtpd_client_restrictions=check_client_access "
    "static:{421 4.3.2 Service shutting down, try again later}}"
)

RelayLoader = Callable[..., RelaySettings]
ServerLoader = Callable[..., ServerSettings]
MainCf = Callable[..., list[str]]
ProblemsOf = Callable[..., list[Problem]]


def content(files: Iterable[RenderedFile], name: str) -> str:
    """The content of the rendered file called `name`."""
    (found,) = [f.content for f in files if f.path.name == name]
    return found


def parameter(lines: Iterable[str], name: str) -> str | None:
    """The value of `name = value` in main.cf lines, None when the parameter is absent."""
    values = [
        value.strip()
        for key, found, value in (line.partition("=") for line in lines)
        if found and key.strip() == name and not key.startswith("#")
    ]
    assert len(values) <= 1, f"{name} is set {len(values)} times"
    return values[0] if values else None


def master_services(text: str) -> dict[str, list[str]]:
    """master.cf entries by their first field (the service name or listen address): the
    entry's line followed by its `-o` option lines. A duplicate entry fails the test."""
    services: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            current.append(line.strip())
            continue
        name = line.split()[0]
        assert name not in services, f"master.cf has two entries for {name}"
        current = services[name] = [" ".join(line.split())]
    return services


class Clock:
    """A monotonic clock the test moves by hand (`clock.now += 60`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
