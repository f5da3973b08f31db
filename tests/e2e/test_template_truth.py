"""The template and the code agree.

One run drives every function with each of its events/ files — configured exactly as the template
configures it (database credentials and the webhook secret from Secrets Manager, nothing overridden)
— on MariaDB and moto, while every AWS call and every settings model read is recorded per function.
Then: each handler resolves, each function succeeds with its events, each AWS call is allowed by the
function's role in the offline SAM transform, each granted action is used, and each environment
variable is read by the code (and each one the code needs is set).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, create_engine, text

from payment_outbox import settings
from payment_outbox.adapters.relay_launcher import LambdaRelayLauncher
from payment_outbox.domain.signature import sign
from payment_outbox_dev.checks.template import FunctionSpec, load_template
from payment_outbox_dev.local.harness import LocalFunctions, current_function
from payment_outbox_dev.local.provision import provision
from tests.support import ROOT, cfn_response_server, recent_paid_at
from tests.template_truth import (
    POWERTOOLS_VARIABLES,
    CallRecorder,
    Grant,
    Resolver,
    inline_grants,
    required_permissions,
    transform_offline,
)

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET = "truth-run-webhook-secret-32-chars-long"


@dataclass
class TruthRun:
    template: dict[str, Any]
    functions: LocalFunctions
    environments: dict[str, dict[str, str]]
    resolver: Resolver
    parameters: dict[str, str]
    recorder: CallRecorder
    settings_read: dict[str, set[type[Any]]]
    #: Per function, the environment variables whose settings field its code actually read.
    fields_read: dict[str, set[str]]
    outcomes: dict[str, list[tuple[str, Any]]]
    engine: Engine
    #: Per consumer, the records its queue deliveries handed it.
    received: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cfn_responses() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with cfn_response_server() as server:
        yield server


def _events_for(spec: FunctionSpec) -> list[Path]:
    prefix = Path(spec.code_uri).name
    return sorted((ROOT / "events").glob(f"{prefix}*.json"))


@pytest.fixture(scope="module", params=["false", "true"], ids=["standard", "ordered"])
def truth_run(
    request: pytest.FixtureRequest, mariadb_url: str, cfn_responses: tuple[str, list[dict[str, Any]]]
) -> Iterator[TruthRun]:
    """One run per delivery mode (OrderedDelivery false, then true) for the whole module: it is slow,
    and every check reads the same records."""
    from moto import mock_aws

    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        for table in ("message_record", "orders", "outbox_audit"):
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        run = _record_a_run(engine, monkeypatch, cfn_responses[0], ordered_delivery=request.param)
        yield run
        run.functions.close()
    engine.dispose()


def _record_a_run(
    db: Engine, monkeypatch: pytest.MonkeyPatch, cfn_response_url: str, *, ordered_delivery: str
) -> TruthRun:
    recorder = CallRecorder()
    recorder.install(monkeypatch)
    settings_read: dict[str, set[type[Any]]] = defaultdict(set)
    original_init = settings._Settings.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        function = current_function.get()
        if function is not None:
            settings_read[function].add(type(self))
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(settings._Settings, "__init__", recording_init)
    # A field counts as read when the code reads it, not when a model holding it is built.
    fields_read: dict[str, set[str]] = defaultdict(set)
    original_getattribute = settings._Settings.__getattribute__

    def recording_getattribute(self: Any, name: str) -> Any:
        function = current_function.get()
        if function is not None and name in type(self).model_fields:
            fields_read[function].add(name.upper())
        return original_getattribute(self, name)

    monkeypatch.setattr(settings._Settings, "__getattribute__", recording_getattribute)

    # Given the deployment's own configuration: secrets in Secrets Manager, database by host and name.
    secrets = boto3.client("secretsmanager")
    username = db.url.username or "root"
    db_secret = secrets.create_secret(
        Name="payment-outbox/database",
        SecretString=json.dumps({"username": username, "password": db.url.password or ""}),
    )["ARN"]
    # The functions' own user (on the test server the same account; a secret of its own all the same,
    # so the run shows each function reads the one the template gives it)
    app_user_secret = secrets.create_secret(
        Name="payment-outbox/database-app-user",
        SecretString=json.dumps({"username": username, "password": db.url.password or ""}),
    )["ARN"]
    webhook_secret = secrets.create_secret(
        Name="payment-outbox/webhook", SecretString=json.dumps({"current": WEBHOOK_SECRET})
    )["ARN"]
    parameters = {
        "DbHost": str(db.url.host),
        "DbPort": str(db.url.port or 3306),
        "DbName": str(db.url.database),
        "DbSecretArn": db_secret,
        "DbAppUserSecretArn": app_user_secret,
        "WebhookSecretArn": webhook_secret,
        "Stage": "dev",
        # The test server speaks plain MySQL on loopback; no database or endpoints are created.
        "DbRequireTls": "false",
        "CreateDatabase": "false",
        "SubnetsHaveNat": "true",
        "VpcEndpointSns": "none",
        "VpcEndpointSecretsManager": "none",
        "VpcEndpointLambda": "none",
        "VpcEndpointS3": "none",
        "VpcEndpointDynamoDb": "none",
        "OrderedDelivery": ordered_delivery,
    }
    for name in ("DATABASE_URL", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    template = load_template(ROOT / "template.yaml")
    provisioned = provision(template, parameters=parameters)
    environments = provisioned.environments(template)
    functions = LocalFunctions(ROOT, template, environments)
    run = TruthRun(
        template,
        functions,
        environments,
        Resolver(provisioned, provisioned.parameters),
        parameters,
        recorder,
        settings_read,
        fields_read,
        defaultdict(list),
        db,
    )
    _drive_everything(run, cfn_response_url)
    return run


def _invoke_fresh(run: TruthRun, logical_id: str, event: dict[str, Any]) -> Any:
    """Each invocation as in a fresh container, so every setting and client is built (and seen) anew."""
    run.functions.cold_start(logical_id)
    return run.functions.invoke(logical_id, event)


def _drive_everything(run: TruthRun, cfn_response_url: str) -> None:
    state: dict[str, Any] = {}
    order_first = ["create_order", "notify", "get_order"]

    def rank(path: Path) -> int:
        return next((i for i, word in enumerate(order_first) if word in path.name), len(order_first))

    for logical_id, spec in run.functions.specs.items():
        if logical_id == "OutboxJanitorFunction":
            _age_sent_rows(run, timedelta(days=30))
        for path in sorted(_events_for(spec), key=rank):
            event = _prepare(json.loads(path.read_text()), state, cfn_response_url)
            result = _invoke_fresh(run, logical_id, event)
            run.outcomes[logical_id].append((path.name, result))
            if path.name.endswith("create_order.json"):
                state["order"] = json.loads(result["body"])
            if logical_id == "OutboxRelayFunction":
                _drain_queues(run)
                _age_sent_rows(run, timedelta(hours=1))
        if logical_id == "PaymentApiFunction":
            # The after-commit publish sent the order's messages; make them due again so the relay
            # publishes them too (consumers then also see a duplicate of each, and absorb it).
            with run.engine.begin() as conn:
                conn.execute(
                    text("UPDATE message_record SET status = 0, next_retry_at = :now"),
                    {"now": datetime.now(UTC).replace(tzinfo=None)},
                )


def _age_sent_rows(run: TruthRun, age: timedelta) -> None:
    """Make the delivered messages older: an hour, so the reconciler checks their effects; a month,
    so the janitor archives and purges them. Their every permission is then exercised too."""
    with run.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET create_time = :old, sent_time = :old WHERE status = 1"),
            {"old": datetime.now(UTC).replace(tzinfo=None) - age},
        )


def _drain_queues(run: TruthRun) -> None:
    """Deliver what the relay published to the consumers, as Lambda's SQS poller would."""
    for logical_id, spec in run.functions.specs.items():
        for event in spec.events.values():
            if event.get("Type") == "SQS":
                queue_url = run.resolver.render(event["Properties"]["Queue"]).rsplit(":", 1)[-1]
                url = boto3.client("sqs").get_queue_url(QueueName=queue_url)["QueueUrl"]
                run.functions.cold_start(logical_id)
                delivery = run.functions.deliver(url, logical_id)
                run.received[logical_id] = run.received.get(logical_id, 0) + delivery.received
                run.outcomes[logical_id].append(("queue delivery", delivery.response))


