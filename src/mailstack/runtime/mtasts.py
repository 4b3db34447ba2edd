"""Outbound MTA-STS in a profile's plan: the worker's policy map, its folders and options.

The socket's folder lets Postfix in (group postfix) and nobody else; the cache folder is the
worker's alone. Both profiles use this: the server adds the options to its worker, the relay
starts a worker for the map alone (it has no other Python service when delivering directly).
"""

from __future__ import annotations

import sys

from mailstack.paths import Paths
from mailstack.runtime.files import ensure_dir
from mailstack.runtime.plan import Probe, Process
from mailstack.runtime.profile import WORKER_USER, worker_account
from mailstack.settings.base import ProfileSettings


def prepare_mta_sts(paths: Paths, *, server: bool) -> None:
    worker_account("MAILSTACK_MTA_STS_OUTBOUND")
    ensure_dir(paths.mta_sts_run, 0o750, WORKER_USER, "postfix")
    ensure_dir(paths.mta_sts_cache(server=server).parent, 0o700, WORKER_USER, WORKER_USER)


def mta_sts_options(
    settings: ProfileSettings, paths: Paths, *, server: bool
) -> tuple[list[str], Probe]:
    """The worker's options for the policy map, and the probe that says it is there."""
    argv = ["--mta-sts", str(paths.mta_sts_socket)]
    argv += ["--mta-sts-cache", str(paths.mta_sts_cache(server=server))]
    if settings.mta_sts_ca_file is not None:
        argv += ["--mta-sts-ca-file", str(settings.mta_sts_ca_file)]
    for address, port in settings.policy_nameservers:
        argv += ["--nameserver", _endpoint(address, port)]
    if settings.dnssec_resolver is not None:
        argv += ["--dane-resolver", _endpoint(settings.dnssec_resolver, 53)]
    return argv, Probe("unix", str(paths.mta_sts_socket))


def mta_sts_worker(settings: ProfileSettings, paths: Paths, env: dict[str, str]) -> Process:
    """The relay's worker with the policy map only."""
    options, probe = mta_sts_options(settings, paths, server=False)
    argv = [sys.executable, "-m", "mailstack.worker", *options, "--socket-mode", "666"]
    argv += ["--user", WORKER_USER]
    # not critical: while it is down Postfix defers outbound mail (the map does not answer)
    return Process("worker", argv, env, [probe], log_parser="worker", critical=False)


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
