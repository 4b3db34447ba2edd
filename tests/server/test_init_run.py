"""The first run as the README tells it: `mailstack init --non-interactive` on an empty root,
then `mailstack run` with no profile or host name in the environment (the settings file
init wrote supplies them): the administrator logs in over IMAP and to the web interface."""

from __future__ import annotations

import re
import stat
import subprocess

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from mailserver import Ports, imap_session, running_server, server_env
from tests.helpers import MAILSTACK, private_root

ADMIN_PASSWORD = "first run's own password"


def _mailstack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILSTACK, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_init_then_run_serves_the_admin_over_imap_and_the_web() -> None:
    ports = Ports()
    with private_root() as root:
        env = server_env(root, ports)
        del env["MAILSTACK_PROFILE"], env["POSTFIX_myhostname"]
        init = subprocess.run(
            [
                *MAILSTACK,
                "init",
                "--domain",
                "Example.org",
                "--admin",
                "boss@example.org",
                "--hostname",
                "mx.example.org",
                "--password-stdin",
                "--non-interactive",
            ],
            input=ADMIN_PASSWORD + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert init.returncode == 0, init.stderr
        settings = root / "etc/mailstack/mailstack.env"
        assert stat.S_IMODE(settings.stat().st_mode) == 0o600
        assert "MAILSTACK_PROFILE=server" in settings.read_text()
        assert "POSTFIX_myhostname=mx.example.org" in settings.read_text()
        assert ADMIN_PASSWORD not in init.stdout  # chosen by the admin, so not printed
        assert f"web interface: https://mx.example.org:{ports.https}/" in init.stdout
        assert re.search(r"^mx\.example\.org\.?\s+.*MX|\bMX\b.*mx\.example\.org", init.stdout, re.M)

        with running_server(root, env) as server:
            printed = re.search(r"fingerprint: ([0-9A-F:]{95})", init.stdout)
            assert printed, init.stdout
            served = x509.load_pem_x509_certificate(server.certificate.read_bytes())
            assert served.fingerprint(hashes.SHA256()).hex(":").upper() == printed.group(1)
            assert "server profile" in server.log

            with imap_session(server, ports.imap, "boss@example.org", ADMIN_PASSWORD) as imap:
                assert imap.select("INBOX")[0] == "OK"

            with httpx.Client(
                base_url=f"https://127.0.0.1:{ports.https}",
                verify=server.tls_context(),
                timeout=30,
            ) as web:
                page = web.get("/")
                token = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert token, page.text
                answer = web.post(
                    "/login",
                    data={
                        "csrf": token.group(1),
                        "address": "boss@example.org",
                        "password": ADMIN_PASSWORD,
                    },
                )
                assert answer.status_code == 303
                assert "boss@example.org" in web.get("/account").text


def test_init_without_a_domain_and_no_terminal_names_what_is_missing() -> None:
    with private_root() as root:
        env = server_env(root, Ports())
        result = _mailstack(env, "init", "--non-interactive")
        assert result.returncode == 2
        assert "--domain" in result.stderr
        assert not (root / "etc/mailstack/mailstack.env").exists()


def test_a_broken_settings_file_stops_every_command_naming_the_line() -> None:
    with private_root() as root:
        env = server_env(root, Ports())
        settings = root / "etc/mailstack/mailstack.env"
        settings.parent.mkdir(parents=True)
        settings.write_text("MAILSTACK_PROFILE=server\nMAILSTACK_SPAM off\n")
        result = _mailstack(env, "check", "--profile", "server")
        assert result.returncode == 78
        assert f"{settings}, line 2" in result.stderr
