"""Prometheus metrics of `mailstack run`, served at `/metrics` on MAILSTACK_METRICS_LISTEN.

Three kinds of numbers, each gathered where it is cheapest:

- mail events (received, sent, deferred, bounced, rejected, DKIM-signed) are counted from the
  daemons' log lines as they pass through the supervisor. That is the log pipeline's hot path,
  so a line costs one `mail_event` call and, for the few that count, one dict increment;
  no prometheus_client object is touched until a scrape;
- queue sizes are counted at scrape time from Postfix's queue folders (no `postqueue -p`, no
  showq round trip, and nothing to keep in sync);
- daemon state (up, restarts) is read from the supervisor's Daemon objects at scrape time.

All of it lives in a private CollectorRegistry, so a scrape shows mailstack's metrics only, and
is served by a small threaded WSGI server (prometheus_client's exposition app) rather than on
the asyncio loop: walking a deferred queue of many thousand files must not stall the loop that
pumps the daemons' output, and the exposition code is synchronous anyway. The thread is stopped
with the daemons, so `mailstack run` leaves nothing listening.

This module is imported only when MAILSTACK_METRICS_LISTEN is set: prometheus_client costs
start-up time and memory that a relay without metrics should not pay.
"""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from mailstack import __version__
from mailstack.errors import DaemonError
from mailstack.runtime.logparse import MAIL_EVENTS, LogRecord, mail_event
from mailstack.settings.values import HostPort

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mailstack.runtime.daemon import Daemon

PATH = "/metrics"

#: Postfix queues reported by mailstack_queue_messages, in the order mail moves through them.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

#: name (without _total) and HELP text of each counted mail event.
EVENT_METRICS = {
    "received": (
        "mailstack_messages_received",
        "Messages that entered the Postfix queue (cleanup message-id lines): submitted by "
        "clients or sendmail, and Postfix's own bounce notices.",
    ),
    "sent": (
        "mailstack_messages_sent",
        "Deliveries accepted by the next hop (smtp/lmtp status=sent), one per recipient.",
    ),
    "deferred": (
        "mailstack_messages_deferred",
        "Delivery attempts that failed temporarily (smtp/lmtp status=deferred), one per "
        "recipient and attempt.",
    ),
    "bounced": (
        "mailstack_messages_bounced",
        "Deliveries refused permanently (smtp/lmtp status=bounced), one per recipient.",
    ),
    "rejected": (
        "mailstack_messages_rejected",
        "SMTP commands refused by smtpd (reject and milter-reject lines, 4xx and 5xx), e.g. a "
        "sender outside ALLOWED_SENDER_DOMAINS.",
    ),
    "dkim_signed": (
        "mailstack_dkim_signed",
        "Messages signed by OpenDKIM (DKIM-Signature field added).",
    ),
}

#: Labelled families of the server's events: name, HELP, label, {event: label value}.
LABELLED_EVENTS = (
    (
        "mailstack_spam_verdicts",
        "rspamd's verdicts on mail at the MX, by action: clean, junk (marked, filed into "
        "Junk), rejected (refused at DATA), deferred (soft reject or greylist).",
        "action",
        {
            "spam_clean": "clean",
            "spam_junk": "junk",
            "spam_rejected": "rejected",
            "spam_deferred": "deferred",
        },
    ),
    (
        "mailstack_greylist_decisions",
        "Greylisting decisions on the MX: deferred (first attempt) or passed (a retry).",
        "result",
        {"greylist_deferred": "deferred", "greylist_passed": "passed"},
    ),
    (
        "mailstack_spam_learned",
        "Messages the spam learner taught a user's statistics (moves into or out of Junk).",
        "class",
        {"learned_spam": "spam", "learned_ham": "ham"},
    ),
)


