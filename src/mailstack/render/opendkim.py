"""OpenDKIM configuration: opendkim.conf, KeyTable, SigningTable, TrustedHosts.

OPENDKIM_<Key> overrides replace the key with exactly that name (empty removes it), applied
after mailstack's own values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from mailstack.dkim.keys import DomainKey
from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile


class DkimSettings(Protocol):
    """What OpenDKIM's files depend on; both profiles' settings have it."""

    @property
    def opendkim_overrides(self) -> Mapping[str, str | None]: ...

    @property
    def dkim_sign_subdomains(self) -> bool: ...


SIGN_HEADERS = "From,Sender,To,CC,Subject,Message-Id,Date,MIME-Version,Content-Type,Reply-To"


def opendkim_parameters(
    settings: DkimSettings, paths: Paths, mode: str = "sv", *, log_why: bool = False
) -> dict[str, str]:
    """mode `sv` (the relay, as boky/postfix) or `s` (the server: only submission mail
    passes the milter, inbound verification is the spam filter's job). `log_why`: the
    relay's INBOUND_DEBUGGING."""
    conf = paths.opendkim_config
    params = {
        "Syslog": "yes",
        "SyslogSuccess": "yes",
        "LogWhy": "yes" if log_why else "no",
        "Mode": mode,
        "Canonicalization": "relaxed/simple",
        "SignatureAlgorithm": "rsa-sha256",
        "SignHeaders": SIGN_HEADERS,
        "OversignHeaders": SIGN_HEADERS,
        # boky/postfix compatible: keys on mounted volumes often sit in group-writable folders
        "RequireSafeKeys": "no",
        "Socket": f"local:{paths.opendkim_socket}",
        "PidFile": str(paths.opendkim_run / "opendkim.pid"),
        "UserID": "opendkim",
        # socket 0666 inside a 0750 opendkim:postfix folder: only Postfix can reach it
        "UMask": "0111",
        "KeyTable": f"file:{conf / 'KeyTable'}",
        "SigningTable": f"refile:{conf / 'SigningTable'}",
        "ExternalIgnoreList": f"refile:{conf / 'TrustedHosts'}",
        "InternalHosts": f"refile:{conf / 'TrustedHosts'}",
    }
    for key, value in settings.opendkim_overrides.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def render_opendkim_conf(params: Mapping[str, str]) -> str:
    body = "".join(f"{key:<24}{value}\n" for key, value in params.items())
    return GENERATED_HEADER + body


def render_key_table(keys: Sequence[DomainKey]) -> str:
    rows = (f"{k.record_name} {k.domain}:{k.selector}:{k.private_key}\n" for k in keys)
    return GENERATED_HEADER + "".join(rows)


def render_signing_table(keys: Sequence[DomainKey], subdomains: bool) -> str:
    rows = []
    for key in keys:
        rows.append(f"*@{key.domain} {key.record_name}\n")
        if subdomains:
            rows.append(f"*@*.{key.domain} {key.record_name}\n")
    return GENERATED_HEADER + "".join(rows)


def render_opendkim(
    settings: DkimSettings,
    paths: Paths,
    keys: Sequence[DomainKey],
    mode: str = "sv",
    *,
    log_why: bool = False,
) -> list[RenderedFile]:
    conf = paths.opendkim_config
    trusted = "# every client Postfix accepted is ours to sign for\n0.0.0.0/0\n::/0\n"
    params = opendkim_parameters(settings, paths, mode, log_why=log_why)
    return [
        RenderedFile(conf / "opendkim.conf", render_opendkim_conf(params)),
        RenderedFile(conf / "KeyTable", render_key_table(keys)),
        RenderedFile(
            conf / "SigningTable", render_signing_table(keys, settings.dkim_sign_subdomains)
        ),
        RenderedFile(conf / "TrustedHosts", GENERATED_HEADER + trusted),
    ]
