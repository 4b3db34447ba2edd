"""The container image, built here with scripts/build-image.sh and run with podman.

Every container shares the host's network (`--network=host`) and listens on a free loopback
port; the relay host is an aiosmtpd sink on the host's loopback. Containers and volumes that
a test makes are removed in teardown, whatever happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import helm_python as helm
import pytest
import yaml
from aiosmtpd.controller import Controller
from filelock import FileLock
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
CHART = REPO / "deploy" / "helm" / "mailstack"
# One tag per checkout: two checkouts' suites on one host must not run each other's image.
IMAGE = f"localhost/mailstack:test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"
STATE = Path(os.environ.get("MAILSTACK_CONTAINERS_STATE", "/var/tmp/mailstack-containers"))
# Deadlines, not expectations: a cold start generates a DKIM key and starts two daemons.
READY_TIMEOUT = 90.0
DELIVERY_TIMEOUT = 60.0
STOP_GRACE = 30
EX_CONFIG = 78

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(STATE / "containers.conf")}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        env=podman_env(),
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built by the same script a developer runs (cached layers make reruns fast).

    Under pytest-xdist the first worker that needs it builds it, holding a lock that the
    run's workers share; the others wait for it and reuse what it built."""
    assert os.geteuid() == 0, "the image tests run rootful podman: run them as root"
    if "PYTEST_XDIST_WORKER" not in os.environ:  # a serial run
        return build_image()
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every worker
    built = shared / "image-built"
    with FileLock(shared / "image-build.lock"):
        if not built.exists():
            build_image()
            built.write_text(IMAGE)
    return IMAGE


