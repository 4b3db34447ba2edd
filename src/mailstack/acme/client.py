"""One certificate order (RFC 8555), with certbot's `acme` library; the challenges are
answered over HTTP-01 or DNS-01 (answers.py).

Blocking (the library uses requests): the renewer runs `obtain` in a thread. The account key
is made on first use and kept; the account itself is found again by its key (newAccount
answers an existing key with its URL), so nothing else about it needs storing.
"""

from __future__ import annotations

import datetime
import encodings.idna  # noqa: F401 - used by requests for names; loaded before the worker drops root
import logging
from typing import cast

from acme import client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from mailstack.acme.answers import ChallengeAnswers, Cleanup, Http01Answers
from mailstack.acme.dns01 import Dns01Error
from mailstack.acme.files import AcmeAccount, AcmeFiles
from mailstack.runtime.files import write_atomic

log = logging.getLogger("mailstack.acme")

USER_AGENT = "mailstack"
ORDER_SECONDS = 180  # validation and finalisation together


class AcmeError(Exception):
    """An order that did not end in a certificate; the message says why."""


def new_private_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def account_key(files: AcmeFiles) -> JWKEC:
    if not files.account_key.is_file():
        write_atomic(files.account_key, new_private_key().decode("ascii"), 0o600)
    key = serialization.load_pem_private_key(files.account_key.read_bytes(), None)
    return JWKEC(key=key)


def _client(account: AcmeAccount, key: JWKEC) -> client.ClientV2:
    # requests takes a CA bundle path where acme's signature says bool
    verify = cast(bool, str(account.ca_file)) if account.ca_file else True
    net = client.ClientNetwork(key, alg=ES256, verify_ssl=verify, user_agent=USER_AGENT)
    directory = client.ClientV2.get_directory(account.directory, net)
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(
        email=account.email, terms_of_service_agreed=True
    )
    try:
        acme.new_account(registration)
    except errors.ConflictError as known:  # this key has an account: use it
        net.account = messages.RegistrationResource(
            uri=known.location, body=messages.Registration()
        )
    return acme


def obtain(
    account: AcmeAccount,
    files: AcmeFiles,
    names: tuple[str, ...],
    answers: ChallengeAnswers | None = None,
) -> tuple[str, str]:
    """(full chain PEM, private key PEM) of a new certificate for `names`, the challenges
    answered by `answers` (HTTP-01 by default); AcmeError if not."""
    try:
        return _obtain(account, files, names, answers or Http01Answers(files.challenges))
    except Dns01Error as exc:
        raise AcmeError(f"DNS-01: {exc}") from exc
    except (errors.Error, messages.Error, OSError, ValueError) as exc:
        raise AcmeError(_one_line(exc)) from exc
    except Exception as exc:  # requests' and josepy's own errors: all mean "not this time"
        raise AcmeError(_one_line(exc)) from exc


def _one_line(exc: Exception) -> str:
    """The error as one log line (a failed validation lists each authorization on a line)."""
    lines = (line.strip() for line in str(exc).splitlines())
    return f"{type(exc).__name__}: {'; '.join(line for line in lines if line)}"


def _obtain(
    account: AcmeAccount, files: AcmeFiles, names: tuple[str, ...], answers: ChallengeAnswers
) -> tuple[str, str]:
    key = account_key(files)
    acme = _client(account, key)
    private_key = new_private_key()
    order = acme.new_order(crypto_util.make_csr(private_key, list(names)))
    cleanups: list[Cleanup] = []
    try:
        chosen: list[messages.ChallengeBody] = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # validated recently; the server reuses it
            name = authorization.body.identifier.value
            challenge = next(
                (c for c in authorization.body.challenges if c.chall.typ == answers.kind), None
            )
            if challenge is None:
                shown = f"*.{name}" if authorization.body.wildcard else name
                raise AcmeError(f"the ACME server offers no {answers.kind} challenge for {shown}")
            cleanups.append(answers.present(challenge, name, key))
            chosen.append(challenge)
        # every answer is in place before the server looks at any
        for challenge in chosen:
            acme.answer_challenge(challenge, challenge.response(key))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_SECONDS)
        done = acme.poll_and_finalize(order, deadline)
    finally:
        for cleanup in cleanups:
            try:
                cleanup()
            except (Dns01Error, OSError) as exc:  # the order's own outcome still counts
                log.error("could not remove a challenge answer: %s", exc)
    if not done.fullchain_pem:
        raise AcmeError("the order ended without a certificate")
    return done.fullchain_pem, private_key.decode("ascii")
