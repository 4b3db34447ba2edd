"""When a certificate is due, and how a new one becomes the live one."""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme

from mailstack.acme.certs import read_certificate, renewal_reason
from mailstack.acme.files import AcmeFiles
from mailstack.runtime.tls import self_signed_pair

NAMES = ("mail.example.com", "mta-sts.example.com")


def _issued(tmp_path: Path, *names: str) -> Path:
    cert = trustme.CA().issue_cert(*names)
    path = tmp_path / "cert.pem"
    cert.cert_chain_pems[0].write_to_path(str(path))
    return path


def test_due_at_two_thirds_of_the_lifetime(tmp_path: Path) -> None:
    info = read_certificate(_issued(tmp_path, *NAMES))
    lifetime = info.not_after - info.not_before
    before = info.not_before + lifetime * 0.66
    after = info.not_before + lifetime * 0.67
    assert renewal_reason(info, NAMES, before) is None
    reason = renewal_reason(info, NAMES, after)
    assert reason is not None
    assert "two thirds" in reason


def test_due_at_once_for_missing_names_self_signed_or_nothing(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    info = read_certificate(_issued(tmp_path, NAMES[0]))
    assert renewal_reason(info, NAMES, now) == "the certificate does not cover mta-sts.example.com"
    cert, _ = self_signed_pair(NAMES[0])
    (tmp_path / "self.pem").write_bytes(cert)
    self_signed = read_certificate(tmp_path / "self.pem")
    assert renewal_reason(self_signed, NAMES[:1], now) == "the certificate in use is self-signed"
    assert renewal_reason(None, NAMES, now) == "no certificate yet"


def test_install_switches_the_pair_and_keeps_a_few(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path / "acme")
    for number in range(5):
        files.install(f"n{number}", f"cert {number}\n", f"key {number}\n")
        assert files.cert.read_text() == f"cert {number}\n"
        assert files.key.read_text() == f"key {number}\n"
        assert (files.key.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in files.certs.iterdir()) == ["n2", "n3", "n4"]
    assert files.live.is_symlink()


def test_renewal_request_is_taken_once(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    assert files.take_renewal_request() is None
    files.request_renewal(force=True)
    assert files.take_renewal_request() == "force"
    assert files.take_renewal_request() is None
    files.request_renewal(force=False)
    assert files.take_renewal_request() == "due"
