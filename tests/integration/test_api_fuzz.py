"""Schemathesis, an outside API fuzzer, against the running local stack and the OpenAPI document it
serves at /openapi.json: for every operation, a bounded number of generated requests (valid and
invalid) must never get a 5xx, every answer must conform to the document (status code, content
type, body schema), and a refused request (4xx) must write nothing. The payment callback is signed
at send time over the exact bytes sent, so the fuzzer reaches the body rules behind the signature; every
other request is signed with SigV4 by the stack's local credentials (an IAM caller), so it reaches the
function behind the authorizer. A run without credentials gets 401/403 on every protected route.

SCHEMATHESIS_MAX_EXAMPLES (default 25) bounds the examples per operation. A stateful phase then
follows the document's links (create → read → trace, list → requeue…) in chains of up to 6 calls,
SCHEMATHESIS_STATEFUL_EXAMPLES (default 20) scenarios.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from payment_outbox.domain.signature import sign
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET
from tests.integration.test_local_stack import RunningStack, start_stack

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
#: Scenarios of the stateful phase (each up to 6 chained calls).
STATEFUL_EXAMPLES = int(os.environ.get("SCHEMATHESIS_STATEFUL_EXAMPLES", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, Path]]:
    folder = tmp_path_factory.mktemp("fuzzed-stack")
    running = start_stack(folder / "data", folder / "stack.log")
    try:
        yield running, folder / "data" / "payment_outbox.db"
    finally:
        running.stop()


def written_state(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What a request could write: every order, every outbox row's identity (the stack's relay
    changes their status on its own), every audit row."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return {
            "orders": sorted(conn.execute("SELECT * FROM orders").fetchall()),
            "message_record": sorted(
                conn.execute("SELECT id, message_id, business_key, content FROM message_record").fetchall()
            ),
            "outbox_audit": sorted(conn.execute("SELECT * FROM outbox_audit").fetchall()),
        }


def send(case: Any, stack: RunningStack, *, credentials: bool = True) -> requests.Response:
    """Send the case exactly as prepared: a callback gets a valid X-Signature for the bytes it carries,
    any other request (``credentials``) a SigV4 signature by the stack's local credentials, over the
    URL and body as they go out; without ``credentials`` no Authorization header at all."""
    kwargs = case.as_transport_kwargs(base_url=stack.api)
    if "json" in kwargs:
        kwargs["data"] = json.dumps(kwargs.pop("json")).encode()
    raw = kwargs.get("data") or b""
    kwargs["data"] = raw.encode() if isinstance(raw, str) else raw
    timeout = kwargs.pop("timeout", 15)
    headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "authorization"}
    prepared = requests.Request(headers=headers, **kwargs).prepare()
    body = prepared.body or b""
    body = body.encode() if isinstance(body, str) else body
    if case.operation.path == "/payments/notify":
        prepared.headers["X-Signature"] = sign(body, LOCAL_WEBHOOK_SECRET, int(time.time()))
    elif credentials:
        signed = stack.credentials().sign(
            str(prepared.method), str(prepared.url), body, dict(prepared.headers)
        )
        prepared.headers.update(signed)
    with requests.Session() as session:
        return session.send(prepared, timeout=timeout)


def operations(stack: RunningStack) -> list[Any]:
    """The operations of the document as the stack serves it (the file a drift test keeps equal to
    the models)."""
    schema = schemathesis.openapi.from_url(stack.api + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_holds_its_document_under_fuzzing(
    fuzzed_stack: tuple[RunningStack, Path], mode: GenerationMode
) -> None:
    stack, database = fuzzed_stack
    sent: dict[str, int] = {}
    documented = operations(stack)

    for operation in documented:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def holds(case: Any) -> None:
            # Given the stored state
            before = written_state(database)

            # When a generated request is sent
            response = send(case, stack)
            sent[case.operation.label] = sent.get(case.operation.label, 0) + 1

            # Then no 5xx, and the answer conforms to the document
            case.validate_response(response, checks=CHECKS)
            # And a refused request wrote nothing
            if response.status_code >= 400:
                assert written_state(database) == before, (
                    case.operation.label,
                    response.status_code,
                    response.text,
                )

        holds()

    # Every operation of the document was exercised
    assert set(sent) == {operation.label for operation in documented}, sent


#: The stateful phase's checks: every check above, plus those that judge a chain of calls (a resource
#: the API answered for is still there; a deleted one is gone) and the headers the document declares.
STATEFUL_CHECKS = [*CHECKS, ensure_resource_availability, use_after_free, response_headers_conformance]


def test_chained_calls_follow_the_documents_links_and_hold_it(
    fuzzed_stack: tuple[RunningStack, Path],
) -> None:
    # Given the document's links (create → read → trace, list → requeue, …) as a state machine
    stack, _ = fuzzed_stack
    schema = schemathesis.openapi.from_url(stack.api + "/openapi.json")
    steps: list[str] = []

    class Chains(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            # As an IAM caller: SigV4 over the URL and body the call will send (Host and X-Amz-Date signed)
            prepared = requests.Request(**case.as_transport_kwargs(base_url=stack.api)).prepare()
            body = prepared.body or b""
            body = body.encode() if isinstance(body, str) else body
            signed = stack.credentials().sign(str(prepared.method), str(prepared.url), body)
            auth = {k: v for k, v in signed.items() if k in ("Authorization", "X-Amz-Date")}
            return {"base_url": stack.api, "timeout": 15, "headers": auth}

        def after_call(self, response: Any, case: Any) -> None:
            steps.append(f"{case.operation.label} {response.status_code}")

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # When a chained call is answered, then it is no 5xx and as documented
            case.validate_response(response, checks=STATEFUL_CHECKS)

    Chains.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # And the chains did follow a link to a real resource: a path-parameter call answered 200, with
    # the value a previous answer gave (the fuzzer draws no valid name, fingerprint or id by chance)
    linked = {
        "GET /orders/{order_id}",
        "GET /admin/orders/{order_id}/trace",
        "POST /admin/dlqs/{name}/redrive",
        "POST /admin/messages/{message_id}/requeue",
        "POST /admin/failures/{fingerprint}/requeue",
        "POST /admin/failures/{fingerprint}/resolve",
    }
    assert any(s.rsplit(" ", 1)[0] in linked and s.endswith(" 200") for s in steps), steps[:40]


def test_without_credentials_every_protected_route_is_refused_by_the_authorizer(
    fuzzed_stack: tuple[RunningStack, Path],
) -> None:
    stack, database = fuzzed_stack
    refused: dict[str, set[int]] = {}
    protected = [operation for operation in operations(stack) if operation.path != "/payments/notify"]

    for operation in protected:

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(
            max_examples=min(MAX_EXAMPLES, 10),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def refused_without_credentials(case: Any) -> None:
            # Given the stored state
            before = written_state(database)
            # When a valid request is sent without credentials
            response = send(case, stack, credentials=False)
            # Then API Gateway's authorizer refuses it, as documented, and nothing is written
            assert response.status_code in (401, 403), (case.operation.label, response.status_code)
            assert set(response.json()) == {"message"}, response.text
            case.validate_response(response, checks=CHECKS)
            assert written_state(database) == before
            refused.setdefault(case.operation.label, set()).add(response.status_code)

        refused_without_credentials()

    # Every protected operation was tried (the stack runs CallerIdentity=iam: 403 everywhere)
    assert set(refused) == {operation.label for operation in protected}, refused
    assert set().union(*refused.values()) == {403}
