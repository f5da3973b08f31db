"""The SAM template, its events and its build layout hold together.

These tests read template.yaml as data; nothing is deployed and no AWS call is made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any

import pytest

from payment_outbox_dev.checks.template import load_template
from tests.support import ROOT

pytestmark = pytest.mark.unit

TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"

# cfnlint has no __main__ module; this is what the cfn-lint console script runs.
CFN_LINT = "import sys; from cfnlint.runner import main; sys.exit(main())"

# Which events/<prefix>*.json files drive which function.
EVENT_PREFIXES = {
    "PaymentApiFunction": "payment_api",
    "OutboxRelayFunction": "outbox_relay",
    "PointsConsumerFunction": "points_consumer",
    "SmsConsumerFunction": "sms_consumer",
    "AdminApiFunction": "admin_api",
    "ReconcilerFunction": "reconciler",
    "OutboxJanitorFunction": "outbox_janitor",
    "SchemaMigratorFunction": "schema_migrator",
}

LOCAL_WEBHOOK_SECRET = b"local-webhook-secret-for-this-machine-only"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources_of_type(template, "AWS::Serverless::Function")


def test_cfn_lint_reports_nothing() -> None:
    # Given the template and the cfn-lint of this environment, informational checks included
    # When cfn-lint runs on it
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [sys.executable, "-c", CFN_LINT, "--include-checks", "I", "--", str(TEMPLATE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # Then cfn-lint is installed (a missing linter fails, it is not skipped) and finds nothing
    assert "No module named" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_function_code_folder_has_a_handler_module(template: dict[str, Any]) -> None:
    # Given every function in the template
    functions = _functions(template)
    assert set(functions) == set(EVENT_PREFIXES)
    for name, function in functions.items():
        # When its CodeUri is resolved against the project root
        properties = function["Properties"]
        code_dir = ROOT / properties["CodeUri"]
        # Then it holds the module named by its handler
        module = properties["Handler"].split(".", 1)[0]
        assert (code_dir / f"{module}.py").is_file(), f"{name}: {code_dir / module}.py is missing"


def test_layer_holds_the_package_without_a_nested_python_folder(template: dict[str, Any]) -> None:
    # Given the common layer
    layer = template["Resources"]["CommonLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    content_dir = ROOT / layer["Properties"]["ContentUri"]
    # When its content folder is inspected
    # Then the package sits at its top, and the build (not the source) adds python/
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    assert (content_dir / "payment_outbox" / "__init__.py").is_file()
    assert (content_dir / "requirements.txt").is_file()
    assert not (content_dir / "python").exists()


def test_every_function_has_an_event_and_every_event_is_json(template: dict[str, Any]) -> None:
    # Given the events folder
    event_files = sorted(EVENTS.glob("*.json"))
    assert event_files
    # When each file is parsed
    for path in event_files:
        json.loads(path.read_text(encoding="utf-8"))
    # Then each function has at least one event of its own
    for function_name in _functions(template):
        prefix = EVENT_PREFIXES[function_name]
        assert any(p.name.startswith(prefix) for p in event_files), f"no events/{prefix}*.json"


def test_sqs_events_carry_a_correct_md5_and_envelope_attributes() -> None:
    # Given the consumer events (raw SNS delivery: the SQS body is the envelope itself)
    for path in sorted(EVENTS.glob("*_consumer_sqs*.json")):
        for record in json.loads(path.read_text(encoding="utf-8"))["Records"]:
            # When the body is read
            envelope = json.loads(record["body"])
            # Then the md5 matches and the attributes repeat the envelope's topic and messageId
            assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324
            attributes = record["messageAttributes"]
            assert attributes["topic"]["stringValue"] == envelope["topic"]
            assert attributes["messageId"]["stringValue"] == envelope["messageId"]


def test_notify_event_is_signed_with_the_local_webhook_secret() -> None:
    # Given the payment notification event
    event = json.loads((EVENTS / "payment_api_notify.json").read_text(encoding="utf-8"))
    fields = dict(part.split("=", 1) for part in event["headers"]["X-Signature"].split(","))
    # When its signature is recomputed over "<t>.<body>"
    expected = hmac.new(
        LOCAL_WEBHOOK_SECRET, f"{fields['t']}.{event['body']}".encode(), hashlib.sha256
    ).hexdigest()
    # Then it matches
    assert hmac.compare_digest(fields["v1"], expected)


def test_every_queue_redrives_to_a_dead_letter_queue(template: dict[str, Any]) -> None:
    # Given the work queues (those that are not dead-letter queues themselves)
    queues = _resources_of_type(template, "AWS::SQS::Queue")
    work_queues = {name: q for name, q in queues.items() if not name.endswith("DeadLetterQueue")}
    assert set(work_queues) == {"PointsQueue", "SmsQueue"}
    for name, queue in work_queues.items():
        # When its redrive policy is read
        redrive = queue["Properties"]["RedrivePolicy"]
        dlq_name = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        # Then it points at a dead-letter queue in this template after a bounded number of receives
        assert dlq_name == name.replace("Queue", "DeadLetterQueue")
        assert dlq_name in queues
        assert 1 <= int(redrive["maxReceiveCount"]) <= 10


def test_every_subscription_is_raw_and_filtered_on_topic(template: dict[str, Any]) -> None:
    # Given the SQS subscriptions of the order events topic
    subscriptions = {
        name: sub
        for name, sub in _resources_of_type(template, "AWS::SNS::Subscription").items()
        if sub["Properties"]["Protocol"] == "sqs"
    }
    # When their delivery settings are read
    filters = {name: sub["Properties"]["FilterPolicy"] for name, sub in subscriptions.items()}
    # Then each is raw delivery, filtered on the `topic` message attribute
    for sub in subscriptions.values():
        assert sub["Properties"]["RawMessageDelivery"] is True
        assert sub["Properties"]["FilterPolicyScope"] == "MessageAttributes"
    assert filters == {
        "PointsSubscription": {"topic": ["topic.points"]},
        "SmsSubscription": {"topic": ["topic.sms"]},
    }


def test_idempotency_table_expires_records_on_expiration(template: dict[str, Any]) -> None:
    # Given the Powertools idempotency table
    table = template["Resources"]["IdempotencyTable"]["Properties"]
    # When its key and TTL are read
    # Then it is keyed on `id` and expires records on `expiration`, as Powertools expects
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_alarm_fires_on_one_failed_message(template: dict[str, Any]) -> None:
    # Given the failed-messages alarm
    alarm = template["Resources"]["MessagesFailedAlarm"]["Properties"]
    # When its metric and threshold are read
    # Then a single MessagesFailed from the relay in a minute alarms the ops topic
    assert alarm["Namespace"] == "PaymentOutbox"
    assert alarm["MetricName"] == "MessagesFailed"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "outbox-relay"}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "OpsTopic"}]


def test_api_routes_are_the_public_ones_and_the_iam_authorised_admin_ones(template: dict[str, Any]) -> None:
    # Given every Api event of every function
    routes = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for function in _functions(template).values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "Api"
    }
    # When they are collected
    # Then they are exactly the order and payment-callback routes, plus the admin routes
    assert routes == {
        ("POST", "/orders"),
        ("GET", "/orders/{orderId}"),
        ("POST", "/payments/notify"),
        ("GET", "/admin/messages"),
        ("POST", "/admin/messages/requeue"),
        ("POST", "/admin/messages/{messageId}/requeue"),
        ("GET", "/admin/stats"),
        ("GET", "/admin/orders/{orderId}/trace"),
        ("GET", "/admin/idempotency/stuck"),
        ("GET", "/admin/failures"),
        ("POST", "/admin/failures/{fingerprint}/requeue"),
        ("POST", "/admin/failures/{fingerprint}/resolve"),
        ("GET", "/admin/dlqs"),
        ("POST", "/admin/dlqs/{name}/redrive"),
        ("POST", "/admin/sms/{messageId}/resend"),
        ("POST", "/admin/sms/{messageId}/mark-delivered"),
    }
    # And every admin route is authorised by IAM, the order routes as CallerIdentity says (the API's
    # definition: SigV4 or the user pool), the signature-checked payment callback by nothing
    api_events = [
        event["Properties"]
        for function in _functions(template).values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "Api"
    ]
    paths = template["Resources"]["PaymentApi"]["Properties"]["DefinitionBody"]["paths"]
    for properties in api_events:
        if properties["Path"].startswith("/orders"):
            assert "Auth" not in properties, properties["Path"]
            security = paths[properties["Path"]][properties["Method"].lower()]["security"]
            assert security == {
                "Fn::If": ["ShouldAuthenticateUsers", [{"OrderUsers": []}], [{"AWS_IAM": []}]]
            }
            continue
        expected = None if properties["Path"] == "/payments/notify" else "AWS_IAM"
        assert properties.get("Auth", {}).get("Authorizer") == expected, properties["Path"]
    # And the tooling (the local stack's authorizer) reads the same: every route authenticated by API
    # Gateway but the signature-checked callback
    from payment_outbox_dev.checks.template import api_routes

    authorized = {(r.method, r.path): r.authorized for r in api_routes(template)}
    assert {route for route, yes in authorized.items() if not yes} == {("POST", "/payments/notify")}
    assert authorized[("POST", "/orders")] and authorized[("GET", "/orders/{orderId}")]


def test_the_deployed_schema_revision_is_the_newest_migration(template: dict[str, Any]) -> None:
    # Given the migrations shipped in the layer
    from alembic.script import ScriptDirectory

    from payment_outbox.adapters.db.migration import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    # Then the deploy-time migration resource names it, so a deploy with a new migration runs it
    migration = template["Resources"]["SchemaMigration"]
    assert migration["Properties"]["SchemaRevision"] == head
    # And every function that uses the database waits for it
    for name, function in _functions(template).items():
        uses_database = "DB_HOST" in function["Properties"].get("Environment", {}).get("Variables", {})
        if uses_database and name != "SchemaMigratorFunction":
            assert function.get("DependsOn") == "SchemaMigration", name


def test_no_secret_is_a_parameter_default_or_an_environment_value(template: dict[str, Any]) -> None:
    # Given every parameter and every function environment variable
    for name, parameter in template["Parameters"].items():
        # Then no parameter that names a secret has a value other than empty by default
        # (VpcEndpointSecretsManager names the service's endpoint, not a secret)
        if ("Secret" in name or "Password" in name) and not name.startswith("VpcEndpoint"):
            assert parameter.get("Default", "") == "", name
            assert "Arn" in name, f"{name}: secrets are passed by ARN, never by value"
    for name, function in _functions(template).items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        assert not any(
            "PASSWORD" in key or key == "WEBHOOK_SECRET" or key == "DATABASE_URL" for key in variables
        ), name


_NO_VALUE = {"Ref": "AWS::NoValue"}


def _in_mode(value: Any, ordered: bool) -> Any:
    """``value`` with every ``!If [ShouldDeliverInOrder, a, b]`` decided and AWS::NoValue dropped."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"} and value["Fn::If"][0] == "ShouldDeliverInOrder":
            return _in_mode(value["Fn::If"][1 if ordered else 2], ordered)
        decided = {key: _in_mode(v, ordered) for key, v in value.items()}
        return {key: v for key, v in decided.items() if v != _NO_VALUE}
    if isinstance(value, list):
        return [_in_mode(v, ordered) for v in value]
    return value


