"""`mailstack dns`: the expected records (pure), their zone-file form, and the comparison of
`mailstack.dns.check` run against an in-memory table of answers instead of a resolver."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

import dns.rdatatype
import dns.zone
import pytest

from mailstack.dns.check import Answer, Finding, check_records
from mailstack.dns.records import (
    DkimKey,
    Record,
    expected_records,
    mta_sts_id,
    mta_sts_policy,
    txt_strings,
    zone_text,
)
from mailstack.settings.values import parse_nameserver

DOMAIN = "example.com"
SERVER = "mx.example.net"
PORTS: dict[str, int | None] = {"imap": 143, "imaps": 993, "submission": 587, "submissions": 465}
KEY = DkimKey("s1", "v=DKIM1; h=sha256; k=rsa; s=email; p=" + "A" * 300 + "QAB")
ADDRESSES = ("192.0.2.25", "2001:db8::25")


def records(**changes: object) -> list[Record]:
    arguments: dict[str, object] = {
        "domain": DOMAIN,
        "server": SERVER,
        "ports": PORTS,
        "dkim": [KEY],
    }
    arguments.update(changes)
    return expected_records(**arguments)  # type: ignore[arg-type]


def by_name(found: list[Record]) -> dict[tuple[str, str], str]:
    return {(r.name, r.rtype): r.value for r in found if r.in_zone}


# -- the records ------------------------------------------------------------------------------


def test_every_record_a_hosted_domain_needs() -> None:
    expected = by_name(records())
    policy_id = hashlib.sha256(mta_sts_policy(SERVER).encode()).hexdigest()[:20]
    assert expected == {
        ("example.com", "MX"): "10 mx.example.net.",
        ("example.com", "TXT"): "v=spf1 mx -all",
        ("s1._domainkey.example.com", "TXT"): KEY.value,
        ("_dmarc.example.com", "TXT"): "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com",
        ("_mta-sts.example.com", "TXT"): f"v=STSv1; id={policy_id}",
        ("mta-sts.example.com", "CNAME"): "mx.example.net.",
        ("_smtp._tls.example.com", "TXT"): "v=TLSRPTv1; rua=mailto:postmaster@example.com",
        ("autoconfig.example.com", "CNAME"): "mx.example.net.",
        ("autodiscover.example.com", "CNAME"): "mx.example.net.",
        ("_imaps._tcp.example.com", "SRV"): "0 1 993 mx.example.net.",
        ("_imap._tcp.example.com", "SRV"): "10 1 143 mx.example.net.",
        ("_submissions._tcp.example.com", "SRV"): "0 1 465 mx.example.net.",
        ("_submission._tcp.example.com", "SRV"): "10 1 587 mx.example.net.",
    }
    outside = [(r.purpose, r.name, r.rtype) for r in records() if not r.in_zone]
    assert outside == [("server", SERVER, "A/AAAA"), ("PTR", SERVER, "PTR")]


def test_srv_records_follow_the_listeners() -> None:
    """The real ports; a disabled listener is announced as not offered (target '.')."""
    ports = {"imaps": 10993, "submissions": 465, "submission": 587, "imap": None}
    expected = by_name(records(ports=ports))
    assert expected[("_imaps._tcp.example.com", "SRV")] == "0 1 10993 mx.example.net."
    assert expected[("_imap._tcp.example.com", "SRV")] == "0 0 0 ."


def test_one_dkim_record_per_key_and_none_without_keys() -> None:
    other = DkimKey("s2", "v=DKIM1; k=rsa; p=BBBB")
    names = [r.name for r in records(dkim=[KEY, other]) if r.purpose == "DKIM"]
    assert names == ["s1._domainkey.example.com", "s2._domainkey.example.com"]
    assert not [r for r in records(dkim=[]) if r.purpose == "DKIM"]
    assert other.public_key == "BBBB"


def test_the_mta_sts_id_is_derived_from_the_policy() -> None:
    policy = mta_sts_policy(SERVER, "enforce")
    assert policy == "version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 604800\r\n"
    assert mta_sts_id(policy) == mta_sts_id(mta_sts_policy(SERVER, "enforce"))  # stable
    assert re.fullmatch(r"[0-9a-f]{1,32}", mta_sts_id(policy))
    ids = {
        mta_sts_id(mta_sts_policy(server, mode))
        for server in (SERVER, "mail.example.org")
        for mode in ("testing", "enforce")
    }
    assert len(ids) == 4  # a new policy gets a new id
    txt = by_name(records(mta_sts_mode="enforce"))[("_mta-sts.example.com", "TXT")]
    assert txt == f"v=STSv1; id={mta_sts_id(policy)}"


def test_txt_values_are_split_into_quoted_strings_of_at_most_255() -> None:
    assert txt_strings('say "hi" \\ there') == ['"say \\"hi\\" \\\\ there"']
    parts = txt_strings("x" * 600)
    assert [len(p) - 2 for p in parts] == [255, 255, 90]


def test_the_printed_zone_is_a_zone_file_with_exactly_the_records() -> None:
    """What `mailstack dns` prints loads as a zone (without SOA and NS: the user's zone has
    them, and their $TTL) and holds every in-zone record, long TXT strings joined back."""
    text = zone_text(DOMAIN, SERVER, records(), "testing")
    zone = dns.zone.from_text(
        "$TTL 3600\n" + text, origin=DOMAIN, check_origin=False, relativize=False
    )
    loaded: dict[tuple[str, str], str] = {}
    for name, rdataset in zone.iterate_rdatasets():
        (rdata,) = list(rdataset)
        owner = name.to_text(omit_final_dot=True)
        rtype = dns.rdatatype.to_text(rdataset.rdtype)
        if rtype == "TXT":
            loaded[(owner, rtype)] = b"".join(rdata.strings).decode()  # type: ignore[attr-defined]
        else:
            loaded[(owner, rtype)] = rdata.to_text()
    assert loaded == by_name(records())
    assert "; The MTA-STS policy to serve at https://mta-sts.example.com/" in text
    assert ";   PTR of every address of mx.example.net -> mx.example.net." in text


# -- checking, against a table of answers -----------------------------------------------------


@dataclass
class Table:
    """Answers by (name, type), with how often each was asked; unknown names are NXDOMAIN."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, name: str, rtype: str) -> Answer:
        self.asked.append((name, rtype))
        if (name, rtype) in self.answers:
            return self.answers[(name, rtype)]
        exists = any(key[0] == name for key in self.answers)
        return Answer(nxdomain=not exists)

    def put(self, name: str, rtype: str, *texts: str) -> None:
        self.answers[(name, rtype)] = Answer(tuple(texts))