class MailCounter:
    """Counts mail events from parsed daemon log lines; `observe` is the log pipeline's hook."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(MAIL_EVENTS, 0)

    def observe(self, record: LogRecord) -> None:
        event = mail_event(record)
        if event is not None:
            self.counts[event] += 1


def count_files(folder: Path) -> int:
    """Regular files below `folder`, at any depth (deferred/ is hashed into subfolders).

    Files come and go while Postfix works; a subfolder that vanishes mid-walk counts as empty.
    The top folder must be readable, else OSError (the caller then leaves the queue out).
    """
    total = 0
    pending = [os.fspath(folder)]
    first = True
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += 1
        except FileNotFoundError:
            if first:
                raise
        first = False
    return total


class RelayCollector(Collector):
    """Builds every metric family at scrape time from the counter, the queue and the daemons."""

    def __init__(
        self,
        counter: MailCounter,
        queue_directory: Path,
        daemons: Callable[[], Iterable[Daemon]],
        profile: str = "relay",
    ) -> None:
        self.counter = counter
        self.queue_directory = queue_directory
        self.daemons = daemons
        self.profile = profile

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "mailstack",
            "mailstack version and the profile it runs.",
            value={"version": __version__, "profile": self.profile},
        )
        counts = dict(self.counter.counts)  # one consistent copy: the loop keeps counting
        for event, (name, documentation) in EVENT_METRICS.items():
            yield CounterMetricFamily(name, documentation, value=counts[event])
        if self.profile == "server":
            for name, documentation, label, events in LABELLED_EVENTS:
                family = CounterMetricFamily(name, documentation, labels=[label])
                for event, value in events.items():
                    family.add_metric([value], counts[event])
                yield family
        queues = GaugeMetricFamily(
            "mailstack_queue_messages",
            "Messages in each Postfix queue folder, counted when scraped.",
            labels=["queue"],
        )
        for queue in QUEUES:
            try:
                queues.add_metric([queue], count_files(self.queue_directory / queue))
            except OSError:
                continue  # not there (yet) or unreadable: no number rather than a wrong one
        yield queues
        up = GaugeMetricFamily(
            "mailstack_daemon_up", "1 while the daemon's process runs, else 0.", labels=["daemon"]
        )
        restarts = CounterMetricFamily(
            "mailstack_daemon_restarts",
            "Times the supervisor restarted the daemon after it exited unexpectedly.",
            labels=["daemon"],
        )
        for daemon in self.daemons():
            up.add_metric([daemon.name], 1 if daemon.running else 0)
            restarts.add_metric([daemon.name], daemon.restarts)
        yield up
        yield restarts


class _QuietHandler(WSGIRequestHandler):
    """No access log: Prometheus scrapes every few seconds and would flood the mail log."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per scrape, so a slow client cannot hold up the next one."""

    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks the resolver for the address's FQDN, which can hang
        # for seconds in a container without DNS; the WSGI environ needs no real name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


def metrics_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """prometheus_client's exposition app on /metrics only (it would answer any path)."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            result: Iterable[bytes] = exposition(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found; metrics are at {PATH}\n".encode()]

    return app


class MetricsServer:
    """The HTTP endpoint; started before the daemons so a busy port stops start-up early."""

    def __init__(self, address: HostPort, registry: CollectorRegistry) -> None:
        self.address = address
        self.registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server_class = _Server6 if ":" in self.address.host else _Server
        try:
            server = make_server(
                self.address.host,
                self.address.port,
                metrics_app(self.registry),
                server_class=server_class,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DaemonError("metrics", f"cannot listen on {self.address}: {reason}") from None
        assert isinstance(server, _Server)  # noqa: S101 - we chose the class
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="mailstack-metrics",
            daemon=True,
        )
        self._thread.start()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    async def stop(self) -> None:
        """Stop serving; shutdown() waits for the serving thread, so not on the loop."""
        await asyncio.to_thread(self._stop)


def relay_metrics(
    address: HostPort,
    queue_directory: Path,
    daemons: Callable[[], Sequence[Daemon]],
    profile: str = "relay",
    certificate: Path | None = None,
) -> tuple[MailCounter, MetricsServer]:
    """The counter to hook into the log pipeline and the (not yet started) endpoint."""
    counter = MailCounter()
    registry = CollectorRegistry()
    registry.register(RelayCollector(counter, queue_directory, daemons, profile=profile))
    if certificate is not None:
        registry.register(CertificateCollector(certificate))
    return counter, MetricsServer(address, registry)


class CertificateCollector(Collector):
    """When the server's certificate (the one its listeners use) stops being valid, read
    from the file at scrape time: a renewal, or a replaced Secret, shows at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        from cryptography import x509

        family = GaugeMetricFamily(
            "mailstack_tls_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate expires (Unix time); alert well before it.",
            labels=["subject"],
        )
        try:
            certificate = x509.load_pem_x509_certificate(self.path.read_bytes())
        except (OSError, ValueError):
            yield family  # unreadable now: no number rather than a wrong one
            return
        subject = certificate.subject.rfc4514_string()
        family.add_metric([subject], certificate.not_valid_after_utc.timestamp())
        yield family
