"""Apple's configuration profile (.mobileconfig) for one mail account: iPhone, iPad and macOS
set up IMAP and SMTP from it, with the server's real host name and listener ports.

An XML property list (plistlib) with one `com.apple.mail.managed` payload. It holds no
password: the device asks for it once and uses it for both servers. The identifiers and
UUIDs are derived from the host and the address, so installing a newer download replaces
the profile instead of adding a second account.
"""

from __future__ import annotations

import plistlib
import re
import uuid

from mailstack.web.site import CLIENT_LISTENERS, Site

MEDIA_TYPE = "application/x-apple-aspen-config"
_NAMESPACE = uuid.UUID("7a0c0e4e-8a52-4d4f-9c7e-5d2f1b0f6c11")  # mailstack's own, fixed


def _identifier(site: Site, address: str) -> str:
    """`mx.example.com` + `alice@example.com` -> `com.example.mx.mail.alice-example-com`."""
    host = ".".join(reversed(site.hostname.lower().split(".")))
    return f"{host}.mail.{re.sub(r'[^A-Za-z0-9-]+', '-', address.lower()).strip('-')}"


def _port(site: Site, protocol: str) -> int | None:
    """The listener for `protocol` a device should use: implicit TLS (993, 465) when the
    server has it, else STARTTLS (143, 587); Apple's `UseSSL` means either, by port."""
    found = [
        (CLIENT_LISTENERS[name][1] != "SSL", port)
        for name, port in site.client_ports.items()
        if CLIENT_LISTENERS[name][0] == protocol
    ]
    return min(found)[1] if found else None


def apple_profile(site: Site, address: str) -> bytes:
    """The profile for `address` (canonical), as the bytes to download."""
    identifier = _identifier(site, address)
    account: dict[str, object] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.account",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"{identifier}.account")).upper(),
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
    }
    for prefix, protocol in (("Incoming", "imap"), ("Outgoing", "smtp")):
        port = _port(site, protocol)
        if port is None:
            continue
        account |= {
            f"{prefix}MailServerHostName": site.hostname,
            f"{prefix}MailServerPortNumber": port,
            f"{prefix}MailServerUseSSL": True,
            f"{prefix}MailServerAuthentication": "EmailAuthPassword",
            f"{prefix}MailServerUsername": address,
        }
    account["OutgoingPasswordSameAsIncomingPassword"] = True
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, identifier)).upper(),
        "PayloadDisplayName": f"{address} on {site.hostname}",
        "PayloadDescription": f"Sets up the mail account {address} (IMAP and SMTP).",
        "PayloadOrganization": site.hostname,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
