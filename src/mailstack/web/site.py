"""What the web listeners say about the server: the MTA-STS policy (RFC 8461) and the mail
clients' autoconfiguration (Thunderbird's config-v1.1.xml, Outlook's autodiscover).

Pure functions of `Site`; the routes in wellknown.py add the datastore's hosted domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, unescape

MTA_STS_MAX_AGE = 604800  # one week, as RFC 8461 suggests for a stable policy

#: client listener name -> (protocol, socket type as Thunderbird spells it)
CLIENT_LISTENERS = {
    "imaps": ("imap", "SSL"),
    "imap": ("imap", "STARTTLS"),
    "submissions": ("smtp", "SSL"),
    "submission": ("smtp", "STARTTLS"),
}

_ADDRESS = re.compile(r"^[^@\s<>&\"']{1,64}@([A-Za-z0-9.-]{1,253})$")


@dataclass(frozen=True)
class Site:
    """The server as mail clients and sending servers see it."""

    hostname: str
    mta_sts_mode: str = "testing"
    #: enabled client listeners by name (see CLIENT_LISTENERS) -> port, best first
    client_ports: dict[str, int] = field(default_factory=dict)


def address_domain(address: str) -> str | None:
    """The domain of a plausible mail address, lower case; None when it is not one."""
    match = _ADDRESS.match(address.strip())
    return match[1].lower().rstrip(".") if match else None


def mta_sts_policy(site: Site) -> str:
    return (
        "version: STSv1\n"
        f"mode: {site.mta_sts_mode}\n"
        f"mx: {site.hostname}\n"
        f"max_age: {MTA_STS_MAX_AGE}\n"
    )


def _servers(site: Site, protocol: str) -> list[tuple[int, str]]:
    return [
        (port, socket_type)
        for name, port in site.client_ports.items()
        for proto, socket_type in [CLIENT_LISTENERS[name]]
        if proto == protocol
    ]


def thunderbird_config(site: Site, domain: str) -> str:
    """Thunderbird's autoconfig (config-v1.1.xml): every enabled client listener."""
    host = escape(site.hostname)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f'  <emailProvider id="{escape(domain)}">',
        f"    <domain>{escape(domain)}</domain>",
        f"    <displayName>{escape(domain)}</displayName>",
        f"    <displayShortName>{escape(domain)}</displayShortName>",
    ]
    for protocol, element in (("imap", "incomingServer"), ("smtp", "outgoingServer")):
        for port, socket_type in _servers(site, protocol):
            lines += [
                f'    <{element} type="{protocol}">',
                f"      <hostname>{host}</hostname>",
                f"      <port>{port}</port>",
                f"      <socketType>{socket_type}</socketType>",
                "      <authentication>password-cleartext</authentication>",
                "      <username>%EMAILADDRESS%</username>",
                f"    </{element}>",
            ]
    lines += ["  </emailProvider>", "</clientConfig>", ""]
    return "\n".join(lines)


AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_REQUESTED_ADDRESS = re.compile(rb"<(?:[A-Za-z0-9_]+:)?EMailAddress>\s*([^<\s]{1,320})\s*</")


def requested_address(body: bytes) -> str | None:
    """The EMailAddress of an autodiscover request. Read with a pattern, not an XML parser:
    the body comes from anyone, and one element is all that is needed."""
    match = _REQUESTED_ADDRESS.search(body)
    return unescape(match[1].decode("utf-8", "replace")) if match else None


def outlook_autodiscover(site: Site, address: str) -> str:
    """Outlook's autodiscover answer (POX schema 2006a) for `address`."""
    protocols: list[str] = []
    for protocol, kind in (("imap", "IMAP"), ("smtp", "SMTP")):
        for port, socket_type in _servers(site, protocol)[:1]:
            tls = (
                "        <SSL>on</SSL>"
                if socket_type == "SSL"
                else "        <SSL>off</SSL>\n        <Encryption>TLS</Encryption>"
            )
            protocols.append(
                "      <Protocol>\n"
                f"        <Type>{kind}</Type>\n"
                f"        <Server>{escape(site.hostname)}</Server>\n"
                f"        <Port>{port}</Port>\n"
                f"        <LoginName>{escape(address)}</LoginName>\n"
                "        <DomainRequired>off</DomainRequired>\n"
                "        <SPA>off</SPA>\n"
                f"{tls}\n"
                "        <AuthRequired>on</AuthRequired>\n"
                "      </Protocol>"
            )
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            f'<Autodiscover xmlns="{AUTODISCOVER_RESPONSE}">',
            f'  <Response xmlns="{OUTLOOK_RESPONSE}">',
            "    <Account>",
            "      <AccountType>email</AccountType>",
            "      <Action>settings</Action>",
            *protocols,
            "    </Account>",
            "  </Response>",
            "</Autodiscover>",
            "",
        ]
    )
