"""The server profile's settings: the common ones (base.py) and the server's own: listeners,
TLS, datastore, mail user, greylisting.

Domains, users, aliases and sieve scripts are not settings: they live in the datastore and
are managed with `mailstack domain|user|alias|sieve`.
"""

from __future__ import annotations

import pwd
import socket
from collections.abc import Iterator, Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from mailstack.errors import Problem
from mailstack.render.rspamd import RspamdOptions
from mailstack.settings.acme import (
    WILDCARD,
    AcmeChallenge,
    CertificateNames,
    DnsServer,
    KeyName,
    OptionalDomain,
    TsigAlgorithm,
    base64_problem,
)
from mailstack.settings.base import ProfileSettings
from mailstack.settings.fields import (
    AllowedDomains,
    AllowedNetworks,
    Count,
    DailyTime,
    Flag,
    Listener,
    Number,
    OptionalItems,
    OptionalNumber,
    OptionalPath,
    OptionalText,
    Secret,
    SelectorFormat,
    SpamFailure,
    Text,
    parsed,
)
from mailstack.settings.values import DEFAULT_SELECTOR_FORMAT, HostPort

DEFAULT_MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"

MtaStsMode = Annotated[
    Literal["testing", "enforce", "none"], parsed(lambda raw: raw.strip().lower())
]


