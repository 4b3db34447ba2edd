"""What to publish in DNS for one hosted domain, as plain data.

Nothing here resolves or reads anything: the domain, the server's name, its client ports and
the domain's DKIM keys go in, the expected records come out. `mailstack dns` prints them and
`mailstack.dns.check` compares them with what a resolver sees. Names are lower-case A-labels
without the final dot; values are in zone-file presentation form, except TXT values, which are
the text itself (`zone_line` quotes and splits them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MX_PRIORITY = 10
SPF_RECORD = "v=spf1 mx -all"
MTA_STS_MAX_AGE = 604800  # one week: senders recheck the policy at least that often
MTA_STS_ID_LENGTH = 20  # RFC 8461 allows 1 to 32 letters and digits
TXT_STRING_LIMIT = 255  # one character-string of a TXT record (RFC 1035)

#: Client services announced with SRV records (RFC 6186), implicit TLS preferred (RFC 8314):
#: (service label, listener name, priority).
SRV_SERVICES: tuple[tuple[str, str, int], ...] = (
    ("_imaps._tcp", "imaps", 0),
    ("_imap._tcp", "imap", 10),
    ("_submissions._tcp", "submissions", 0),
    ("_submission._tcp", "submission", 10),
)

_SRV_WHAT = {
    "imaps": "IMAP with implicit TLS",
    "imap": "IMAP with STARTTLS",
    "submissions": "mail submission with implicit TLS",
    "submission": "mail submission with STARTTLS",
}

SERVER_ADDRESS = "<the public IPv4 and IPv6 addresses of this server>"


@dataclass(frozen=True)
class DkimKey:
    """One signing key of a domain: its selector, its TXT record's text, and its state
    (`active`, or what `mailstack dkim show` says of a pending or retiring selector)."""

    selector: str
    value: str
    state: str = "active"

    @property
    def public_key(self) -> str:
        """The `p=` tag: what a receiver verifies signatures with."""
        return tags(self.value).get("p", "")


@dataclass(frozen=True)
class Record:
    """One record to publish.

    `purpose` says what it is for (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, autoconfig,
    autodiscover, SRV, server, PTR). `in_zone` is false for the two records that do not belong
    in the domain's zone: the server name's addresses and their reverse (PTR) records, whose
    `name` is then the server name they are about.
    """

    purpose: str
    name: str
    rtype: str
    value: str
    note: str = ""
    in_zone: bool = True

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "purpose": self.purpose,
            "name": self.name,
            "type": self.rtype,
            "value": self.value,
            "in_zone": self.in_zone,
            "note": self.note,
        }


def tags(text: str) -> dict[str, str]:
    """`k=v; k=v` tag lists (DKIM, DMARC, MTA-STS, TLS-RPT): keys lower-cased, values
    stripped of white space (a DKIM `p=` may be folded); the first occurrence wins."""
    found: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            found.setdefault(key.strip().lower(), "".join(value.split()))
    return found


def mta_sts_policy(server: str, mode: str = "testing", max_age: int = MTA_STS_MAX_AGE) -> str:
    """The policy file served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461:
    CRLF-separated `key: value` lines)."""
    lines = ["version: STSv1", f"mode: {mode}", f"mx: {server}", f"max_age: {max_age}"]
    return "".join(f"{line}\r\n" for line in lines)


def mta_sts_id(policy: str) -> str:
    """The `id=` of the `_mta-sts` record: a digest of the policy, so it changes exactly when
    the policy does (which is what tells senders to fetch it again)."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:MTA_STS_ID_LENGTH]


def _dkim_note(domain: str, state: str) -> str:
    if state == "active":
        return f"active: the public half of the key OpenDKIM signs {domain}'s mail with"
    return state  # pending or retiring, with what to do next