def _prepare(event: dict[str, Any], state: dict[str, Any], cfn_response_url: str) -> dict[str, Any]:
    order = state.get("order")
    if order is not None and event.get("pathParameters", {}) and "orderId" in event["pathParameters"]:
        event["pathParameters"]["orderId"] = str(order["orderId"])
        event["path"] = event["resource"].replace("{orderId}", str(order["orderId"]))
    if event.get("path") == "/payments/notify" and order is not None:
        body = json.loads(event["body"])
        body.update(orderNo=order["orderNo"], amount=order["amount"], paidAt=recent_paid_at())
        event["body"] = json.dumps(body)
        event["headers"]["X-Signature"] = sign(event["body"].encode(), WEBHOOK_SECRET, int(time.time()))
    if "ResponseURL" in event:
        event["ResponseURL"] = cfn_response_url
    return event


def _api_body(result: Any, status: int) -> dict[str, Any]:
    assert result["statusCode"] == status, result
    body: dict[str, Any] = json.loads(result["body"])
    return body


def _judge(run: TruthRun, logical_id: str, event: str, result: Any) -> None:
    """What this function's own answer to this event must be, after the run's earlier steps."""
    head = run.template["Resources"]["SchemaMigration"]["Properties"]["SchemaRevision"]
    if logical_id == "PaymentApiFunction":
        # The order is created, then paid by the notify event, then read back paid
        status, order_status = (201, "CREATED") if event.endswith("create_order.json") else (200, "PAID")
        assert _api_body(result, status)["status"] == order_status
    elif logical_id == "OutboxRelayFunction":
        # The two rows the payment made due again: both published, none retried or given up
        assert result == {"claimed": 2, "published": 2, "retried": 0, "failed": []}
    elif logical_id in ("PointsConsumerFunction", "SmsConsumerFunction"):
        assert result == {"batchItemFailures": []}
    elif logical_id == "AdminApiFunction":
        body = _api_body(result, 200)
        if event == "admin_api_stats.json":
            assert body["counts"] == {"pending": 0, "sent": 2, "failed": 0}
        if event == "admin_api_trace.json":
            assert body["order"]["status"] == "PAID" and len(body["messages"]) == 2
    elif logical_id == "ReconcilerFunction":
        # The two sent messages (aged an hour) were checked and found applied; nothing else is wrong
        assert result == {
            "ordersMissingOutbox": [],
            "messagesStuckFailed": 0,
            "failedSample": [],
            "sentChecked": 2,
            "sentComplete": True,
            "messagesWithoutEffect": [],
            "stuckIdempotencyRecords": [],
        }
    elif logical_id == "OutboxJanitorFunction":
        # The two sent messages (aged a month) archived, then purged, within the time
        assert (result["purged"], result["archived"], result["outOfTime"]) == (2, 2, False)
    elif logical_id == "SchemaMigratorFunction":
        assert result == {"revision": head}
    else:
        raise AssertionError(f"{logical_id}: no expectation for this function")


