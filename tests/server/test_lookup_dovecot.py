"""A real private Dovecot authenticating, finding users and running sieve via the dict."""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path

import pytest

from mailstack.store import MailStore

PASSWORD = "correct horse battery"
MESSAGE = b"From: x@remote.org\r\nSubject: hello\r\n\r\nbody\r\n"
FILE_INTO = 'require ["fileinto", "mailbox"];\nfileinto :create "{folder}";\n'


@pytest.fixture
def mail(sqlite_store: MailStore) -> MailStore:
    sqlite_store.add_domain("example.com")
    sqlite_store.add_user("alice@example.com", PASSWORD, quota="1G")
    sqlite_store.add_user("bob@example.com", PASSWORD)
    return sqlite_store


def test_passdb_verifies_argon2id_hashes(mail: MailStore, dovecot) -> None:
    """`doveadm auth test` succeeds with the right password, in any letter case."""
    ok = dovecot.auth_test("Alice@Example.COM", PASSWORD)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "auth succeeded" in ok.stdout
    assert "user=alice@example.com" in ok.stdout

    wrong = dovecot.auth_test("alice@example.com", "not the password")
    assert wrong.returncode != 0
    assert "auth failed" in wrong.stdout
    unknown = dovecot.auth_test("nobody@example.com", PASSWORD)
    assert "auth failed" in unknown.stdout


def test_password_change_and_disable_apply_at_once(mail: MailStore, dovecot) -> None:
    mail.set_password("bob@example.com", "a brand new secret")
    assert dovecot.auth_test("bob@example.com", "a brand new secret").returncode == 0
    assert dovecot.auth_test("bob@example.com", PASSWORD).returncode != 0
    mail.disable_user("bob@example.com")
    disabled = dovecot.auth_test("bob@example.com", "a brand new secret")
    assert "auth failed" in disabled.stdout
    assert dovecot.doveadm("user", "bob@example.com").returncode == 0  # still gets mail


def test_userdb_fields_and_listing(mail: MailStore, dovecot) -> None:
    """`doveadm user` shows the quota from the store; `doveadm user '*'` lists users."""
    found = dovecot.doveadm("user", "alice@example.com")
    assert found.returncode == 0, found.stderr
    fields = dict(line.split("\t", 1) for line in found.stdout.splitlines() if "\t" in line)
    assert fields["quota_rule"] == "*:storage=1073741824B"
    assert fields["home"] == str(dovecot.root / "mail" / "example.com" / "alice")

    missing = dovecot.doveadm("user", "nobody@example.com")
    assert "doesn't exist" in missing.stdout

    # a user's own spam settings reach Dovecot's global Sieve step as plugin settings
    assert "sieve_env_spam_threshold" not in fields
    mail.set_spam("alice@example.com", threshold=4, enabled=False)
    found = dovecot.doveadm("user", "alice@example.com")
    fields = dict(line.split("\t", 1) for line in found.stdout.splitlines() if "\t" in line)
    assert (fields["sieve_env_spam_threshold"], fields["sieve_env_spam_filter"]) == ("4", "off")

    # no active Sieve script: personal scripts off for the user (no sieve dict opened at
    # delivery); one activated: the setting's own location, the store's dict
    assert fields["sieve"] == ""
    mail.put_script("alice@example.com", "rules", FILE_INTO.format(folder="Filed"), activate=True)
    found = dovecot.doveadm("user", "alice@example.com")
    assert "sieve\t" not in found.stdout

    listing = dovecot.doveadm("user", "*")
    assert listing.stdout.split() == ["alice@example.com", "bob@example.com"]


def test_imap_login(mail: MailStore, dovecot) -> None:
    """A real IMAP LOGIN through Dovecot, authenticated by the store."""
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=30) as imap:
        assert imap.login("alice@example.com", PASSWORD)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    with (
        imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=30) as imap,
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        imap.login("alice@example.com", "wrong password")


def _deliver(dovecot, recipient: str) -> None:
    with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port, timeout=30) as lmtp:
        assert lmtp.sendmail("x@remote.org", [recipient], MESSAGE) == {}


def _messages(dovecot, folder: str) -> int:
    base = dovecot.root / "mail" / "example.com" / "alice" / "Maildir"
    path = base / "new" if folder == "INBOX" else base / f".{folder}" / "new"
    return len(list(Path(path).iterdir())) if path.exists() else 0


def test_sieve_reads_the_active_script(mail: MailStore, dovecot) -> None:
    """LMTP delivery runs the user's active script from the store; edits apply at once."""
    mail.put_script("alice@example.com", "rules", FILE_INTO.format(folder="Filed"), activate=True)
    _deliver(dovecot, "alice@example.com")
    assert _messages(dovecot, "Filed") == 1

    mail.put_script("alice@example.com", "rules", FILE_INTO.format(folder="Other"))
    _deliver(dovecot, "alice@example.com")
    assert _messages(dovecot, "Other") == 1, dovecot.log()[-3000:]

    mail.activate_script("alice@example.com", None)
    _deliver(dovecot, "alice@example.com")
    assert _messages(dovecot, "INBOX") == 1
    assert (_messages(dovecot, "Filed"), _messages(dovecot, "Other")) == (1, 1)