def published(expected: list[Record]) -> Table:
    """Every expected record published as it should be, as a resolver would return them."""
    table = Table()
    for record in expected:
        if not record.in_zone:
            continue
        table.put(record.name, record.rtype, record.value)
        if record.rtype == "CNAME":  # A and AAAA follow the CNAME
            table.put(record.name, "A", ADDRESSES[0])
            table.put(record.name, "AAAA", ADDRESSES[1])
    table.put(SERVER, "A", ADDRESSES[0])
    table.put(SERVER, "AAAA", ADDRESSES[1])
    for address in ADDRESSES:
        table.put(ipaddress.ip_address(address).reverse_pointer, "PTR", f"{SERVER}.")
    return table


def statuses(findings: list[Finding]) -> dict[tuple[str, str], str]:
    return {(f.record.name, f.record.rtype): f.status for f in findings}


def test_all_published_means_all_ok_and_each_lookup_is_made_once() -> None:
    expected = records()
    table = published(expected)
    findings = check_records(expected, SERVER, table)
    assert {f.status for f in findings} == {"ok"}, [f for f in findings if f.status != "ok"]
    ptr = [f.record.name for f in findings if f.record.purpose == "PTR"]
    assert ptr == ["25.2.0.192.in-addr.arpa", ipaddress.ip_address(ADDRESSES[1]).reverse_pointer]
    assert len(table.asked) == len(set(table.asked))


def test_missing_wrong_and_failed_lookups() -> None:
    expected = records()
    table = published(expected)
    del table.answers[("_dmarc.example.com", "TXT")]
    table.put("s1._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=OTHERKEY")
    table.put("_imaps._tcp.example.com", "SRV", "0 1 994 mx.example.net.")
    table.put("autoconfig.example.com", "CNAME", "web.example.com.")
    table.answers[("_smtp._tls.example.com", "TXT")] = Answer(error="timed out")
    found = {(f.record.name, f.record.rtype): f for f in check_records(expected, SERVER, table)}
    assert found[("_dmarc.example.com", "TXT")].status == "missing"
    dkim = found[("s1._domainkey.example.com", "TXT")]
    assert (dkim.status, dkim.found) == ("wrong", ("v=DKIM1; k=rsa; p=OTHERKEY",))
    assert "p= key" in dkim.detail
    assert found[("_imaps._tcp.example.com", "SRV")].status == "wrong"
    assert found[("autoconfig.example.com", "CNAME")].status == "wrong"
    assert found[("_smtp._tls.example.com", "TXT")].status == "error"
    assert found[("example.com", "MX")].status == "ok"


