"""What every profile's settings share: the common fields, their rules, and the loading.

Each field's alias is the environment variable that sets it, so a problem names the variable,
and `grep VARIABLE` leads from the README to the field and on to the renderer. A profile is a
subclass that adds its own fields and rules (`RelaySettings`, `ServerSettings`), and may give a
common field another default with `field_with`.

`load` is the only way in from an environment: the sources (sources.py) read the variables,
the fields' types (fields.py) parse them, and `rules` checks what involves several fields.
Every problem is collected, so that `mailstack check` can report them all at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mailstack.errors import ConfigError, Problem
from mailstack.settings import values
from mailstack.settings.fields import (
    Flag,
    Listener,
    LogFormat,
    Nameservers,
    Number,
    OpendkimOverrides,
    OptionalAddress,
    OptionalListen,
    OptionalPath,
    OptionalText,
    Password,
    PostfixOverrides,
    Relayhost,
    Root,
    Selectors,
    Size,
    Text,
    TlsLevel,
    Username,
)
from mailstack.settings.sources import (
    DeprecatedNames,
    Environment,
    Fallback,
    PassThroughs,
    Reading,
    SecretFiles,
    Source,
)
from mailstack.settings.values import DkimSelectors, HostPort

#: The only resolver configuration Postfix's smtp client reads (it has no setting of its own).
RESOLV_CONF = Path("/etc/resolv.conf")


class BrokenRules(ValueError):
    """Every rule across fields that the settings break."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class ProfileSettings(BaseSettings):
    """The settings both profiles have, read and checked the same way in both."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, validate_default=False
    )

    #: Field name -> a deprecated variable that still sets it, and wins (with a notice).
    deprecated_names: ClassVar[Mapping[str, str]] = {}
    #: The listener fields in the order clashes are told: the later of two is named.
    listening: ClassVar[tuple[str, ...]] = ("listen_smtp", "metrics_listen")

    root: Root = Field(Path("/"), alias="MAILSTACK_ROOT")
    tz: OptionalText = Field(None, alias="TZ", description="Time zone, e.g. Europe/Amsterdam.")
    force_color: Flag = Field(False, alias="FORCE_COLOR", description="Colour plain logs.")
    log_format: LogFormat = Field("plain", alias="LOG_FORMAT")
    myhostname: Annotated[Text, Fallback("HOSTNAME")] = Field(
        default_factory=socket.gethostname, alias="POSTFIX_myhostname"
    )
    message_size_limit: Size = Field(0, alias="POSTFIX_message_size_limit")

    # outbound: straight to the recipient's MX, or through a relay host (smarthost)
    relayhost: Relayhost = Field(None, alias="RELAYHOST")
    relayhost_username: Username = Field(None, alias="RELAYHOST_USERNAME")
    relayhost_password: Password = Field(None, alias="RELAYHOST_PASSWORD")
    smtp_tls_security_level: TlsLevel = Field("may", alias="POSTFIX_smtp_tls_security_level")
    # outbound verification: MTA-STS policies (delivering directly only) and DANE
    mta_sts_outbound: Flag = Field(True, alias="MAILSTACK_MTA_STS_OUTBOUND")
    mta_sts_ca_file: OptionalPath = Field(None, alias="MAILSTACK_MTA_STS_CA_FILE")
    dns_nameservers: Nameservers = Field((), alias="MAILSTACK_DNS_NAMESERVERS")
    dnssec_resolver: OptionalAddress = Field(None, alias="MAILSTACK_DNSSEC_RESOLVER")

    dkim_selectors: Selectors = Field(default_factory=DkimSelectors, alias="DKIM_SELECTOR")
    dkim_autogenerate: Flag = Field(False, alias="DKIM_AUTOGENERATE")
    dkim_sign_subdomains: Flag = Field(False, alias="DKIM_SIGN_SUBDOMAINS")

    postfix_overrides: PostfixOverrides = Field(default_factory=dict, alias="POSTFIX_*")
    opendkim_overrides: OpendkimOverrides = Field(default_factory=dict, alias="OPENDKIM_*")

    listen_smtp: Listener = Field(HostPort("0.0.0.0", 25), alias="MAILSTACK_LISTEN_SMTP")
    metrics_listen: OptionalListen = Field(None, alias="MAILSTACK_METRICS_LISTEN")
    stop_timeout: Number = Field(8.0, ge=0, le=3600, alias="MAILSTACK_STOP_TIMEOUT")

    @classmethod
    def load(cls, environ: Mapping[str, str], notices: list[str] | None = None) -> Self:
        """Validate `environ` into settings, or raise ConfigError listing every problem.

        `notices` collects deprecation lines for the caller to log once logging is set up.
        The rules across fields are checked even when single values fail: a second round
        leaves the failed values out, so that their defaults stand in for them.
        """
        reading = Reading(environ, notices if notices is not None else [])
        layers = cls.sources(reading)
        for layer in layers:
            layer()  # read in the order they apply, so that problems are told in that order
        settings: Self | None = None
        try:
            settings = cls._from_sources(layers)
        except ValidationError as exc:
            reading.problems.extend(problems_from(exc))
            failed = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if failed:
                reading.set_aside.update(failed)
                try:
                    cls._from_sources(layers)
                except ValidationError as rules:
                    reading.problems.extend(problems_from(rules, rules_only=True))
        if reading.problems:
            raise ConfigError(list(dict.fromkeys(map(reading.named, reading.problems))))
        assert settings is not None  # noqa: S101 - no problems means validation succeeded
        return settings

    @classmethod
    def sources(cls, reading: Reading) -> tuple[Source, ...]:
        """The layers of a load, in the order they apply: each overrides the ones before."""
        return (
            Environment(cls, reading),
            SecretFiles(cls, reading),
            DeprecatedNames(cls, reading, cls.deprecated_names),
            PassThroughs(cls, reading),
        )

    @classmethod
    def _from_sources(cls, layers: tuple[Source, ...]) -> Self:
        """Settings from the layers, through BaseSettings (pydantic-settings takes the first
        source's value of a variable, so the last layer goes first); a mapping of keywords
        because mypy knows only the fields' keywords."""
        options: dict[str, Any] = {"_build_sources": (layers[::-1], {})}
        return cls(**options)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: `load` reads the environment it is given, never os.environ
        nor a file of its own."""
        return (init_settings,)

    @classmethod
    def variable(cls, name: str) -> str:
        """The variable that sets the field `name`."""
        return str(cls.model_fields[name].alias)

    @classmethod
    def field_with(cls, name: str, **changes: Any) -> Any:
        """The field `name` as declared here with `changes`: a profile's own default."""
        return FieldInfo.merge_field_infos(cls.model_fields[name], **changes)

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = list(self.rules())
        if broken:
            raise BrokenRules(broken)
        return self

    @property
    def mta_sts_active(self) -> bool:
        """Outbound MTA-STS applies when mail goes straight to the recipients' MXs: a relay
        host is one next-hop of its own, not a domain with a policy."""
        return self.mta_sts_outbound and self.relayhost is None

    @property
    def policy_nameservers(self) -> tuple[tuple[str, int], ...]:
        """The resolvers of the worker's own lookups (MTA-STS): MAILSTACK_DNS_NAMESERVERS,
        else the DNSSEC resolver, else () for the system's resolv.conf."""
        if self.dns_nameservers:
            return self.dns_nameservers
        return ((self.dnssec_resolver, 53),) if self.dnssec_resolver else ()

    def rules(self) -> Iterator[Problem]:
        """What is wrong across fields; a profile adds its own rules to these."""
        listeners = {self.variable(name): getattr(self, name) for name in self.listening}
        for name, other in values.listener_clashes(listeners):
            yield Problem(name, f"{listeners[name]} clashes with {other}={listeners[other]}")
        ca_file = self.mta_sts_ca_file
        if ca_file is not None and not ca_file.is_file():
            yield Problem(self.variable("mta_sts_ca_file"), f"file {ca_file} does not exist")
        if self.dnssec_resolver is not None:
            problem = values.resolver_problem(self.dnssec_resolver, RESOLV_CONF)
            if problem:
                yield Problem(self.variable("dnssec_resolver"), problem)


def problems_from(exc: ValidationError, *, rules_only: bool = False) -> list[Problem]:
    """The problems in a validation error, each named by its variable (a field's alias)."""
    result: list[Problem] = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:
            broken = error.get("ctx", {}).get("error")
            if isinstance(broken, BrokenRules):
                result.extend(broken.problems)
            else:
                variable, _, message = message.partition(": ")
                result.append(Problem(variable, message))
            continue
        if rules_only:
            continue
        if error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"must be one of {expected} (got {error['input']!r})"
        elif error["type"] in {"float_parsing", "int_parsing"}:
            message = f"must be a number (got {error['input']!r})"
        result.append(Problem(str(error["loc"][0]), message))
    return result
