"""The worker's ACME service: checks the certificate in use, orders a new one when it is due,
retries failures with back-off, and never gives up a working certificate for a failed order.

After a new certificate is live, `on_new` runs (the worker reloads its own TLS listeners);
Postfix and Dovecot are reloaded by the supervisor, which watches `live/fullchain.pem`
(the worker runs unprivileged and cannot signal them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable

from mailstack.acme.answers import ChallengeAnswers, Http01Answers
from mailstack.acme.certs import CertificateInfo, read_certificate, renewal_reason
from mailstack.acme.files import AcmeAccount, AcmeFiles

log = logging.getLogger("mailstack.acme")

CHECK_EVERY = 3600.0  # the certificate's dates are read hourly; orders happen when due
REQUEST_POLL = 2.0  # how often a `mailstack tls renew` request is looked for
RETRY_START = 300.0  # Let's Encrypt allows 5 failed validations per name and hour
RETRY_MAX = 6 * 3600.0


class AcmeRenewer:
    name = "acme"

    def __init__(
        self,
        account: AcmeAccount,
        files: AcmeFiles,
        names: tuple[str, ...],
        on_new: Callable[[], None],
        *,
        answers: ChallengeAnswers | None = None,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.account = account
        self.files = files
        self.names = names
        self.on_new = on_new
        self.answers = answers or Http01Answers(files.challenges)
        self.check_every = check_every
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.files.challenges.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="acme")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        retry = RETRY_START
        next_check = 0.0
        while True:
            request = self.files.take_renewal_request()
            if request is not None or time.monotonic() >= next_check:
                if await self._check_logged(force=request == "force"):
                    next_check, retry = time.monotonic() + self.check_every, RETRY_START
                else:
                    log.info("next certificate attempt in %.0f s", retry)
                    next_check, retry = time.monotonic() + retry, min(retry * 2, RETRY_MAX)
            await asyncio.sleep(REQUEST_POLL)

    async def _check_logged(self, force: bool) -> bool:
        try:
            return await self.check(force)
        except Exception:  # a bug must not end renewals for good: logged, then retried
            log.exception("certificate check failed")
            return False

    def current(self) -> CertificateInfo | None:
        try:
            return read_certificate(self.files.cert)
        except (OSError, ValueError):
            return None

    async def check(self, force: bool = False) -> bool:
        """Order a certificate if one is due (or `force`); False when an order failed."""
        info = self.current()
        now = datetime.datetime.now(datetime.UTC)
        reason = "renewal forced" if force else renewal_reason(info, self.names, now)
        if reason is None and info is not None:
            log.info(
                "certificate serial %s valid until %s; renewal due %s: not ordering",
                info.serial_hex,
                f"{info.not_after:%Y-%m-%d}",
                f"{info.renew_after:%Y-%m-%d}",
            )
            return True
        log.info(
            "ordering a certificate for %s over %s: %s",
            ", ".join(self.names),
            self.answers.kind.upper(),
            reason,
        )
        from mailstack.acme.client import AcmeError, obtain  # imported by the worker already

        try:
            chain, key = await asyncio.to_thread(
                obtain, self.account, self.files, self.names, self.answers
            )
        except AcmeError as exc:
            kept = f"serial {info.serial_hex}" if info else "the self-signed one"
            log.error(
                "certificate order failed, keeping the current certificate (%s): %s", kept, exc
            )
            return False
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.monotonic_ns() % 10**6}"
        self.files.install(name, chain, key)
        new = read_certificate(self.files.cert)
        log.info(
            "new certificate for %s: serial %s from %s, valid until %s",
            ", ".join(new.names),
            new.serial_hex,
            new.issuer,
            f"{new.not_after:%Y-%m-%d %H:%M}",
        )
        try:
            self.on_new()
        except (OSError, ValueError) as exc:
            log.error("could not load the new certificate into the worker's listeners: %s", exc)
        return True
