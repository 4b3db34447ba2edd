"""What each long-running Python process loads at start.

Every library a process imports stays in its memory for the life of the stack, so the heavy
ones are loaded where they are used: the supervisor never needs SQLAlchemy or FastAPI, the
worker builds its web apps, fetches MTA-STS policies and draws QR codes only on demand.
Each case runs in a fresh interpreter, as the process itself starts.
"""

from __future__ import annotations

import subprocess
import sys


def loaded_after(imports: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has in sys.modules after `imports`."""
    code = (
        f"import sys\nimport {imports}\n"
        f"print(' '.join(m for m in {candidates!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


HEAVY = (
    "sqlalchemy",
    "alembic",
    "fastapi",
    "pydantic",
    "jinja2",
    "dns.asyncresolver",
    "httpcore",
    "cryptography",
    "segno",
)


def test_the_long_running_supervisor_loads_none_of_the_heavy_libraries() -> None:
    """`mailstack run` execs into mailstack.runtime.supervise: that is what stays."""
    assert loaded_after("mailstack.runtime.supervise", HEAVY) == []


def test_preparing_a_server_loads_no_datastore_or_web_library() -> None:
    """`mailstack run` itself (the CLI and the server's preparation) asks the datastore in a
    child process: SQLAlchemy and the web stack stay out of it."""
    imports = "mailstack.cli, mailstack.runtime.server, mailstack.runtime.relay"
    web_and_store = ("sqlalchemy", "alembic", "fastapi", "jinja2", "httpcore", "segno")
    assert loaded_after(imports, web_and_store) == []


WORKER_AT_START = (
    "mailstack.worker.__main__, mailstack.worker.services, mailstack.worker.web, "
    "mailstack.store.engine, mailstack.lookup.service, mailstack.policy, "
    "mailstack.mtasts.service, mailstack.managesieve, mailstack.milter, "
    "mailstack.spam.learner, mailstack.web.listeners, mailstack.dkim.requests, "
    "mailstack.mailqueue"
)


def test_the_worker_loads_web_apps_policy_fetching_keys_and_qr_codes_on_demand() -> None:
    """Everything the worker imports before it serves (its services and their listeners)."""
    on_demand = tuple(name for name in HEAVY if name not in ("sqlalchemy", "alembic"))
    assert loaded_after(WORKER_AT_START, on_demand) == []


def test_the_worker_answers_the_mail_daemons_without_the_orm() -> None:
    """Lookups, the sender milter and greylisting query the Core tables; SQLAlchemy's ORM
    and the service layer come with the first ManageSieve login or web request."""
    orm = ("sqlalchemy.orm", "mailstack.store.models", "mailstack.store.service")
    assert loaded_after(WORKER_AT_START, orm) == []


def test_the_store_package_loads_sqlalchemy_only_when_its_names_are_used() -> None:
    assert loaded_after("mailstack.store.apppasswords", ("sqlalchemy",)) == []
    assert loaded_after("mailstack.store; mailstack.store.MailStore", ("sqlalchemy",)) == [
        "sqlalchemy"
    ]


def test_the_relays_worker_loads_no_datastore_code() -> None:
    """The relay has no datastore: its worker (the MTA-STS map, the XOAUTH2 hop) shares the
    socketmap framing with the server's lookup service, not its store."""
    imports = (
        "mailstack.worker.__main__, mailstack.worker.services, mailstack.mtasts.service, "
        "mailstack.xoauth2, mailstack.xoauth2.config"
    )
    assert loaded_after(imports, ("sqlalchemy", "alembic")) == []
