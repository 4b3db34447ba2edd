"""Prepare-time (root) set-up of the ACME folder: owned by the worker's user, and a live
certificate from the first start on, so that Postfix, Dovecot and the worker always have
one at the same path: the self-signed pair until an ACME certificate replaces it."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from mailstack.acme.files import AcmeFiles


def prepare_acme_folder(files: AcmeFiles, self_signed: tuple[Path, Path], owner: str) -> None:
    account = pwd.getpwnam(owner)
    for folder in (files.folder, files.challenges, files.certs):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700 if folder != files.challenges else 0o755)
    if not files.cert.is_file() or not files.key.is_file():
        cert, key = self_signed
        files.install("self-signed", cert.read_text(), key.read_text())
    for top, dirs, names in os.walk(files.folder):
        for entry in [Path(top), *(Path(top, n) for n in (*dirs, *names))]:
            os.lchown(entry, account.pw_uid, account.pw_gid)
