"""One certificate order (RFC 8555) over HTTP-01, with certbot's `acme` library.

Blocking (the library uses requests): the renewer runs `obtain` in a thread. The account key
is made on first use and kept; the account itself is found again by its key (newAccount
answers an existing key with its URL), so nothing else about it needs storing.
"""

from __future__ import annotations

import datetime
import encodings.idna  # noqa: F401 - used by requests for names; loaded before the worker drops root
import logging
from pathlib import Path
from typing import cast

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

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


def obtain(account: AcmeAccount, files: AcmeFiles, names: tuple[str, ...]) -> tuple[str, str]:
    """(full chain PEM, private key PEM) of a new certificate for `names`; AcmeError if not."""
    try:
        return _obtain(account, files, names)
    except (errors.Error, messages.Error, OSError, ValueError) as exc:
        raise AcmeError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # requests' and josepy's own errors: all mean "not this time"
        raise AcmeError(f"{type(exc).__name__}: {exc}") from exc


def _obtain(account: AcmeAccount, files: AcmeFiles, names: tuple[str, ...]) -> tuple[str, str]:
    key = account_key(files)
    acme = _client(account, key)
    private_key = new_private_key()
    order = acme.new_order(crypto_util.make_csr(private_key, list(names)))
    answered: list[Path] = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # validated recently; the server reuses it
            challenge = next(
                (
                    c
                    for c in authorization.body.challenges
                    if isinstance(c.chall, challenges.HTTP01)
                ),
                None,
            )
            if challenge is None:
                name = authorization.body.identifier.value
                raise AcmeError(f"the ACME server offers no HTTP-01 challenge for {name}")
            response, validation = challenge.response_and_validation(key)
            token = files.challenges / challenge.chall.encode("token")
            write_atomic(token, validation, 0o644)
            answered.append(token)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_SECONDS)
        done = acme.poll_and_finalize(order, deadline)
    finally:
        for token in answered:
            token.unlink(missing_ok=True)
    if not done.fullchain_pem:
        raise AcmeError("the order ended without a certificate")
    return done.fullchain_pem, private_key.decode("ascii")