def test_every_handler_resolves_to_a_callable(truth_run: TruthRun) -> None:
    for logical_id in truth_run.functions.specs:
        assert callable(truth_run.functions.handler(logical_id)), logical_id


def test_each_function_answers_each_of_its_events_with_its_own_expected_result(
    truth_run: TruthRun, cfn_responses: tuple[str, list[dict[str, Any]]]
) -> None:
    # Then every function was invoked with at least one events/ file, and each answer is right
    for logical_id, spec in truth_run.functions.specs.items():
        assert _events_for(spec), f"{logical_id} has no event in events/"
        outcomes = truth_run.outcomes[logical_id]
        assert outcomes, f"{logical_id} was never invoked"
        for event, result in outcomes:
            try:
                _judge(truth_run, logical_id, event, result)
            except AssertionError as exc:
                raise AssertionError(f"{logical_id} with {event}: {exc}") from exc
    # And each consumer's queue delivery handled the message the payment API published right after
    # commit and the relay's second copy of it; a FIFO topic (ordered delivery) drops that copy, a
    # re-publish of the same messageId within its deduplication window
    copies = 1 if truth_run.parameters["OrderedDelivery"] == "true" else 2
    assert truth_run.received == {"PointsConsumerFunction": copies, "SmsConsumerFunction": copies}
    # And the deploy-time migration answered CloudFormation with success and the schema's revision
    answers = [a for a in cfn_responses[1] if a["LogicalResourceId"] == "SchemaMigration"]
    assert answers and answers[-1]["Status"] == "SUCCESS", answers
    assert (
        answers[-1]["Data"]["Revision"]
        == truth_run.template["Resources"]["SchemaMigration"]["Properties"]["SchemaRevision"]
    )


