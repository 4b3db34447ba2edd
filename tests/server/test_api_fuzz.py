"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis):
whatever a client sends, with an admin token or a user's, the answer is never a 5xx, and
it has the status, media type and shape the document promises. Real uvicorn, real
databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_harness import client, serving
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mailstack.api.openapi import document
from mailstack.store import MailStore, open_engine

#: The queue needs a running Postfix (its showq and qmgr): it is tested against the whole
#: server (test_server_profile.py), not here, where the API runs without one (503).
SCHEMA = schemathesis.openapi.from_dict(document()).exclude(path_regex="^/queue")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(base URL, admin token, alice's token) of an API over a store with a domain, a user
    and a script."""
    folder = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        url = str(folder / "mailstack.db")
    else:
        url = request.getfixturevalue("postgres").new_database()
    store = MailStore(open_engine(url))
    try:
        store.add_domain("example.com")
        store.add_user("alice@example.com", "correct horse battery")
        store.put_script("alice@example.com", "filter", "keep;\n")
        _, secret = store.create_token("fuzz")
        _, alice = store.create_token("alice", "alice@example.com")
        rotation = folder / "dkim-rotation"
        with serving(store.engine, folder, mounted=False, rotation_trigger=rotation) as base:
            yield base, secret, alice
    finally:
        store.close()


@SCHEMA.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors(case: schemathesis.Case, target: tuple[str, str, str]) -> None:
    base, *tokens = target
    for token in tokens:
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=CHECKS)


def test_the_fuzzed_server_answers(target: tuple[str, str, str]) -> None:
    """The cases above reach the API itself (a 404 from a wrong base URL would conform)."""
    base, token, _ = target
    with client(base, token) as admin:
        assert admin.get("/me").json()["token"] == "fuzz"
        assert admin.get("/users/alice@example.com/sieve").status_code == 200