@pytest.mark.parametrize("ordered", [False, True], ids=["standard", "ordered"])
def test_ordered_delivery_switches_the_topic_queues_and_dlqs_to_fifo_and_tells_the_relay(
    template: dict[str, Any], ordered: bool
) -> None:
    # Given the OrderedDelivery parameter (standard by default) and the condition it drives
    assert template["Parameters"]["OrderedDelivery"]["Default"] == "false"
    assert template["Conditions"]["ShouldDeliverInOrder"] == {
        "Fn::Equals": [{"Ref": "OrderedDelivery"}, "true"]
    }
    # When the messaging resources and the relay's and API's environments are read in this mode
    topic = _in_mode(template["Resources"]["OrderEventsTopic"]["Properties"], ordered)
    queues = {
        name: _in_mode(queue["Properties"], ordered)
        for name, queue in _resources_of_type(template, "AWS::SQS::Queue").items()
    }
    functions = _functions(template)
    ordered_setting = {
        name: _in_mode(functions[name]["Properties"]["Environment"]["Variables"], ordered)[
            "OUTBOX_ORDERED_BY_KEY"
        ]
        for name in ("OutboxRelayFunction", "PaymentApiFunction")
    }
    fifo_keys = {"FifoTopic", "FifoQueue", "ContentBasedDeduplication", "TopicName", "QueueName"}

    # Then in ordered mode the topic and every queue and DLQ are FIFO, named .fifo, deduplicated on
    # the id the publisher gives (never on content), with throughput scoped per message group
    assert set(queues) == {
        "PointsQueue",
        "PointsDeadLetterQueue",
        "PointsSubscriptionDeadLetterQueue",
        "SmsQueue",
        "SmsDeadLetterQueue",
        "SmsSubscriptionDeadLetterQueue",
    }
    if ordered:
        assert (topic["FifoTopic"], topic["ContentBasedDeduplication"]) == (True, False)
        assert topic["FifoThroughputScope"] == "MessageGroup"
        assert topic["TopicName"]["Fn::Sub"].endswith(".fifo")
        for queue in queues.values():
            assert (queue["FifoQueue"], queue["ContentBasedDeduplication"]) == (True, False)
            assert (queue["DeduplicationScope"], queue["FifoThroughputLimit"]) == (
                "messageGroup",
                "perMessageGroupId",
            )
            assert queue["QueueName"]["Fn::Sub"].startswith("${AWS::StackName}-")
            assert queue["QueueName"]["Fn::Sub"].endswith(".fifo")
        assert len({queue["QueueName"]["Fn::Sub"] for queue in queues.values()}) == 6
    # And in standard mode none of it is set: standard topic and queues with generated names
    else:
        assert not fifo_keys & set(topic)
        assert all(not fifo_keys & set(queue) for queue in queues.values())
    # And the relay and the payment API hold a stream's later messages exactly in ordered mode
    assert ordered_setting == dict.fromkeys(ordered_setting, "true" if ordered else "false")