def test_every_aws_call_is_allowed_by_the_functions_role(truth_run: TruthRun) -> None:
    transformed = transform_offline(truth_run.template, truth_run.parameters)
    denied = []
    for logical_id, calls in truth_run.recorder.by_function().items():
        grants = inline_grants(transformed, logical_id, truth_run.resolver)
        for call in calls:
            for action, resource in required_permissions(call.service, call.operation, call.params):
                if not any(grant.allows(action, resource) for grant in grants):
                    denied.append(f"{logical_id}: {action} on {resource}")
    assert not denied, "calls the template does not allow:\n" + "\n".join(sorted(set(denied)))


#: Granted but not exercised by a successful run, each for a reason the run cannot show.
EXPECTED_UNUSED = {
    # Powertools deletes an INPROGRESS idempotency record when the handler raises, and reads a record
    # with GetItem only when a failed conditional put returned no old item.
    ("PointsConsumerFunction", "dynamodb:DeleteItem"),
    ("SmsConsumerFunction", "dynamodb:DeleteItem"),
    ("PointsConsumerFunction", "dynamodb:GetItem"),
    ("SmsConsumerFunction", "dynamodb:GetItem"),
    # The relay invokes itself only when one run cannot drain the due rows before its deadline
    # (thousands of rows); test_the_relays_fan_out_call_is_allowed proves that call's permission.
    ("OutboxRelayFunction", "lambda:InvokeFunction"),
    # A redrive sends and deletes only when a DLQ holds messages (the run's DLQs are empty);
    # tests/integration/test_dlq_redrive.py moves messages through the same adapter.
    ("AdminApiFunction", "sqs:SendMessage"),
    ("AdminApiFunction", "sqs:DeleteMessage"),
    # An operator's decision on an SMS parked as uncertain (resend: sns:Publish to the phone and the
    # SENT record; mark delivered: the SENT record): the run parks none. test_fault_matrix.py (12, 12b)
    # drives both routes through the admin handler.
    ("AdminApiFunction", "dynamodb:PutItem"),
    ("AdminApiFunction", "sns:Publish"),
}