def expected_records(
    domain: str,
    server: str,
    ports: Mapping[str, int | None],
    dkim: Sequence[DkimKey],
    mta_sts_mode: str = "testing",
) -> list[Record]:
    """Every record DOMAIN needs when its mail is handled by SERVER.

    `ports` maps listener names (imap, imaps, submission, submissions) to the port clients
    connect to; a missing or None entry is a disabled listener, announced as not offered.
    """
    postmaster = f"mailto:postmaster@{domain}"
    policy = mta_sts_policy(server, mta_sts_mode)
    host = f"{server}."
    records = [
        Record("MX", domain, "MX", f"{MX_PRIORITY} {host}", f"mail for {domain} goes to {server}"),
        Record(
            "SPF",
            domain,
            "TXT",
            SPF_RECORD,
            "only the domain's MX hosts send its mail; one v=spf1 record per name (RFC 7208)",
        ),
        *(
            Record(
                "DKIM",
                f"{key.selector}._domainkey.{domain}",
                "TXT",
                key.value,
                _dkim_note(domain, key.state),
            )
            for key in dkim
        ),
        Record(
            "DMARC",
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=quarantine; rua={postmaster}",
            "receivers quarantine mail that passes neither SPF nor DKIM for the domain; "
            "aggregate reports go to postmaster",
        ),
        Record(
            "MTA-STS",
            f"_mta-sts.{domain}",
            "TXT",
            f"v=STSv1; id={mta_sts_id(policy)}",
            "announces the MTA-STS policy (RFC 8461); the id changes with the policy",
        ),
        Record(
            "MTA-STS",
            f"mta-sts.{domain}",
            "CNAME",
            host,
            f"the policy host: https://mta-sts.{domain}/.well-known/mta-sts.txt must serve the "
            "policy with a certificate valid for that name (A/AAAA records will do too)",
        ),
        Record(
            "TLS-RPT",
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua={postmaster}",
            "senders report TLS failures to postmaster (RFC 8460)",
        ),
        Record(
            "autoconfig",
            f"autoconfig.{domain}",
            "CNAME",
            host,
            "mail client set-up (Thunderbird autoconfig)",
        ),
        Record(
            "autodiscover",
            f"autodiscover.{domain}",
            "CNAME",
            host,
            "mail client set-up (Outlook autodiscover)",
        ),
    ]
    for label, listener, priority in SRV_SERVICES:
        port = ports.get(listener)
        if port is None:
            value, note = "0 0 0 .", f"no {_SRV_WHAT[listener]} here: '.' tells clients not to try"
        else:
            value, note = f"{priority} 1 {port} {host}", f"{_SRV_WHAT[listener]} (RFC 6186)"
        records.append(Record("SRV", f"{label}.{domain}", "SRV", value, note))
    records += [
        Record(
            "server",
            server,
            "A/AAAA",
            SERVER_ADDRESS,
            "the MX host's own addresses, in the zone of the server name",
            in_zone=False,
        ),
        Record(
            "PTR",
            server,
            "PTR",
            host,
            f"every address of {server} resolves back to it; set by whoever owns the "
            "address, usually the hosting provider",
            in_zone=False,
        ),
    ]
    return records


def txt_strings(text: str) -> list[str]:
    """TXT data as quoted character-strings of at most 255 characters each."""
    chunks = [text[i : i + TXT_STRING_LIMIT] for i in range(0, len(text), TXT_STRING_LIMIT)]
    return ['"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks or [""]]


def zone_data(record: Record) -> str:
    """The record's data as a zone file wants it."""
    return " ".join(txt_strings(record.value)) if record.rtype == "TXT" else record.value


def zone_text(domain: str, server: str, records: Iterable[Record], mta_sts_mode: str) -> str:
    """The records as zone-file lines with a comment each, then what lives elsewhere (the
    server's addresses and PTR records, the MTA-STS policy) as comments."""
    records = list(records)
    zone = [r for r in records if r.in_zone]
    width = max((len(r.name) + 1 for r in zone), default=0)
    lines = [f"; DNS records for {domain}, whose mail is handled by {server}", ""]
    for record in zone:
        lines.append(f"; {record.purpose}: {record.note}")
        lines.append(f"{record.name + '.':<{width}}  IN {record.rtype:<5}  {zone_data(record)}")
    lines += ["", f"; Outside the zone of {domain}:"]
    for record in records:
        if record.in_zone:
            continue
        if record.rtype == "PTR":
            lines.append(f";   PTR of every address of {record.name} -> {record.value}")
        else:
            lines.append(f";   {record.name}.  IN {record.rtype}  {record.value}")
        lines.append(f";     ({record.note})")
    lines += [
        "",
        f"; The MTA-STS policy to serve at https://mta-sts.{domain}/.well-known/mta-sts.txt:",
        *(f";   {line}" for line in mta_sts_policy(server, mta_sts_mode).splitlines()),
    ]
    return "\n".join(lines) + "\n"