class ServerSettings(ProfileSettings):
    """Everything `mailstack run --profile server` needs; built by `load_server_settings`."""

    listening: ClassVar[tuple[str, ...]] = (
        "listen_smtp",
        "listen_submission",
        "listen_submissions",
        "listen_imap",
        "listen_imaps",
        "listen_managesieve",
        "metrics_listen",
        "listen_http",
        "listen_https",
    )

    myhostname: str = ProfileSettings.field_with("myhostname", default_factory=socket.getfqdn)
    message_size_limit: int = ProfileSettings.field_with(
        "message_size_limit", default=DEFAULT_MESSAGE_SIZE_LIMIT
    )
    dkim_autogenerate: bool = ProfileSettings.field_with("dkim_autogenerate", default=True)
    #: strftime pattern of the selector `mailstack dkim rotate` makes (read by that command)
    dkim_rotate_selector: SelectorFormat = Field(
        DEFAULT_SELECTOR_FORMAT, alias="MAILSTACK_DKIM_ROTATE_SELECTOR", validate_default=True
    )

    database_url: OptionalText = Field(None, alias="MAILSTACK_DATABASE_URL")
    mail_user: Text = Field("vmail", alias="MAILSTACK_MAIL_USER", validate_default=True)

    # listen_smtp is common; an empty variable disables a listener
    listen_submission: Listener = Field(
        HostPort("0.0.0.0", 587), alias="MAILSTACK_LISTEN_SUBMISSION"
    )
    listen_submissions: Listener = Field(
        HostPort("0.0.0.0", 465), alias="MAILSTACK_LISTEN_SUBMISSIONS"
    )
    listen_imap: Listener = Field(HostPort("0.0.0.0", 143), alias="MAILSTACK_LISTEN_IMAP")
    listen_imaps: Listener = Field(HostPort("0.0.0.0", 993), alias="MAILSTACK_LISTEN_IMAPS")
    listen_managesieve: Listener = Field(
        HostPort("0.0.0.0", 4190), alias="MAILSTACK_LISTEN_MANAGESIEVE"
    )

    tls_cert_file: OptionalPath = Field(None, alias="MAILSTACK_TLS_CERT_FILE")
    tls_key_file: OptionalPath = Field(None, alias="MAILSTACK_TLS_KEY_FILE")

    # greylisting of inbound mail on the MX listener
    greylist: Flag = Field(True, alias="MAILSTACK_GREYLIST")
    greylist_delay: Count = Field(300, alias="MAILSTACK_GREYLIST_DELAY")
    #: a sender passed this often is let through at once from then on; 0: never
    greylist_autoallow: Count = Field(5, alias="MAILSTACK_GREYLIST_AUTOALLOW")
    #: one variable of networks and domains never greylisted, read by both fields
    greylist_allow_networks: AllowedNetworks = Field((), alias="MAILSTACK_GREYLIST_ALLOW")
    greylist_allow_domains: AllowedDomains = Field((), alias="MAILSTACK_GREYLIST_ALLOW")

    # spam filtering of inbound mail (rspamd and its Redis) on the MX listener
    spam: Flag = Field(True, alias="MAILSTACK_SPAM")
    spam_reject_score: Number = Field(15.0, alias="MAILSTACK_SPAM_REJECT_SCORE")
    spam_junk_score: Number = Field(6.0, alias="MAILSTACK_SPAM_JUNK_SCORE")
    #: None: rspamd's greylisting band off (the policy service greylists every new sender)
    spam_greylist_score: OptionalNumber = Field(None, alias="MAILSTACK_SPAM_GREYLIST_SCORE")
    #: None (unset): rspamd's own DNS block lists; empty: none; else the rules named
    spam_rbl: OptionalItems = Field(None, alias="MAILSTACK_SPAM_RBL")
    spam_host_checks: Flag = Field(True, alias="MAILSTACK_SPAM_HOST_CHECKS")
    spam_nameservers: OptionalItems = Field(None, alias="MAILSTACK_SPAM_NAMESERVERS")
    spam_failure: SpamFailure = Field("defer", alias="MAILSTACK_SPAM_FAILURE")
    spam_test_patterns: Flag = Field(False, alias="MAILSTACK_SPAM_TEST_PATTERNS")
    spam_cache_dir: OptionalPath = Field(None, alias="MAILSTACK_SPAM_CACHE_DIR")
    spam_bayes_min_learns: Count = Field(20, alias="MAILSTACK_SPAM_BAYES_MIN_LEARNS")
    #: the nightly training pass, HH:MM local time; None (empty): never
    spam_train_at: DailyTime = Field("03:30", alias="MAILSTACK_SPAM_TRAIN_AT")
    # the worker's web listeners (ACME challenges, MTA-STS, autoconfig) and ACME
    listen_http: Listener = Field(HostPort("0.0.0.0", 80), alias="MAILSTACK_LISTEN_HTTP")
    listen_https: Listener = Field(HostPort("0.0.0.0", 443), alias="MAILSTACK_LISTEN_HTTPS")
    mta_sts_mode: MtaStsMode = Field("testing", alias="MAILSTACK_MTA_STS_MODE")
    acme_email: OptionalText = Field(None, alias="MAILSTACK_ACME_EMAIL")
    acme_directory: Text = Field(LETS_ENCRYPT, alias="MAILSTACK_ACME_DIRECTORY")
    acme_ca_file: OptionalPath = Field(None, alias="MAILSTACK_ACME_CA_FILE")
    tls_names: CertificateNames = Field((), alias="MAILSTACK_TLS_NAMES")
    # DNS-01 (also for wildcard names): RFC 2136 dynamic update of the zone's primary server
    acme_challenge: AcmeChallenge = Field("http-01", alias="MAILSTACK_ACME_CHALLENGE")
    acme_dns_server: DnsServer = Field(None, alias="MAILSTACK_ACME_DNS_SERVER")
    #: None: the zone whose SOA the server gives for the challenge's name
    acme_dns_zone: OptionalDomain = Field(None, alias="MAILSTACK_ACME_DNS_ZONE")
    acme_dns_tsig_key_name: KeyName = Field(None, alias="MAILSTACK_ACME_DNS_TSIG_KEY_NAME")
    acme_dns_tsig_secret: Secret = Field(None, alias="MAILSTACK_ACME_DNS_TSIG_SECRET")
    acme_dns_tsig_algorithm: TsigAlgorithm = Field(
        "hmac-sha256", alias="MAILSTACK_ACME_DNS_TSIG_ALGORITHM"
    )

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """The names the server's certificate is for: myhostname first, then TLS_NAMES."""
        names = [self.myhostname.lower()]
        names += [name for name in self.tls_names if name not in names]
        return tuple(names)

    @field_validator("mail_user")
    @classmethod
    def _system_user(cls, name: str) -> str:
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise ValueError(
                f"no system user {name!r}: mailboxes need an owner "
                "(scripts/install.sh --server creates 'vmail')"
            ) from None
        if account.pw_uid == 0:
            raise ValueError("must not be root")
        return name

    @property
    def relay_auth(self) -> tuple[str, str, str] | None:
        """(sasl_passwd key, username, password) when the smarthost wants a password."""
        if self.relayhost is None or not self.relayhost_username:
            return None
        if self.relayhost_password is None:
            return None
        password = self.relayhost_password.get_secret_value()
        return self.relayhost.text, self.relayhost_username, password

    def listeners(self) -> dict[str, HostPort]:
        """The enabled listeners by name."""
        found = {name: getattr(self, f"listen_{name}") for name in LISTENERS}
        return {name: address for name, address in found.items() if address is not None}

    def rules(self) -> Iterator[Problem]:
        yield from super().rules()
        yield from self._tls_files()
        yield from self._spam_scores()
        yield from self._acme()
        if self.relayhost_username and self.relayhost is None:
            yield Problem(self.variable("relayhost_username"), "is set but RELAYHOST is not")

    def dkim_environment(self) -> dict[str, str]:
        """The variables that give a `mailstack dkim sync` run by the supervisor the same
        DKIM settings as this server, and nothing else (no secrets)."""
        env = {
            "MAILSTACK_ROOT": str(self.root),
            "MAILSTACK_MAIL_USER": self.mail_user,
            "POSTFIX_myhostname": self.myhostname,
            "DKIM_SELECTOR": self.dkim_selectors.text,
            "DKIM_AUTOGENERATE": "on" if self.dkim_autogenerate else "off",
            "DKIM_SIGN_SUBDOMAINS": "on" if self.dkim_sign_subdomains else "off",
        }
        for key, value in self.opendkim_overrides.items():
            env[f"OPENDKIM_{key}"] = "" if value is None else value
        return env

    def rspamd_options(self) -> RspamdOptions:
        """The spam settings as rspamd's options (render/rspamd.py checks them)."""
        return RspamdOptions(
            reject=self.spam_reject_score,
            add_header=self.spam_junk_score,
            greylist=self.spam_greylist_score,
            test_patterns=self.spam_test_patterns,
            dns_lists=self.spam_rbl,
            host_checks=self.spam_host_checks,
            nameservers=self.spam_nameservers or (),
            cache_dir=self.spam_cache_dir,
            bayes_min_learns=self.spam_bayes_min_learns,
        )

    def _spam_scores(self) -> Iterator[Problem]:
        if not self.spam:
            return
        reject, junk, greylist = (
            self.spam_reject_score,
            self.spam_junk_score,
            self.spam_greylist_score,
        )
        if junk >= reject:
            below = f"{self.variable('spam_reject_score')} ({reject:g})"
            yield Problem(self.variable("spam_junk_score"), f"must be below {below}")
            return
        if greylist is not None and greylist >= junk:
            below = f"{self.variable('spam_junk_score')} ({junk:g})"
            yield Problem(self.variable("spam_greylist_score"), f"must be below {below}")
            return
        try:
            self.rspamd_options()
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            yield Problem(self.variable(_SPAM_OPTION_FIELDS.get(field, "spam")), message)

    def _tls_files(self) -> Iterator[Problem]:
        cert, key = self.tls_cert_file, self.tls_key_file
        if (cert is None) != (key is None):
            missing = self.variable("tls_key_file" if cert else "tls_cert_file")
            yield Problem(missing, "set both the certificate and the key file, or neither")
            return
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                yield Problem(self.variable(name), f"file {path} does not exist")

    def _acme(self) -> Iterator[Problem]:
        yield from self._wildcards()
        if self.acme_email is None:
            if self.acme_challenge != "http-01":
                yield Problem(
                    self.variable("acme_challenge"), "is set but MAILSTACK_ACME_EMAIL is not"
                )
            return
        if self.tls_cert_file is not None:
            yield Problem(self.variable("acme_email"), "is set with MAILSTACK_TLS_CERT_FILE")
        if self.acme_ca_file is not None and not self.acme_ca_file.is_file():
            yield Problem(self.variable("acme_ca_file"), f"file {self.acme_ca_file} does not exist")
        if self.acme_challenge == "dns-01":
            yield from self._dns01()
            return
        if self.listen_http is None:
            yield Problem(self.variable("acme_email"), "needs MAILSTACK_LISTEN_HTTP (HTTP-01)")
        for name in DNS01_FIELDS:
            if getattr(self, name) is not None:
                yield Problem(self.variable(name), "is set but MAILSTACK_ACME_CHALLENGE is http-01")

    def _wildcards(self) -> Iterator[Problem]:
        wildcards = [name for name in self.tls_names if name.startswith(WILDCARD)]
        if wildcards and (self.acme_email is None or self.acme_challenge != "dns-01"):
            yield Problem(
                self.variable("tls_names"),
                f"{', '.join(wildcards)}: a wildcard name needs ACME over DNS-01 "
                "(MAILSTACK_ACME_EMAIL and MAILSTACK_ACME_CHALLENGE=dns-01)",
            )

    def _dns01(self) -> Iterator[Problem]:
        if self.acme_dns_server is None:
            yield Problem(
                self.variable("acme_dns_server"),
                "is needed with MAILSTACK_ACME_CHALLENGE=dns-01: the DNS server that takes "
                "dynamic updates (RFC 2136) for the names, host[:port]",
            )
        name, secret = self.acme_dns_tsig_key_name, self.acme_dns_tsig_secret
        if (name is None) != (secret is None):
            missing = "acme_dns_tsig_secret" if secret is None else "acme_dns_tsig_key_name"
            yield Problem(
                self.variable(missing), "set both the TSIG key name and secret, or neither"
            )
        if secret is not None:
            problem = base64_problem(secret.get_secret_value())
            if problem is not None:
                yield Problem(self.variable("acme_dns_tsig_secret"), problem)


#: The DNS-01 settings that mean nothing with HTTP-01 (the algorithm has a default).
DNS01_FIELDS = (
    "acme_dns_server",
    "acme_dns_zone",
    "acme_dns_tsig_key_name",
    "acme_dns_tsig_secret",
)

#: RspamdOptions' names of what the spam settings set, for error messages.
_SPAM_OPTION_FIELDS = {
    "reject": "spam_reject_score",
    "add_header": "spam_junk_score",
    "greylist": "spam_greylist_score",
    "dns_lists": "spam_rbl",
    "bayes_min_learns": "spam_bayes_min_learns",
}

#: Listener name -> (environment variable, default address). An empty variable disables it.
LISTENERS: dict[str, tuple[str, HostPort]] = {
    name.removeprefix("listen_"): (
        ServerSettings.variable(name),
        ServerSettings.model_fields[name].default,
    )
    for name in ServerSettings.listening
    if name.startswith("listen_")
}


def load_server_settings(environ: Mapping[str, str]) -> ServerSettings:
    """Validate the environment into ServerSettings, or raise ConfigError with every problem."""
    return ServerSettings.load(environ)
