"""The admin commands as an administrator runs them: `python -m mailstack` in a subprocess,
against a SQLite file and (for domains and users) a private PostgreSQL, checked through
what the command prints and through the store itself."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from server_harness import free_port

from mailstack.sieve.check import check_script
from mailstack.store import MailStore

MAILSTACK = [sys.executable, "-m", "mailstack"]
PASSWORD = "correct horse battery"
OTHER_PASSWORD = "staple tuning fork"
VALID_SIEVE = (
    'require "fileinto";\nif header :contains "subject" "[spam]" {\n  fileinto "Junk";\n}\n'
)
INVALID_SIEVE = 'require "fileinto";\nfrobnicate "Junk";\n'


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without the variables that would point at a real install."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MAILSTACK_DATABASE_URL", "MAILSTACK_ROOT", "DKIM_SELECTOR"}
    }
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Cli:
    """`mailstack … --database URL` bound to one database."""

    database: str

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        proc = subprocess.run(
            [*MAILSTACK, *args, "--database", self.database],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=_environment(env),
            timeout=120,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.code == 0, f"mailstack {' '.join(args)} failed: {result.err}"
        assert "Traceback" not in result.err
        return result.out

    def json(self, *args: str) -> list[dict[str, Any]]:
        rows = json.loads(self.ok(*args, "--json"))
        assert isinstance(rows, list)
        return rows


@contextmanager
def opened(url: str) -> Iterator[MailStore]:
    store = MailStore.open(url)
    try:
        yield store
    finally:
        store.close()


def assert_one_error(result: Result, code: int, fragment: str) -> None:
    """A failure is one `error:` line on stderr naming the problem, and nothing on stdout."""
    assert result.code == code, result
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert result.out == ""


@pytest.fixture
def cli(store_url: str) -> Cli:
    """SQLite and PostgreSQL (see `store_url`)."""
    return Cli(store_url)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    return Cli(str(tmp_path / "state" / "mailstack.db"))


@pytest.fixture
def populated(sqlite_cli: Cli) -> Cli:
    """example.com with alice, on SQLite."""
    sqlite_cli.ok("domain", "add", "example.com")
    sqlite_cli.ok("user", "add", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    return sqlite_cli


# -- domains ------------------------------------------------------------------------------------


def test_domains_and_alias_domains(cli: Cli) -> None:
    """Domains are added normalised (a duplicate refused), listed as JSON with their alias
    domains, and removed."""
    assert cli.ok("domain", "add", "Example.COM") == "added domain example.com\n"
    cli.ok("domain", "add", "bücher.example")
    assert_one_error(cli("domain", "add", "EXAMPLE.com"), 1, "domain example.com already exists")
    cli.ok("domain", "alias", "add", "example.net", "example.com")
    domains = cli.json("domain", "list")
    assert [d["name"] for d in domains] == ["example.com", "xn--bcher-kva.example"]
    assert set(domains[0]) == {"name", "users", "aliases", "alias_domains", "created_at"}
    assert domains[0]["alias_domains"] == ["example.net"]
    assert cli.json("domain", "alias", "list") == [{"name": "example.net", "target": "example.com"}]
    assert "example.net" in cli.ok("domain", "list")

    cli.ok("domain", "alias", "remove", "example.net")
    cli.ok("domain", "remove", "BÜCHER.example")
    assert [d["name"] for d in cli.json("domain", "list")] == ["example.com"]
    assert cli.json("domain", "alias", "list") == []


def test_domain_in_use_needs_cascade(cli: Cli) -> None:
    """A typo must not delete mailboxes' logins: --cascade is needed while users remain."""
    cli.ok("domain", "add", "example.com")
    cli.ok("user", "add", "alice@example.com", "--password-stdin", stdin=PASSWORD)
    assert_one_error(cli("domain", "remove", "example.com"), 1, "1 users")
    cli.ok("domain", "remove", "example.com", "--cascade")
    assert cli.json("domain", "list") == []
    with opened(cli.database) as store:
        assert store.list_users() == []


# -- users --------------------------------------------------------------------------------------