def build_image() -> str:
    """scripts/build-image.sh; fails the test with the end of its output."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), IMAGE],
        capture_output=True,
        text=True,
        env={**os.environ, "MAILSTACK_CONTAINERS_STATE": str(STATE)},
        timeout=1500,
        check=False,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"scripts/build-image.sh failed:\n{tail}"
    return IMAGE


class Sink:
    """An SMTP server that keeps every message (the relay host)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 OK kept"

    def wait_for(self, count: int = 1, timeout: float = DELIVERY_TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"the sink got {len(self.messages)} of {count} message(s)")
            time.sleep(0.2)
        return self.messages


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@dataclass
class Container:
    name: str
    port: int

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        out = podman("inspect", "--format", "{{json .State}}", self.name).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until `mailstack health` (the image's HEALTHCHECK) passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.state()["Running"]:
                pytest.fail(f"{self.name} exited before it was ready:\n{self.logs()}")
            if podman("healthcheck", "run", self.name, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not healthy after {timeout} s:\n{self.logs()}")
            time.sleep(1)

    def stop(self) -> int:
        """`podman stop` with a grace period; the exit code of the container."""
        podman("stop", "--time", str(STOP_GRACE), self.name, timeout=STOP_GRACE + 60)
        return int(self.state()["ExitCode"])


@dataclass
class Podman:
    """Starts containers and volumes, and removes them all afterwards."""

    image: str
    containers: list[Container] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, purpose: str) -> str:
        name = f"mailstack-test-{purpose}-{uuid.uuid4().hex[:8]}"
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def mountpoint(self, volume: str) -> Path:
        return Path(
            podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()
        )

    def run(
        self,
        env: dict[str, str],
        *options: str,
        detach: bool = True,
    ) -> Container:
        port = free_port()
        name = f"mailstack-test-{uuid.uuid4().hex[:8]}"
        container = Container(name, port)
        self.containers.append(container)
        environment = {
            "MAILSTACK_LISTEN_SUBMISSION": f"127.0.0.1:{port}",
            "MAILSTACK_LISTEN_SMTP": "",
            **env,
        }
        args = ["run", "--name", name, "--network=host"]
        args += [f"--env={key}={value}" for key, value in environment.items()]
        args += list(options)
        if detach:
            args.append("--detach")
        podman(*args, self.image, check=detach, timeout=180)
        return container

    def cleanup(self) -> None:
        for container in self.containers:
            podman("rm", "--force", "--time", "0", container.name, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def pod(image: str, request: pytest.FixtureRequest) -> Iterator[Podman]:
    runner = Podman(image)
    try:
        yield runner
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            for container in runner.containers:
                print(f"--- logs of {container.name}\n{container.logs()}")
        runner.cleanup()


def relay_env(sink_port: int) -> dict[str, str]:
    """The seed's TL;DR (ALLOWED_SENDER_DOMAINS) plus a relay host and generated DKIM keys."""
    return {
        "ALLOWED_SENDER_DOMAINS": "example.com",
        "RELAYHOST": f"[127.0.0.1]:{sink_port}",
        "DKIM_AUTOGENERATE": "1",
    }


def send(container: Container, subject: str) -> str:
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "someone@example.net"
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    message.set_content("Hello from the container test.\n")
    with smtplib.SMTP("127.0.0.1", container.port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.send_message(message)
    return str(message["Message-ID"])


def txt_record(keys_dir: Path, domain: str) -> tuple[str, bytes]:
    """(selector, TXT value) from the `<domain>.txt` zone snippet written next to the key."""
    text = (keys_dir / f"{domain}.txt").read_text()
    selector = text.split("._domainkey", 1)[0].split()[-1]
    value = "".join(re.findall(r'"([^"]*)"', text))
    assert "p=" in value, text
    return selector, value.encode()


def assert_dkim_signed(raw: bytes, keys_dir: Path, domain: str = "example.com") -> None:
    selector, record = txt_record(keys_dir, domain)
    header = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    assert b"DKIM-Signature:" in header, header.decode(errors="replace")
    assert f"s={selector};".encode() in header.replace(b"\n\t", b"").replace(b" ", b"")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{selector}._domainkey.{domain}.".encode(), name
        return record

    assert dkim.verify(raw, dnsfunc=dns), "DKIM signature does not verify"


def raw_message(envelope: Any) -> bytes:
    raw: bytes = envelope.original_content
    return raw if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")


def test_relays_dkim_signed_mail(pod: Podman, sink: Sink) -> None:
    """TL;DR settings + RELAYHOST: a message sent to :587 arrives at the relay host signed
    with the key that DKIM_AUTOGENERATE made (checked against the published .txt record)."""
    keys = pod.volume("keys")
    container = pod.run(relay_env(sink.port), f"--volume={keys}:/etc/opendkim/keys")
    container.wait_ready()
    message_id = send(container, "signed")
    (envelope,) = sink.wait_for(1)
    assert envelope.mail_from == "app@example.com"
    assert envelope.rcpt_tos == ["someone@example.net"]
    raw = raw_message(envelope)
    assert message_id.encode() in raw
    assert_dkim_signed(raw, pod.mountpoint(keys))
    # Keys where the image keeps them pass OpenDKIM's safety check: no warning per message.
    wait_for(lambda: "DKIM-Signature field added" in container.logs(), 10, "OpenDKIM's log")
    assert "key data is not secure" not in container.logs()


def queued_files(spool: Path) -> list[Path]:
    """Messages waiting in Postfix's queue folders of a spool volume."""
    return [
        p for d in ("incoming", "active", "deferred") for p in (spool / d).rglob("*") if p.is_file()
    ]


def test_stop_is_graceful_and_keeps_the_queue(pod: Podman, sink: Sink) -> None:
    """With the relay host down, mail waits in the queue; `podman stop` ends the container
    within the grace period with exit code 0, and a new container on the same queue volume
    delivers that mail once the relay host is back."""
    queue = pod.volume("queue")
    keys = pod.volume("keys")
    volumes = (f"--volume={queue}:/var/spool/postfix", f"--volume={keys}:/etc/opendkim/keys")
    down = free_port()  # nothing listens there
    first = pod.run(relay_env(down), *volumes)
    first.wait_ready()
    message_id = send(first, "queued")
    spool = pod.mountpoint(queue)
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not queued_files(spool):
        assert time.monotonic() < deadline, "the message never reached the queue"
        time.sleep(0.5)
    assert first.stop() == 0, first.logs()
    assert queued_files(spool), "the queue volume lost the message"

    second = pod.run(relay_env(sink.port), *volumes)
    second.wait_ready()
    podman("exec", second.name, "postqueue", "-f")
    (envelope,) = sink.wait_for(1)
    raw = raw_message(envelope)
    assert message_id.encode() in raw
    assert_dkim_signed(raw, pod.mountpoint(keys))
    assert second.stop() == 0, second.logs()


# The writable paths as tmpfs; the queue and the keys as volumes. Podman's --tmpfs copies the
# image's files in (tmpcopyup), which /etc/postfix needs.
READ_ONLY = (
    "--read-only",
    "--tmpfs=/etc/postfix",
    "--tmpfs=/var/lib/postfix",
    "--tmpfs=/etc/opendkim",
    "--tmpfs=/run/mailstack",
    "--tmpfs=/tmp",
)


def test_read_only_root_file_system(pod: Podman, sink: Sink) -> None:
    """The same relay works with --read-only and tmpfs for every path mailstack writes."""
    queue = pod.volume("queue")
    keys = pod.volume("keys")
    container = pod.run(
        relay_env(sink.port),
        *READ_ONLY,
        f"--volume={queue}:/var/spool/postfix",
        f"--volume={keys}:/etc/opendkim/keys",
    )
    container.wait_ready()
    send(container, "read-only")
    (envelope,) = sink.wait_for(1)
    assert_dkim_signed(raw_message(envelope), pod.mountpoint(keys))
    assert container.stop() == 0, container.logs()


def test_bad_setting_exits_78_naming_it(pod: Podman) -> None:
    """LOG_FORMAT=xml: the container refuses to start, exit 78 (EX_CONFIG), and says why."""
    container = pod.run(
        {"ALLOWED_SENDER_DOMAINS": "example.com", "LOG_FORMAT": "xml"}, detach=False
    )
    state = container.state()
    assert not state["Running"]
    assert state["ExitCode"] == EX_CONFIG, container.logs()
    assert "LOG_FORMAT" in container.logs()


def chart_prestop_script() -> str:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({"terminationGracePeriodSeconds": 45}, name="t", namespace="t")
    statefulset = yaml.safe_load(rendered["mailstack/templates/statefulset.yaml"])
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    script: str = container["lifecycle"]["preStop"]["exec"]["command"][2]
    return script


def test_chart_prestop_hook_drains_the_relay(pod: Podman, sink: Sink) -> None:
    """The chart's preStop script, run in the real image: it closes the SMTP listener,
    flushes, returns once the queue is empty, and the container then stops with exit 0."""
    container = pod.run(relay_env(sink.port))
    container.wait_ready()
    send(container, "before preStop")
    result = podman("exec", container.name, "/bin/sh", "-c", chart_prestop_script(), timeout=60)
    assert result.returncode == 0, result.stderr
    sink.wait_for(1, timeout=5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", container.port), timeout=5).close()
    assert "preStop: queue empty" in container.logs()
    assert container.stop() == 0, container.logs()


def test_server_profile_receives_mail_and_serves_imap(pod: Podman) -> None:
    """MAILSTACK_PROFILE=server in the same image: a domain and user put in the datastore on
    the state volume, mail to the MX is read back over IMAP (STARTTLS), spam is refused by
    the image's rspamd, stop is clean."""
    import imaplib
    import ssl

    from mailstack.store import MailStore

    state = pod.volume("state")
    store = MailStore.open(pod.mountpoint(state) / "mailstack.db")
    try:
        store.add_domain("example.com")
        store.add_user("alice@example.com", "container password")
    finally:
        store.close()
    names = ("SMTP", "SUBMISSIONS", "IMAP", "IMAPS", "MANAGESIEVE", "HTTP", "HTTPS")
    ports = {name: free_port() for name in names}
    env = {f"MAILSTACK_LISTEN_{name}": f"127.0.0.1:{port}" for name, port in ports.items()}
    env.update({"MAILSTACK_PROFILE": "server", "POSTFIX_myhostname": "mx.example.com"})
    # rspamd without DNS (the container has none), its test patterns decide
    env.update(
        {
            "MAILSTACK_SPAM_TEST_PATTERNS": "1",
            "MAILSTACK_SPAM_RBL": "",
            "MAILSTACK_SPAM_HOST_CHECKS": "off",
            "MAILSTACK_SPAM_NAMESERVERS": "127.0.0.1:53",
        }
    )
    container = pod.run(env, f"--volume={state}:/var/lib/mailstack")
    container.wait_ready(timeout=READY_TIMEOUT + 180)  # rspamd's cold start compiles first
    spam_body = (
        b"Subject: spam\r\n\r\n"
        b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    )
    with (
        smtplib.SMTP("127.0.0.1", ports["SMTP"], timeout=60) as mx,
        pytest.raises(smtplib.SMTPDataError) as spam,  # the reject test pattern
    ):
        mx.sendmail("friend@remote.test", ["alice@example.com"], spam_body)
    assert spam.value.smtp_code == 554, container.logs()
    with smtplib.SMTP("127.0.0.1", ports["SMTP"], timeout=30) as mx:
        mx.sendmail(
            "friend@remote.test",
            ["alice@example.com"],
            b"From: friend@remote.test\r\nSubject: into the container\r\n\r\nhello\r\n",
        )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed certificate stays in the container
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    found = b""
    while b"into the container" not in found and time.monotonic() < deadline:
        client = imaplib.IMAP4("127.0.0.1", ports["IMAP"], timeout=30)
        try:
            client.starttls(context)
            client.login("alice@example.com", "container password")
            client.select("INBOX", readonly=True)
            _, data = client.search(None, "ALL")
            for number in data[0].split():
                found += client.fetch(number, "(BODY.PEEK[HEADER])")[1][0][1]
        finally:
            client.logout()
        time.sleep(1)
    assert b"into the container" in found, container.logs()
    assert container.stop() == 0