@pytest.mark.parametrize(
    ("spf", "status"),
    [
        (["v=spf1 mx -all"], "ok"),
        (["v=spf1 +mx/24 ~all"], "ok"),
        (["v=spf1 ip4:192.0.2.0/24 -all"], "ok"),
        (["v=spf1 ip6:2001:db8::/32 -all"], "ok"),
        (["v=spf1 a:mx.example.net -all"], "ok"),
        (["V=SPF1 MX -ALL", "some-verification=123"], "ok"),
        (["v=spf1 -mx ip4:198.51.100.1 -all"], "wrong"),
        (["v=spf1 include:_spf.example.org -all"], "wrong"),
        (["v=spf1 mx -all", "v=spf1 a -all"], "wrong"),  # RFC 7208: one record only
        (["v=spf10 mx -all", "google-site-verification=x"], "missing"),
    ],
)
def test_spf(spf: list[str], status: str) -> None:
    expected = records()
    table = published(expected)
    table.put(DOMAIN, "TXT", *spf)
    (finding,) = [f for f in check_records(expected, SERVER, table) if f.record.purpose == "SPF"]
    assert finding.status == status, finding


@pytest.mark.parametrize(
    ("texts", "status"),
    [
        (["v=DMARC1; p=none"], "ok"),
        (["v=DMARC1;p=reject", "v=DMARC1; p=none"], "wrong"),
        (["p=reject; v=DMARC1"], "wrong"),
    ],
)
def test_dmarc_needs_exactly_one_record_starting_with_its_version(
    texts: list[str], status: str
) -> None:
    expected = records()
    table = published(expected)
    table.put("_dmarc.example.com", "TXT", *texts)
    assert statuses(check_records(expected, SERVER, table))[("_dmarc.example.com", "TXT")] == status


def test_a_stale_mta_sts_id_is_wrong() -> None:
    expected = records()
    table = published(expected)
    table.put("_mta-sts.example.com", "TXT", "v=STSv1; id=20240101")
    assert statuses(check_records(expected, SERVER, table))[("_mta-sts.example.com", "TXT")] == (
        "wrong"
    )


def test_host_names_may_carry_the_servers_addresses_instead_of_a_cname() -> None:
    expected = records()
    table = published(expected)
    del table.answers[("autodiscover.example.com", "CNAME")]
    del table.answers[("mta-sts.example.com", "CNAME")]
    table.put("mta-sts.example.com", "A", "198.51.100.7")  # the policy on another web server
    table.put("mta-sts.example.com", "AAAA")
    table.put("autoconfig.example.com", "CNAME")
    table.put("autoconfig.example.com", "A", "198.51.100.7")  # not this server: wrong
    result = statuses(check_records(expected, SERVER, table))
    assert result[("autodiscover.example.com", "CNAME")] == "ok"
    assert result[("mta-sts.example.com", "CNAME")] == "ok"
    assert result[("autoconfig.example.com", "CNAME")] == "wrong"


def test_ptr_is_checked_only_when_the_server_name_resolves() -> None:
    expected = records()
    table = published(expected)
    del table.answers[(SERVER, "A")]
    del table.answers[(SERVER, "AAAA")]
    findings = check_records(expected, SERVER, table)
    by_purpose = {f.record.purpose: f for f in findings}
    assert by_purpose["server"].status == "missing"
    assert by_purpose["PTR"].status == "skipped"
    assert not by_purpose["PTR"].failed
    assert not [name for name, _ in table.asked if name.endswith(".arpa")]


def test_a_ptr_naming_another_host_is_wrong() -> None:
    expected = records()
    table = published(expected)
    table.put("25.2.0.192.in-addr.arpa", "PTR", "static-25.provider.example.")
    result = statuses(check_records(expected, SERVER, table))
    assert result[("25.2.0.192.in-addr.arpa", "PTR")] == "wrong"


def test_disabled_services_are_ok_when_announced_as_not_offered() -> None:
    expected = records(ports={**PORTS, "imap": None})
    table = published(expected)
    assert table.answers[("_imap._tcp.example.com", "SRV")] == Answer(("0 0 0 .",))
    assert statuses(check_records(expected, SERVER, table))[("_imap._tcp.example.com", "SRV")] == (
        "ok"
    )
    table.put("_imap._tcp.example.com", "SRV", "10 1 143 mx.example.net.")
    assert statuses(check_records(expected, SERVER, table))[("_imap._tcp.example.com", "SRV")] == (
        "wrong"
    )


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_nameserver_option(text: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize("text", ["ns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""])
def test_nameserver_option_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)
