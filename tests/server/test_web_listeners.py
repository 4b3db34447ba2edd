"""The worker's HTTP and HTTPS listeners, as real processes on loopback, asked by httpx:
the MTA-STS policy per hosted domain, autoconfig and autodiscover, the redirect to HTTPS."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import trustme
from server_harness import shared_tempdir
from tests.helpers import free_port
from web_harness import running, worker_argv

from mailstack.store import MailStore

HOSTNAME = "mail.example.com"


@dataclass(frozen=True)
class Web:
    http: str
    https: str
    ca_file: Path

    @property
    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def get(self, url: str, host: str, **kwargs: object) -> httpx.Response:
        return httpx.get(url, headers={"Host": host}, verify=self.trust, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def web(sqlite_store: MailStore) -> Iterator[Web]:
    sqlite_store.add_domain("example.com")
    sqlite_store.add_domain("example.org")
    sqlite_store.add_alias_domain("example.net", "example.org")
    folder = shared_tempdir("mailstack-web-")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", HOSTNAME)
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "pair.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    http, https = free_port(), free_port()
    argv = worker_argv(
        str(sqlite_store.engine.url),
        *("--http", f"127.0.0.1:{http}", "--https", f"127.0.0.1:{https}"),
        *("--cert", str(folder / "pair.pem"), "--key", str(folder / "pair.pem")),
        *("--hostname", HOSTNAME, "--mta-sts-mode", "enforce"),
        *("--client-port", "imaps=993", "--client-port", "submissions=465"),
        *("--client-port", "submission=587"),
    )
    try:
        with running(argv) as worker:
            worker.wait_line(r"serving https, http", 30)
            yield Web(f"http://127.0.0.1:{http}", f"https://127.0.0.1:{https}", folder / "ca.pem")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


POLICY = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 604800\n"


@pytest.mark.parametrize("listener", ["http", "https"])
def test_mta_sts_policy_for_hosted_domains_only(web: Web, listener: str) -> None:
    base = getattr(web, listener)
    for domain in ("example.com", "example.org", "example.net"):
        answer = web.get(f"{base}/.well-known/mta-sts.txt", f"mta-sts.{domain}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text == POLICY
    for host in ("mta-sts.example.invalid", HOSTNAME, "example.com"):
        answer = web.get(f"{base}/.well-known/mta-sts.txt", host)
        assert answer.status_code == 404, host


def test_plain_http_redirects_everything_else(web: Web) -> None:
    answer = web.get(f"{web.http}/admin/users?page=2", HOSTNAME, follow_redirects=False)
    https_port = web.https.rsplit(":", 1)[1]
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://{HOSTNAME}:{https_port}/admin/users?page=2"
    unknown_token = web.get(f"{web.http}/.well-known/acme-challenge/abc", HOSTNAME)
    assert unknown_token.status_code == 404


def _servers(xml: str, kind: str) -> list[tuple[str, str, str]]:
    root = ElementTree.fromstring(xml)  # noqa: S314 - our own listener's answer
    return [
        (s.findtext("hostname", ""), s.findtext("port", ""), s.findtext("socketType", ""))
        for s in root.iter(kind)
    ]


@pytest.mark.parametrize(
    "path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"]
)
def test_thunderbird_autoconfig_lists_the_listeners(web: Web, path: str) -> None:
    answer = web.get(f"{web.https}{path}", HOSTNAME, params={"emailaddress": "Ann@Example.com"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert _servers(answer.text, "incomingServer") == [(HOSTNAME, "993", "SSL")]
    assert _servers(answer.text, "outgoingServer") == [
        (HOSTNAME, "465", "SSL"),
        (HOSTNAME, "587", "STARTTLS"),
    ]
    by_host = web.get(f"{web.http}{path}", "autoconfig.example.org")
    assert by_host.status_code == 200
    assert "<domain>example.org</domain>" in by_host.text
    other = web.get(f"{web.https}{path}", HOSTNAME, params={"emailaddress": "x@elsewhere.test"})
    assert other.status_code == 404
    no_address = web.get(f"{web.https}{path}", HOSTNAME)
    assert no_address.status_code == 404


def _autodiscover(web: Web, address: str) -> httpx.Response:
    body = (
        '<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
        'autodiscover/outlook/requestschema/2006"><Request>'
        f"<EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>"
        "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    )
    return httpx.post(
        f"{web.https}/autodiscover/autodiscover.xml",
        content=body,
        headers={"Host": HOSTNAME, "Content-Type": "text/xml"},
        verify=web.trust,
        timeout=10,
    )


def test_outlook_autodiscover_for_hosted_addresses(web: Web) -> None:
    answer = _autodiscover(web, "bob@example.com")
    assert answer.status_code == 200
    ns = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
    root = ElementTree.fromstring(answer.text)  # noqa: S314 - our own listener's answer
    protocols = {
        p.findtext(f"{ns}Type"): (p.findtext(f"{ns}Port"), p.findtext(f"{ns}LoginName"))
        for p in root.iter(f"{ns}Protocol")
    }
    assert protocols == {"IMAP": ("993", "bob@example.com"), "SMTP": ("465", "bob@example.com")}
    assert _autodiscover(web, "bob@elsewhere.test").status_code == 404
    assert _autodiscover(web, "not an address").status_code == 404
    # markup in the address is never echoed: it is not an address
    assert _autodiscover(web, "a&lt;b&gt;@example.com").status_code == 404
