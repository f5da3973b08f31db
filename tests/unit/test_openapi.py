"""The checked-in OpenAPI document is what the handlers' routes and models generate, covers every API
route of the template, states the field grammar, and loads in schemathesis."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis

from payment_outbox.domain import grammar
from payment_outbox_dev.checks.template import api_routes, load_template
from payment_outbox_dev.local import openapi
from tests.support import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return openapi.build(ROOT)


def test_the_checked_in_document_is_what_the_models_generate() -> None:
    # Given the routes and models as they are / When the document is generated again
    text = openapi.render(ROOT)

    # Then docs/openapi.json holds exactly that (run `python -m payment_outbox_dev.local.openapi` if not)
    assert (ROOT / "docs" / "openapi.json").read_text() == text


def test_the_drift_check_fails_on_a_stale_document(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a copy of the project whose document lost a route
    (tmp_path / "docs").mkdir()
    (tmp_path / "functions").symlink_to(ROOT / "functions")
    stale = json.loads((ROOT / "docs" / "openapi.json").read_text())
    stale["paths"].pop("/payments/notify")
    (tmp_path / "docs" / "openapi.json").write_text(json.dumps(stale))

    # When it is checked / Then the check fails and says how to fix it
    assert openapi.main(["--root", str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_api_route_of_the_template_is_documented(generated: dict[str, Any]) -> None:
    routes = api_routes(load_template(ROOT / "template.yaml"))
    template_routes = {(r.method.lower(), _shape(r.path)) for r in routes}
    documented = {(m, _shape(p)) for p, ops in generated["paths"].items() for m in ops}
    assert documented == template_routes


def test_request_fields_carry_the_grammar_patterns(generated: dict[str, Any]) -> None:
    create = generated["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    notify = generated["paths"]["/payments/notify"]["post"]["requestBody"]["content"]["application/json"]
    props = create["properties"]
    assert props["amount"]["pattern"] == grammar.AMOUNT_PATTERN
    assert props["phone"]["pattern"] == grammar.PHONE_PATTERN
    assert props["currency"]["pattern"] == grammar.CURRENCY_PATTERN
    assert (props["userId"]["minimum"], props["userId"]["maximum"]) == (1, 2**63 - 1)
    assert create["additionalProperties"] is False
    assert notify["schema"]["properties"]["paidAt"]["pattern"] == grammar.TIMESTAMP_PATTERN


def test_every_refusal_is_documented_with_the_error_model(generated: dict[str, Any]) -> None:
    notify = generated["paths"]["/payments/notify"]["post"]
    assert set(notify["responses"]) == {"200", "400", "401", "404", "409", "413", "422"}
    assert notify["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorView"
    }
    assert notify["security"] == []
    assert generated["paths"]["/admin/stats"]["get"]["security"] == [{"sigv4": []}]


def test_each_route_declares_its_security_scheme(generated: dict[str, Any]) -> None:
    # Given the document's schemes
    schemes = generated["components"]["securitySchemes"]
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert schemes["cognitoUserPool"]["x-amazon-apigateway-authtype"] == "cognito_user_pools"
    gateway_or_function = {
        "anyOf": [{"$ref": "#/components/schemas/ErrorView"}, {"$ref": "#/components/schemas/GatewayError"}]
    }
    for path, operations in generated["paths"].items():
        for method, operation in operations.items():
            if (path, method) == ("/payments/notify", "post"):
                continue
            # Then every route takes SigV4 (CallerIdentity=iam, the default), and the order routes
            # name the user-pool token they take with CallerIdentity=cognito
            assert operation["security"] == [{"sigv4": []}], (method, path)
            cognito = [{"cognitoUserPool": []}] if path.startswith("/orders") else None
            assert operation.get("x-security-cognito") == cognito, (method, path)
            # And each documents the authorizer's refusals, in API Gateway's shape or the function's
            for status in ("401", "403"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == gateway_or_function, (method, path, status)


def test_schemathesis_loads_the_document() -> None:
    schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
    operations = {o.ok().label for o in schema.get_all_operations()}
    assert "POST /payments/notify" in operations and len(operations) == 16


def test_links_chain_real_calls_create_read_trace_and_list_requeue() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    chained = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    # Each link names an operation of this document...
                    pointer = link["operationRef"].removeprefix("#/paths/")
                    target_path, _, verb = pointer.rpartition("/")
                    target_path = target_path.replace("~1", "/").replace("~0", "~")
                    target = document["paths"][target_path][verb]
                    # ...fills exactly its path parameters...
                    names = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                    assert set(link["parameters"]) == names, (path, method, link)
                    # ...from a field the source's answer has
                    schema = response["content"]["application/json"]["schema"]
                    if "$ref" in schema:
                        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
                    for expression in link["parameters"].values():
                        first = expression.removeprefix("$response.body#/").split("/")[0]
                        assert first in schema["properties"], (path, expression)
                    chained.add((f"{method.upper()} {path}", f"{verb.upper()} {target_path}"))
    assert {
        ("POST /orders", "GET /orders/{order_id}"),
        ("POST /orders", "GET /admin/orders/{order_id}/trace"),
        ("GET /admin/messages", "POST /admin/messages/{message_id}/requeue"),
    } <= chained
    # And schemathesis builds its stateful test from them
    schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
    assert schema.as_state_machine() is not None
