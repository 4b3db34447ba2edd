"""`mailstack tls show` and `mailstack tls renew`: the server's certificate in use, and a
renewal request to the running worker's ACME service (a file it looks for every 2 s)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailstack.admin.common import AdminError, group, reporting, show
from mailstack.errors import ConfigError, ExitCode
from mailstack.paths import Paths

if TYPE_CHECKING:
    from mailstack.settings.server import ServerSettings

app = group("The server's TLS certificate (ACME or your own).")

AS_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings() -> ServerSettings:
    from mailstack.settings.server import load_server_settings

    try:
        return load_server_settings(os.environ)
    except ConfigError as exc:
        raise AdminError("; ".join(str(p) for p in exc.problems), ExitCode.CONFIG) from None


def _source(settings: ServerSettings) -> str:
    if settings.tls_cert_file is not None:
        return "MAILSTACK_TLS_CERT_FILE"
    if settings.acme_email:
        return f"ACME ({settings.acme_directory})"
    return "self-signed"


@app.command("show")
def show_certificates(as_json: AS_JSON = False) -> None:
    """The certificate Postfix, Dovecot and the worker serve: names, issuer, serial, expiry."""
    from mailstack.acme.certs import read_certificate
    from mailstack.render.server import tls_files

    with reporting():
        settings = _settings()
        paths = Paths(settings.root)
        cert, _ = tls_files(settings, paths)
        try:
            info = read_certificate(Path(cert))
        except (OSError, ValueError) as exc:
            raise AdminError(f"cannot read the certificate {cert}: {exc}") from None
    record: dict[str, object] = {
        "file": str(info.path),
        "source": _source(settings),
        "names": list(info.names),
        "issuer": info.issuer,
        "serial": info.serial_hex,
        "not_after": info.not_after.isoformat(),
        "renewal_due": info.renew_after.isoformat(),
    }
    expiry = f"{info.not_after:%Y-%m-%d %H:%M} UTC"
    cells = [[str(info.path), ", ".join(info.names), info.issuer, info.serial_hex, expiry]]
    headers = ["FILE", "NAMES", "ISSUER", "SERIAL", "NOT AFTER"]
    show(as_json, [record], headers, cells, "no certificate")


@app.command("renew")
def renew(
    force: Annotated[bool, typer.Option("--force", help="Renew even when not due.")] = False,
) -> None:
    """Ask the running server's ACME service to renew now (when due, or always with --force)."""
    from mailstack.acme.files import AcmeFiles

    with reporting():
        settings = _settings()
        if not settings.acme_email or settings.tls_cert_file is not None:
            raise AdminError("ACME is off: set MAILSTACK_ACME_EMAIL", ExitCode.USAGE)
        files = AcmeFiles(Paths(settings.root).acme)
        if not files.folder.is_dir():
            raise AdminError(f"no ACME folder {files.folder}: has the server run yet?")
        files.request_renewal(force)
    typer.echo(f"renewal requested ({'forced' if force else 'when due'}); see the server's log")
