"""The worker's ACME service from its options: the account, the names, and how challenges
are answered (HTTP-01 files for the web listener, or DNS-01 by RFC 2136 dynamic update).

The TSIG secret comes in the environment (`MAILSTACK_ACME_DNS_TSIG_SECRET`), never in argv,
where every local user could read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

    from mailstack.acme.rfc2136 import Rfc2136Provider
    from mailstack.worker.services import Service

TSIG_SECRET_ENV = "MAILSTACK_ACME_DNS_TSIG_SECRET"  # noqa: S105 - a variable's name


def add_acme_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ACME")
    group.add_argument(
        "--acme-folder", type=Path, help="ACME state; --cert/--key are its live pair"
    )
    group.add_argument("--acme-email", help="turns ACME on: the account's contact")
    group.add_argument("--acme-directory", help="the ACME server's directory URL")
    group.add_argument("--acme-ca-file", type=Path, help="trust for the ACME server's HTTPS")
    group.add_argument("--acme-name", action="append", default=[], help="a certificate name")
    group.add_argument("--acme-challenge", choices=("http-01", "dns-01"), default="http-01")
    group.add_argument("--acme-dns-server", help="DNS-01: the server for updates, host:port")
    group.add_argument("--acme-dns-zone", help="DNS-01: the zone (default: from the SOA)")
    group.add_argument(
        "--acme-dns-tsig-key-name", help=f"DNS-01: TSIG key (secret: ${TSIG_SECRET_ENV})"
    )
    group.add_argument("--acme-dns-tsig-algorithm", default="hmac-sha256", help="DNS-01: TSIG")


def acme_renewer(
    args: argparse.Namespace, context: ssl.SSLContext | None, environ: Mapping[str, str]
) -> Service:
    """The renewer. Its modules are imported now, while still root: after the drop,
    Python's own library may be out of reach."""
    import mailstack.acme.client  # noqa: F401
    from mailstack.acme.answers import ChallengeAnswers, Dns01Answers, Http01Answers
    from mailstack.acme.files import AcmeAccount, AcmeFiles
    from mailstack.acme.renewer import AcmeRenewer
    from mailstack.worker.services import tls_reloader

    if args.acme_folder is None or not args.acme_name or not args.acme_directory:
        raise ValueError("--acme-email needs --acme-folder, --acme-directory and --acme-name")
    files = AcmeFiles(args.acme_folder)
    account = AcmeAccount(args.acme_directory, args.acme_email, args.acme_ca_file)
    answers: ChallengeAnswers = Http01Answers(files.challenges)
    if args.acme_challenge == "dns-01":
        answers = Dns01Answers(rfc2136_provider(args, environ))
    reload = tls_reloader(context, args.cert, args.key)  # the live pair, in the server profile
    return AcmeRenewer(account, files, tuple(args.acme_name), reload, answers=answers)


def rfc2136_provider(args: argparse.Namespace, environ: Mapping[str, str]) -> Rfc2136Provider:
    from mailstack.acme.rfc2136 import Rfc2136Provider, TsigKey
    from mailstack.settings.acme import parse_dns_server

    if not args.acme_dns_server:
        raise ValueError("--acme-challenge dns-01 needs --acme-dns-server")
    secret = environ.get(TSIG_SECRET_ENV)
    if bool(args.acme_dns_tsig_key_name) != bool(secret):
        raise ValueError(f"--acme-dns-tsig-key-name and ${TSIG_SECRET_ENV}: both or neither")
    tsig = None
    if args.acme_dns_tsig_key_name and secret:
        tsig = TsigKey(args.acme_dns_tsig_key_name, secret, args.acme_dns_tsig_algorithm)
    server = parse_dns_server(args.acme_dns_server)
    return Rfc2136Provider(server, tsig, args.acme_dns_zone)