def test_every_granted_action_is_used(truth_run: TruthRun) -> None:
    transformed = transform_offline(truth_run.template, truth_run.parameters)
    unused = []
    calls = truth_run.recorder.by_function()
    for logical_id in truth_run.functions.specs:
        used = [
            p
            for c in calls.get(logical_id, [])
            for p in required_permissions(c.service, c.operation, c.params)
        ]
        for grant in inline_grants(transformed, logical_id, truth_run.resolver):
            for action in sorted(grant.actions):
                single = Grant(frozenset({action}), grant.resources)
                if (
                    not any(single.allows(a, r) for a, r in used)
                    and (logical_id, action) not in EXPECTED_UNUSED
                ):
                    unused.append(f"{logical_id}: {action} on {', '.join(grant.resources)}")
    assert not unused, "granted but never used:\n" + "\n".join(unused)


def test_the_relays_fan_out_call_is_allowed(truth_run: TruthRun) -> None:
    # Given the relay deployed under the name the template gives it (Lambda hands the handler that
    # name in its context, which fan-out invokes)
    properties = truth_run.template["Resources"]["OutboxRelayFunction"]["Properties"]
    deployed_name = truth_run.resolver.render(properties["FunctionName"])
    invoked: list[dict[str, Any]] = []

    class Client:
        def invoke(self, **params: Any) -> dict[str, Any]:
            invoked.append(params)
            return {"StatusCode": 202}

    # When the relay's launcher starts two more runs
    started = LambdaRelayLauncher(Client, deployed_name).launch(2, seconds_left=30)
    # Then it made two asynchronous invocations of the relay itself, each allowed by the relay's role
    assert started == 2
    assert [(p["FunctionName"], p["InvocationType"]) for p in invoked] == [(deployed_name, "Event")] * 2
    grants = inline_grants(
        transform_offline(truth_run.template, truth_run.parameters), "OutboxRelayFunction", truth_run.resolver
    )
    for params in invoked:
        for action, resource in required_permissions("lambda", "Invoke", params):
            assert any(grant.allows(action, resource) for grant in grants), (action, resource)
    # And no other function may invoke it
    for logical_id in truth_run.functions.specs:
        if logical_id != "OutboxRelayFunction":
            others = inline_grants(
                transform_offline(truth_run.template, truth_run.parameters), logical_id, truth_run.resolver
            )
            assert not any("lambda:InvokeFunction" in g.actions for g in others), logical_id


def test_environment_variables_match_what_the_code_reads(truth_run: TruthRun) -> None:
    problems = []
    for logical_id, environment in truth_run.environments.items():
        read = truth_run.settings_read.get(logical_id, set())
        readable = truth_run.fields_read.get(logical_id, set()) | POWERTOOLS_VARIABLES
        # Every variable the template sets is one whose setting this function's code reads
        problems += [
            f"{logical_id}: {name} is set but never read" for name in environment if name not in readable
        ]
        # Every settings model the code reads validates from the template's variables alone
        for cls in read:
            try:
                _with_only(environment, cls)
            except Exception as exc:
                problems.append(f"{logical_id}: {cls.__name__} cannot be built from the template: {exc}")
    assert not problems, "\n".join(problems)


def _with_only(environment: dict[str, str], cls: type[Any]) -> None:
    import os

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environment)
        cls()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_network_proof_knows_every_service_each_function_called(truth_run: TruthRun) -> None:
    """The network-reach proof (payment_outbox_dev.checks.template_proofs) reads each function's services from
    its role; this run's recorded calls show that list misses none the code really calls."""
    from payment_outbox_dev.checks.template_proofs import Deployment

    transformed = transform_offline(truth_run.template, truth_run.parameters)
    deployment = Deployment.of(truth_run.template, transformed, truth_run.parameters)
    missed = sorted(
        f"{logical_id} calls {service}"
        for logical_id, calls in truth_run.recorder.by_function().items()
        for service in {call.service for call in calls} - deployment.services_called(logical_id)
    )
    assert not missed, "\n".join(missed)
    # And the migrator's answer to CloudFormation (a PUT to S3, not a botocore call) is counted too
    assert "s3" in deployment.services_called("SchemaMigratorFunction")
