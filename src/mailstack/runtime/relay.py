"""The relay profile as a plan: OpenDKIM (when there are keys), the XOAUTH2 worker (when
XOAUTH2 is on), then Postfix. `prepare()` (prepare.py) has made every file by then."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mailstack.paths import Paths
from mailstack.render.postfix import render_master_cf
from mailstack.runtime.files import ensure_dir, write_atomic
from mailstack.runtime.mtasts import mta_sts_worker, prepare_mta_sts
from mailstack.runtime.plan import Plan, Probe, Process
from mailstack.runtime.postfix import postfix_plan
from mailstack.runtime.prepare import Prepared, child_environment
from mailstack.runtime.profile import (
    WORKER_USER,
    assemble_plan,
    opendkim_with_log,
    worker_account,
)
from mailstack.settings.model import RelaySettings


def xoauth2_process(
    settings: RelaySettings, paths: Paths, env: dict[str, str], hop_password: str | None
) -> Process:
    """The worker with the XOAUTH2 hop, as the unprivileged worker user.

    Its config holds the OAuth2 secrets: it goes to the worker in a 0600 file, never in argv
    or the environment. The token folder is the worker's, so it can refresh tokens.
    """
    from mailstack.xoauth2 import config_from_settings
    from mailstack.xoauth2.config import config_to_json

    account = worker_account("XOAUTH2_CLIENT_ID")
    config = config_from_settings(
        settings,
        paths.postfix_queue,
        listen_port=settings.xoauth2_hop_port,
        client_password=hop_password,
    )
    folder = config.token_file.parent
    ensure_dir(folder, 0o700)
    os.chown(folder, account.pw_uid, account.pw_gid)
    for token_file in folder.iterdir():
        os.chown(token_file, account.pw_uid, account.pw_gid)
    config_file = paths.run / "xoauth2.json"
    write_atomic(config_file, config_to_json(config), 0o600, WORKER_USER)
    argv = [sys.executable, "-m", "mailstack.worker", "--xoauth2", str(config_file)]
    argv += ["--user", WORKER_USER]
    hop = f"127.0.0.1:{settings.xoauth2_hop_port}"
    # not critical: while it is down Postfix keeps the mail queued and retries
    probes = [Probe("tcp", hop)]
    return Process("worker", argv, env, probes, log_parser="worker", critical=False)


def relay_secrets(settings: RelaySettings) -> list[str]:
    found = []
    for secret in (
        settings.relayhost_password,
        settings.xoauth2_client_id,
        settings.xoauth2_secret,
        settings.xoauth2_initial_access_token,
        settings.xoauth2_initial_refresh_token,
    ):
        if secret is not None:
            found.append(secret.get_secret_value())
    return found


def relay_plan(settings: RelaySettings, paths: Paths, prepared: Prepared) -> Plan:
    """What the relay runs, in start order."""
    env = child_environment(settings.tz, paths)
    processes: list[Process] = []
    syslog: Path | None = None
    if prepared.dkim_enabled:
        opendkim, syslog = opendkim_with_log(paths, env)
        processes.append(opendkim)
    if settings.xoauth2_enabled:
        processes.append(xoauth2_process(settings, paths, env, prepared.hop_password))
    elif settings.mta_sts_active:
        prepare_mta_sts(paths, server=False)
        processes.append(mta_sts_worker(settings, paths, env))
    listeners = [str(settings.listen_submission)]
    if settings.listen_smtp is not None:
        listeners.append(str(settings.listen_smtp))
    postfix = postfix_plan(
        paths.postfix_config,
        paths.postfix_queue,
        env,
        listeners,
        render_master_cf(settings, accepting=True),
        render_master_cf(settings, accepting=False),
    )
    secrets = relay_secrets(settings)
    if prepared.hop_password:
        secrets.append(prepared.hop_password)
    ready_on = settings.listen_submission
    return assemble_plan(
        "relay", settings, processes, postfix, ready_on=ready_on, syslog=syslog, secrets=secrets
    )
