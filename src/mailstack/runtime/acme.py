"""The worker's ACME options from the server's settings: argv for everything but the TSIG
secret, which goes in the worker's environment (argv is readable by every local user)."""

from __future__ import annotations

from mailstack.paths import Paths
from mailstack.settings.server import ServerSettings
from mailstack.worker.acme import TSIG_SECRET_ENV


def acme_options(settings: ServerSettings, paths: Paths) -> tuple[list[str], dict[str, str]]:
    """(worker options, worker environment) for ACME; nothing when it is off."""
    if not settings.acme_email or settings.tls_cert_file is not None:
        return [], {}
    argv = ["--acme-folder", str(paths.acme), "--acme-email", settings.acme_email]
    argv += ["--acme-directory", settings.acme_directory]
    if settings.acme_ca_file is not None:
        argv += ["--acme-ca-file", str(settings.acme_ca_file)]
    for name in settings.certificate_names:
        argv += ["--acme-name", name]
    argv += ["--acme-challenge", settings.acme_challenge]
    env: dict[str, str] = {}
    if settings.acme_challenge != "dns-01" or settings.acme_dns_server is None:
        return argv, env
    argv += ["--acme-dns-server", str(settings.acme_dns_server)]
    if settings.acme_dns_zone is not None:
        argv += ["--acme-dns-zone", settings.acme_dns_zone]
    if settings.acme_dns_tsig_key_name and settings.acme_dns_tsig_secret is not None:
        argv += ["--acme-dns-tsig-key-name", settings.acme_dns_tsig_key_name]
        argv += ["--acme-dns-tsig-algorithm", settings.acme_dns_tsig_algorithm]
        env[TSIG_SECRET_ENV] = settings.acme_dns_tsig_secret.get_secret_value()
    return argv, env


def acme_secrets(settings: ServerSettings) -> list[str]:
    """The values the supervisor redacts from every log line."""
    secret = settings.acme_dns_tsig_secret
    return [secret.get_secret_value()] if secret is not None else []
