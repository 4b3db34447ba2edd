"""What the web listeners answer, as pure functions: MTA-STS policy and client configs."""

from __future__ import annotations

from xml.etree import ElementTree

from mailstack.web.site import (
    Site,
    address_domain,
    mta_sts_policy,
    outlook_autodiscover,
    requested_address,
    thunderbird_config,
)

SITE = Site("mail.example.com", "testing", {"imaps": 993, "imap": 143, "submission": 587})


def test_policy_is_rfc8461_shaped() -> None:
    fields = dict(line.split(": ", 1) for line in mta_sts_policy(SITE).splitlines())
    assert fields == {
        "version": "STSv1",
        "mode": "testing",
        "mx": "mail.example.com",
        "max_age": "604800",
    }


def test_addresses() -> None:
    assert address_domain("Ann@Example.COM") == "example.com"
    for wrong in ("no-at", "a@b@c", "<x>@example.com", "a@exa mple.com", "a&b@example.com"):
        assert address_domain(wrong) is None
    body = b"<a:Autodiscover><a:Request><a:EMailAddress> b@x.org </a:EMailAddress></a:Request>"
    assert requested_address(body) == "b@x.org"
    assert requested_address(b"<Request></Request>") is None


def test_configs_escape_what_they_echo() -> None:
    site = Site('mail.example.com"&<', "testing", {"imaps": 993})
    ElementTree.fromstring(thunderbird_config(site, "exa<mple>.com"))  # noqa: S314
    answer = outlook_autodiscover(site, 'x"&<y>@example.com')
    ElementTree.fromstring(answer)  # noqa: S314
    assert "x&quot;&amp;&lt;y&gt;@example.com" in answer or 'x"&amp;&lt;y&gt;' in answer


def test_thunderbird_lists_only_enabled_listeners() -> None:
    root = ElementTree.fromstring(thunderbird_config(SITE, "example.com"))  # noqa: S314
    incoming = [(s.findtext("port"), s.findtext("socketType")) for s in root.iter("incomingServer")]
    outgoing = [(s.findtext("port"), s.findtext("socketType")) for s in root.iter("outgoingServer")]
    assert incoming == [("993", "SSL"), ("143", "STARTTLS")]
    assert outgoing == [("587", "STARTTLS")]


def test_the_worker_mounts_the_api_where_its_document_says() -> None:
    """The worker names the mount path without importing the API (it loads lazily)."""
    from mailstack.api.app import MOUNT_PATH
    from mailstack.worker.web import API_PATH

    assert API_PATH == MOUNT_PATH