def test_users_from_stdin_and_file(cli: Cli, tmp_path: Path) -> None:
    """Passwords read from stdin and from a file both log in; the listing shows the quota."""
    cli.ok("domain", "add", "example.com")
    out = cli.ok(
        "user", "add", "Alice@Example.com", "--quota", "1G", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert out == "added user alice@example.com (quota 1G)\n"
    secret = tmp_path / "bob.password"
    secret.write_text(OTHER_PASSWORD + "\n")
    cli.ok("user", "add", "bob@example.com", "--password-file", str(secret))

    users = cli.json("user", "list")
    assert [u["address"] for u in users] == ["alice@example.com", "bob@example.com"]
    assert set(users[0]) == {"address", "domain", "quota_bytes", "enabled", "created_at"}
    assert users[0]["quota_bytes"] == 1024**3
    assert users[1]["quota_bytes"] is None
    assert all(u["enabled"] and u["domain"] == "example.com" for u in users)
    with opened(cli.database) as store:
        assert store.verify_password("alice@example.com", PASSWORD)
        assert store.verify_password("bob@example.com", OTHER_PASSWORD)
        assert not store.verify_password("bob@example.com", OTHER_PASSWORD + "\n")


def test_passwd_disable_enable_quota_remove(cli: Cli) -> None:
    cli.ok("domain", "add", "example.com")
    cli.ok("user", "add", "alice@example.com", "--password-stdin", stdin=PASSWORD)
    cli.ok("user", "passwd", "alice@example.com", "--password-stdin", stdin=OTHER_PASSWORD)
    with opened(cli.database) as store:
        assert store.verify_password("alice@example.com", OTHER_PASSWORD)
        assert not store.verify_password("alice@example.com", PASSWORD)

    cli.ok("user", "disable", "alice@example.com")
    assert cli.json("user", "list")[0]["enabled"] is False
    with opened(cli.database) as store:
        assert not store.verify_password("alice@example.com", OTHER_PASSWORD)
    cli.ok("user", "enable", "alice@example.com")
    with opened(cli.database) as store:
        assert store.verify_password("alice@example.com", OTHER_PASSWORD)

    assert cli.ok("user", "quota", "alice@example.com", "512M").endswith("is now 512M\n")
    assert cli.json("user", "list", "--domain", "example.com")[0]["quota_bytes"] == 512 * 1024**2
    cli.ok("user", "quota", "alice@example.com", "unlimited")
    assert cli.json("user", "list")[0]["quota_bytes"] is None

    cli.ok("user", "remove", "alice@example.com")
    assert cli.json("user", "list") == []


def test_no_password_on_the_command_line(populated: Cli) -> None:
    """There is no option that takes a password: only a file, stdin or the prompt."""
    help_text = populated.ok("user", "add", "--help")
    options = {word.strip(",") for word in help_text.split() if word.startswith("--")}
    assert options == {"--quota", "--password-file", "--password-stdin", "--database", "--help"}
    refused = populated("user", "add", "bob@example.com", "--password", PASSWORD)
    assert refused.code == 2
    assert PASSWORD not in refused.err
    assert [u["address"] for u in populated.json("user", "list")] == ["alice@example.com"]


def test_no_password_and_no_terminal_is_an_error(populated: Cli) -> None:
    result = populated("user", "add", "bob@example.com")
    assert_one_error(result, 2, "--password-file FILE or --password-stdin")


def _type_at_prompts(master: int, answers: list[str], timeout: float) -> str:
    """Type the next answer whenever the terminal shows a prompt (`…: `); return all shown."""
    shown = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown.endswith(b": "):
            os.write(master, pending.pop(0).encode())
    return shown.decode(errors="replace")


def _take_terminal() -> None:
    """In the child: make stdin (the pty) the controlling terminal, as a login shell has."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_prompt_asks_twice_on_a_terminal(populated: Cli) -> None:
    """With no option and a person at the terminal, the password is asked twice, unechoed."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*MAILSTACK, "user", "add", "bob@example.com", "--database", populated.database],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_environment(),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        shown = _type_at_prompts(master, [OTHER_PASSWORD + "\n"] * 2, timeout=60)
        assert proc.wait(timeout=60) == 0, shown
    finally:
        os.close(master)
    assert "added user bob@example.com" in shown
    assert OTHER_PASSWORD not in shown
    with opened(populated.database) as store:
        assert store.verify_password("bob@example.com", OTHER_PASSWORD)


# (command line, exit code, what the one error line must say)
REFUSALS: list[tuple[str, int, str]] = [
    (
        "user add bob@nowhere.example --password-stdin",
        1,
        "domain nowhere.example is not hosted here",
    ),
    ("user add alice@example.com --password-stdin", 1, "user alice@example.com already exists"),
    ("user add not-an-address --password-stdin", 2, "'not-an-address' is not an email address"),
    ("user add bob@example.com --quota lots --password-stdin", 2, "quota: 'lots' is not a size"),
    (
        "user add bob@example.com --password-file /nonexistent/pw",
        2,
        "cannot read the password file",
    ),
    ("user passwd ghost@example.com --password-stdin", 1, "user ghost@example.com does not exist"),
    ("user quota alice@example.com 1.5G", 2, "quota: '1.5G' is not a size"),
    ("user disable ghost@example.com", 1, "user ghost@example.com does not exist"),
    ("domain add localhost", 2, "needs at least two labels"),
    ("domain remove example.org", 1, "domain example.org is not hosted here"),
    ("alias add info@example.com nobody", 2, "targets: 'nobody'"),
    ("alias remove info@example.com", 1, "alias info@example.com does not exist"),
]


def test_bad_input_is_one_clear_line(populated: Cli) -> None:
    """Every refusal names what is wrong in one line and exits non-zero; nothing changes.

    One test for all (not parametrised): each command is a whole Python start-up."""
    for command, code, fragment in REFUSALS:
        result = populated(*command.split(), stdin=OTHER_PASSWORD)
        try:
            assert_one_error(result, code, fragment)
        except AssertionError as exc:
            raise AssertionError(f"mailstack {command}: {exc}") from None
        assert OTHER_PASSWORD not in result.err
    assert [u["address"] for u in populated.json("user", "list")] == ["alice@example.com"]
    assert [d["name"] for d in populated.json("domain", "list")] == ["example.com"]
    assert populated.json("alias", "list") == []


def test_short_password_is_refused_without_echoing_it(populated: Cli) -> None:
    result = populated("user", "passwd", "alice@example.com", "--password-stdin", stdin="abc12")
    assert_one_error(result, 2, "password: must be at least 8 characters")
    assert "abc12" not in result.err


def test_unreachable_database(tmp_path: Path) -> None:
    """A database that does not answer: exit 75 (retry later), and its password is hidden."""
    down = Cli(f"postgresql://admin:hunter2secret@127.0.0.1:{free_port()}/mail")
    result = down("domain", "list")
    assert_one_error(result, 75, "cannot open the database")
    assert "hunter2secret" not in result.err
    bad_url = Cli("mysql://db.example/mail")("domain", "list")
    assert_one_error(bad_url, 2, "--database: unsupported database 'mysql'")


# -- aliases ------------------------------------------------------------------------------------


def test_aliases_and_catch_all(populated: Cli) -> None:
    populated.ok("alias", "add", "@example.com", "alice@example.com")
    out = populated.ok("alias", "add", "info@example.com", "alice@example.com", "bob@example.org")
    assert out == "alias info@example.com -> alice@example.com, bob@example.org\n"
    assert populated.json("alias", "list", "--domain", "example.com") == [
        {
            "source": "@example.com",
            "domain": "example.com",
            "targets": ["alice@example.com"],
            "catch_all": True,
        },
        {
            "source": "info@example.com",
            "domain": "example.com",
            "targets": ["alice@example.com", "bob@example.org"],
            "catch_all": False,
        },
    ]
    populated.ok("alias", "remove", "info@example.com", "bob@example.org")
    assert populated.json("alias", "list")[1]["targets"] == ["alice@example.com"]
    populated.ok("alias", "remove", "@example.com")
    assert [a["source"] for a in populated.json("alias", "list")] == ["info@example.com"]


# -- sieve --------------------------------------------------------------------------------------


def test_sieve_put_get_activate(populated: Cli, tmp_path: Path) -> None:
    script = tmp_path / "filter.sieve"
    script.write_text(VALID_SIEVE)
    populated.ok("sieve", "put", "alice@example.com", "filter", str(script), "--activate")
    populated.ok("sieve", "put", "alice@example.com", "spare", "-", stdin=VALID_SIEVE)
    assert populated.ok("sieve", "get", "alice@example.com", "filter") == VALID_SIEVE

    scripts = populated.json("sieve", "list", "alice@example.com")
    assert [(s["name"], s["active"]) for s in scripts] == [("filter", True), ("spare", False)]
    assert set(scripts[0]) == {"name", "active", "size", "version", "updated_at"}
    assert scripts[0]["size"] == len(VALID_SIEVE.encode())

    populated.ok("sieve", "activate", "alice@example.com", "spare")
    active = [
        s["name"] for s in populated.json("sieve", "list", "alice@example.com") if s["active"]
    ]
    assert active == ["spare"]
    assert_one_error(
        populated("sieve", "remove", "alice@example.com", "spare"), 1, "deactivate it first"
    )
    populated.ok("sieve", "deactivate", "alice@example.com")
    populated.ok("sieve", "remove", "alice@example.com", "spare")
    scripts = populated.json("sieve", "list", "alice@example.com")
    assert [(s["name"], s["active"]) for s in scripts] == [("filter", False)]


def test_invalid_sieve_shows_the_compiler_and_stores_nothing(populated: Cli) -> None:
    compiler_says = check_script(INVALID_SIEVE)
    assert compiler_says is not None
    result = populated("sieve", "put", "alice@example.com", "broken", "-", stdin=INVALID_SIEVE)
    assert_one_error(result, 2, compiler_says.splitlines()[0])
    assert "does not compile, nothing stored" in result.err
    assert populated.json("sieve", "list", "alice@example.com") == []
    missing = populated("sieve", "get", "alice@example.com", "broken")
    assert_one_error(missing, 1, "sieve script 'broken' of alice@example.com does not exist")


# -- API tokens ---------------------------------------------------------------------------------


def test_token_create_list_revoke(populated: Cli) -> None:
    """`create` prints the token alone on stdout, once; the datastore knows it by its hash."""
    secret = populated.ok("token", "create", "ci").strip()
    user_secret = populated.ok("token", "create", "phone", "--user", "Alice@example.com").strip()
    assert secret.startswith("mst_")
    assert secret != user_secret
    listed = populated.json("token", "list")
    assert [(t["name"], t["user"], t["admin"]) for t in listed] == [
        ("ci", None, True),
        ("phone", "alice@example.com", False),
    ]
    assert secret not in populated.ok("token", "list")
    with opened(populated.database) as store:
        found = store.authenticate_token(user_secret)
        assert found is not None
        assert found.user == "alice@example.com"
    assert_one_error(populated("token", "create", "ci"), 1, "token ci already exists")
    assert_one_error(
        populated("token", "create", "x", "--user", "carol@example.com"), 1, "does not exist"
    )
    assert_one_error(populated("token", "create", "a b"), 2, "name: ")
    populated.ok("token", "revoke", "ci")
    assert_one_error(populated("token", "revoke", "ci"), 1, "token ci does not exist")
    assert [t["name"] for t in populated.json("token", "list")] == ["phone"]


# -- dkim ---------------------------------------------------------------------------------------


def dkim_show(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [*MAILSTACK, "dkim", "show", *args],
        capture_output=True,
        text=True,
        env=_environment({"MAILSTACK_ROOT": str(root), **(env or {})}),
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def published_key(output: str) -> tuple[str, rsa.RSAPublicKey]:
    """The record name and the RSA key in its p= tag, read as a DNS operator would."""
    fields = dict(line.split(":", 1) for line in output.splitlines())
    assert fields["type"].strip() == "TXT"
    tags = dict(tag.strip().split("=", 1) for tag in fields["value"].split(";"))
    assert tags["v"] == "DKIM1"
    assert tags["k"] == "rsa"
    key = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(key, rsa.RSAPublicKey)
    return fields["name"].strip(), key


def private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_dkim_show_generates_and_prints_the_matching_record(tmp_path: Path) -> None:
    keys = tmp_path / "etc" / "opendkim" / "keys"
    assert_one_error(dkim_show(tmp_path, "example.com"), 1, "no DKIM key for example.com")
    assert not keys.exists()

    first = dkim_show(tmp_path, "Example.com", "--generate")
    assert first.code == 0, first.err
    name, published = published_key(first.out)
    assert name == "mail._domainkey.example.com"
    private = keys / "example.com.private"
    assert private.stat().st_mode & 0o777 == 0o600
    assert (keys / "example.com.txt").read_text().startswith("mail._domainkey\tIN\tTXT")
    assert published.public_numbers() == private_key(private).public_key().public_numbers()

    again = dkim_show(tmp_path, "example.com", "--generate", "--selector", "s2024")
    assert again.code == 0, again.err
    assert again.out.splitlines()[2] == first.out.splitlines()[2]  # same key: never replaced
    assert again.out.startswith("name:  s2024._domainkey.example.com\n")


def test_dkim_show_reads_an_existing_key_volume(tmp_path: Path) -> None:
    """A key made elsewhere (a boky/postfix volume) is shown with DKIM_SELECTOR's selector."""
    keys = tmp_path / "etc" / "opendkim" / "keys"
    keys.mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "example.org.private").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = dkim_show(tmp_path, "example.org", env={"DKIM_SELECTOR": "mail,example.org=blah"})
    assert result.code == 0, result.err
    name, published = published_key(result.out)
    assert name == "blah._domainkey.example.org"
    assert published.public_numbers() == key.public_key().public_numbers()
    assert not (keys / "example.org.txt").exists()  # show alone writes nothing


# -- mailstack init -----------------------------------------------------------------------------


def test_init_makes_the_first_account_key_and_token_and_prints_the_records(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """One command: the domain, an account whose printed password works, an admin token
    that the API accepts, the DKIM key and every DNS record (DKIM as `dkim show` says)."""
    env = {"MAILSTACK_ROOT": str(tmp_path), "POSTFIX_myhostname": "mx.example.com"}
    result = sqlite_cli("init", "example.com", "--user", "Alice@Example.com", env=env)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    password = next(line for line in lines if line.startswith("password: ")).split()[1]
    token = next(line for line in lines if line.startswith("API token: ")).split()[2]
    store = MailStore.open(sqlite_cli.database)
    try:
        assert store.verify_password("alice@example.com", password)
        found = store.authenticate_token(token)
        assert found is not None
        assert found.user is None  # an admin token
    finally:
        store.close()
    assert "IMAP mx.example.com port 993" in result.out
    assert "example.com.                    IN MX     10 mx.example.com." in lines
    shown = subprocess.run(
        [*MAILSTACK, "dkim", "show", "example.com", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True, env=_environment(),
    )  # fmt: skip
    value = next(line for line in shown.stdout.splitlines() if line.startswith("value:"))
    dkim_line = next(line for line in lines if "._domainkey." in line)
    published = "".join(dkim_line.split('"')[1::2])  # the record's strings, joined
    assert value.removeprefix("value:").strip().replace(" ", "")[-40:] in published.replace(" ", "")

    again = sqlite_cli("init", "example.com", "--user", "alice@example.com", env=env)
    assert again.code == 1
    assert "alice@example.com already exists" in again.err
    store = MailStore.open(sqlite_cli.database)
    try:
        assert store.verify_password("alice@example.com", password)  # never reset
    finally:
        store.close()


def test_init_refuses_an_account_outside_the_domain(sqlite_cli: Cli, tmp_path: Path) -> None:
    result = sqlite_cli(
        "init", "example.com", "--user", "bob@other.example", env={"MAILSTACK_ROOT": str(tmp_path)}
    )
    assert result.code == 2
    assert "--admin: bob@other.example is not in example.com" in result.err
