"""The `payment-outbox` command line and the local stack's pure parts: argument parsing, callback signing,
function names, what the stack derives from template.yaml, API Gateway's routing answers, the local
SNS faults and the alarm evaluation. Nothing here starts a server or calls AWS."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from payment_outbox.domain.signature import verify
from payment_outbox.errors import SignatureRejected
from payment_outbox_dev import cli
from payment_outbox_dev.checks.template import (
    alarms,
    api_routes,
    find_function,
    load_template,
    schedules,
    sqs_event_sources,
)
from payment_outbox_dev.local import snapshot
from payment_outbox_dev.local.emulator import FaultInjectingApp, Faults, SnsCall, parse_sns_call
from payment_outbox_dev.local.harness import MISSING_ROUTE_BODY, LocalFunctions, api_gateway_event
from payment_outbox_dev.local.observe import MetricsBoard
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET, StackConfig
from tests.support import ROOT

pytestmark = pytest.mark.unit

TEMPLATE = load_template(ROOT / "template.yaml")


# --- arguments ----------------------------------------------------------------------------------------


def test_local_defaults_are_the_documented_ports_interval_and_data_dir() -> None:
    # Given no options, When `local` is parsed
    args = cli.build_parser().parse_args(["local"])

    # Then the API is on 3000, the emulator on 5000, time at 1/15, 2 workers, data in .local-stack
    assert (args.api_port, args.emulator_port, args.host) == (3000, 5000, "127.0.0.1")
    assert args.time_scale == pytest.approx(1 / 15)
    assert args.workers == 2
    assert cli.build_parser().parse_args(["local", "--time-scale", "1/30"]).time_scale == pytest.approx(
        1 / 30
    )
    assert args.data_dir == Path(".local-stack")
    assert args.verbose is False


def test_up_is_an_alias_of_local_and_takes_the_same_options() -> None:
    # Given the alias with options, When parsed
    args = cli.build_parser().parse_args(
        [
            "up",
            "--api-port",
            "3101",
            "--emulator-port",
            "5101",
            "--parameter-overrides",
            "OutboxMaxAttempts=3",
        ]
    )

    # Then they reach the same settings
    assert (args.api_port, args.emulator_port) == (3101, 5101)
    assert dict(args.parameter_overrides) == {"OutboxMaxAttempts": "3"}


def test_a_parameter_override_without_a_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # Given an override that is not Name=Value, When parsed, Then argparse exits with usage error
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["local", "--parameter-overrides", "OutboxMaxAttempts"])
    assert exited.value.code == 2
    assert "Name=Value" in capsys.readouterr().err


def test_the_sqlite_file_lives_in_the_data_dir_unless_a_database_url_is_given(tmp_path: Path) -> None:
    # Given a data dir, Then SQLite is in it; Given a URL, Then the URL is used
    assert StackConfig(ROOT, data_dir=tmp_path).resolved_database_url() == (
        f"sqlite:///{tmp_path.resolve()}/payment_outbox.db"
    )
    url = "mysql+pymysql://u:p@db:3306/x"
    assert StackConfig(ROOT, data_dir=tmp_path, database_url=url).resolved_database_url() == url


# --- sign ---------------------------------------------------------------------------------------------


def test_sign_prints_a_header_the_payment_api_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a callback body
    body = '{"orderNo": "PO1", "transactionId": "t1", "amount": "1.00", "paidAt": "2026-11-27T10:15:00Z"}'

    # When it is signed with the local stack's default secret
    assert cli.main(["sign", "--body", body, "--secret", LOCAL_WEBHOOK_SECRET]) == 0
    line = capsys.readouterr().out.strip()

    # Then the printed header verifies for that body and not for another
    name, _, value = line.partition(": ")
    assert name == "X-Signature"
    verify(value, body.encode(), [LOCAL_WEBHOOK_SECRET], now=time.time())
    with pytest.raises(SignatureRejected):
        verify(value, body.encode() + b" ", [LOCAL_WEBHOOK_SECRET], now=time.time())


def test_sign_reads_the_exact_bytes_of_stdin_and_honours_secret_and_timestamp(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a body on stdin (with its trailing newline) and an explicit secret and time
    raw = b'{"orderNo": "PO2"}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))

    # When signed with --value-only
    assert cli.main(["sign", "--secret", "s3cret", "--timestamp", "1795774500", "--value-only"]) == 0
    value = capsys.readouterr().out.strip()

    # Then the value is for those bytes, newline included, at that time
    assert value.startswith("t=1795774500,v1=")
    verify(value, raw, ["s3cret"], now=1795774500)
    with pytest.raises(SignatureRejected):
        verify(value, raw.rstrip(), ["s3cret"], now=1795774500)


def test_sign_uses_the_webhook_secret_of_the_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given WEBHOOK_SECRET set, When signing without --secret
    monkeypatch.setenv("WEBHOOK_SECRET", "from-env")
    assert cli.main(["sign", "--body", "{}", "--value-only"]) == 0

    # Then the environment's secret signed it
    verify(capsys.readouterr().out.strip(), b"{}", ["from-env"], now=time.time())


# --- migrate ------------------------------------------------------------------------------------------


def test_migrate_brings_the_configured_database_to_the_newest_schema_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given DATABASE_URL naming an empty SQLite file
    from sqlalchemy import create_engine, inspect

    from payment_outbox.adapters.db.migration import alembic_config

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)

    # When `migrate` runs, twice (the second run has nothing to do)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0

    # Then the tables exist and both runs report the head revision
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_engine(url)
    assert {"orders", "message_record", "outbox_audit"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    assert capsys.readouterr().out.splitlines() == [f"schema is at {head} on {url}"] * 2


# --- function names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["PaymentApiFunction", "paymentapifunction", "PaymentApi", "payment_api", "payment-api", "PAYMENT_API"],
)
def test_a_function_is_found_by_its_logical_id_or_a_short_form(name: str) -> None:
    assert find_function(TEMPLATE, name).logical_id == "PaymentApiFunction"


def test_an_unknown_function_is_refused_with_the_known_ones_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a name no function has, When invoked
    code = cli.main(["--root", str(ROOT), "invoke", "NoSuchFunction"])

    # Then it exits 2 and names the template's functions
    assert code == 2
    err = capsys.readouterr().err
    assert "NoSuchFunction" in err and "PaymentApiFunction" in err


# --- what the stack derives from the template ---------------------------------------------------------


def test_queue_pollers_come_from_the_sqs_event_sources_of_the_template() -> None:
    # Given the template, When its SQS event sources are read
    sources = {(s.queue, s.function): s for s in sqs_event_sources(TEMPLATE)}

    # Then each consumer polls its queue, with its batch size and partial batch failures
    assert set(sources) >= {("PointsQueue", "PointsConsumerFunction"), ("SmsQueue", "SmsConsumerFunction")}
    for source in sources.values():
        events = TEMPLATE["Resources"][source.function]["Properties"]["Events"]
        declared = next(e["Properties"] for e in events.values() if e["Type"] == "SQS")
        assert source.batch_size == declared.get("BatchSize", 10)
        assert source.reports_item_failures == (
            "ReportBatchItemFailures" in declared.get("FunctionResponseTypes", [])
        )


def test_the_relay_schedule_and_the_failed_messages_alarm_come_from_the_template() -> None:
    relay = [s for s in schedules(TEMPLATE) if s.function == "OutboxRelayFunction"]
    assert [(s.expression, s.enabled) for s in relay] == [("rate(1 minute)", True)]
    alarm = next(a for a in alarms(TEMPLATE) if a.metric == "MessagesFailed")
    assert (alarm.namespace, alarm.dimensions, alarm.statistic) == (
        "PaymentOutbox",
        {"service": "outbox-relay"},
        "Sum",
    )


# --- API Gateway's answers ----------------------------------------------------------------------------


def test_a_path_no_route_has_is_404_and_a_known_path_with_another_method_is_405() -> None:
    # Given the template's functions (nothing is invoked for a route that does not match)
    functions = LocalFunctions(ROOT, TEMPLATE)

    # When unmatched requests are resolved
    unknown = functions.api_result("GET", "/nope")
    wrong_method = functions.api_result("DELETE", "/orders/7")

    # Then API Gateway's missing-route answers come back
    assert (unknown["statusCode"], json.loads(unknown["body"])) == (404, MISSING_ROUTE_BODY)
    assert (wrong_method["statusCode"], json.loads(wrong_method["body"])) == (405, MISSING_ROUTE_BODY)
    assert wrong_method["headers"]["Allow"] == "GET"
    assert {r.path for r in functions.routes} == {r.path for r in api_routes(TEMPLATE)}


def test_an_http_request_becomes_the_proxy_event_with_its_headers_and_query() -> None:
    # Given an HTTP request with its own content type and a repeated query parameter
    event = api_gateway_event(
        "get",
        "/orders/7",
        "/orders/{orderId}",
        {"orderId": "7"},
        None,
        {"content-type": "text/plain", "X-Signature": "t=1,v1=ab"},
        query={"a": ["1", "2"]},
        default_content_type=False,
    )

    # Then the event carries them as API Gateway would
    assert event["httpMethod"] == "GET" and event["resource"] == "/orders/{orderId}"
    assert event["pathParameters"] == {"orderId": "7"}
    assert event["headers"] == {"content-type": "text/plain", "X-Signature": "t=1,v1=ab"}
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}


# --- local SNS faults ---------------------------------------------------------------------------------


def _publish_batch_body(topics: list[str]) -> bytes:
    form: dict[str, str] = {"Action": "PublishBatch", "TopicArn": "arn:aws:sns:us-east-1:123456789012:Events"}
    for n, topic in enumerate(topics, start=1):
        prefix = f"PublishBatchRequestEntries.member.{n}"
        form[f"{prefix}.Id"] = str(n - 1)
        form[f"{prefix}.Message"] = "{}"
        form[f"{prefix}.MessageAttributes.entry.1.Name"] = "topic"
        form[f"{prefix}.MessageAttributes.entry.1.Value.DataType"] = "String"
        form[f"{prefix}.MessageAttributes.entry.1.Value.StringValue"] = topic
    return urlencode(form).encode()


def _call(app: FaultInjectingApp, body: bytes) -> tuple[str, bytes]:
    environ = {
        "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=x/20261127/us-east-1/sns/aws4_request",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    chunks = app(environ, lambda line, headers, *rest: status.append(line))
    return status[0], b"".join(chunks)


class _Moto:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"<ok/>"]


def test_a_publish_batch_request_is_read_with_each_message_topic() -> None:
    call = parse_sns_call(_publish_batch_body(["topic.points", "topic.sms"]))
    assert call is not None
    assert (call.action, call.topic_name, call.topics) == (
        "PublishBatch",
        "Events",
        ("topic.points", "topic.sms"),
    )
    assert parse_sns_call(b"Action=ListTopics") is None


def test_without_a_fault_the_emulator_gets_the_request_untouched_and_it_is_reported() -> None:
    moto, seen = _Moto(), []
    app = FaultInjectingApp(moto, Faults(), seen.append)
    body = _publish_batch_body(["topic.points"])

    status, _ = _call(app, body)

    assert status.startswith("200")
    assert moto.bodies == [body]
    assert seen == [
        SnsCall("PublishBatch", "arn:aws:sns:us-east-1:123456789012:Events", None, ("topic.points",), 200)
    ]


def test_an_outage_refuses_the_publish_before_the_emulator_sees_it() -> None:
    moto, faults = _Moto(), Faults()
    faults.set_sns_publish("outage")

    status, payload = _call(FaultInjectingApp(moto, faults), _publish_batch_body(["topic.points"]))

    assert status.startswith("503")
    assert b"<Code>ServiceUnavailable</Code>" in payload
    assert moto.bodies == []


def test_reject_fails_every_entry_of_the_batch_as_a_sender_fault() -> None:
    moto, faults = _Moto(), Faults()
    faults.set_sns_publish("reject")

    status, payload = _call(
        FaultInjectingApp(moto, faults), _publish_batch_body(["topic.points", "topic.sms"])
    )

    assert status.startswith("200")
    assert payload.count(b"<Code>InvalidParameter</Code>") == 2
    assert b"<Id>0</Id>" in payload and b"<Id>1</Id>" in payload
    assert b"<SenderFault>true</SenderFault>" in payload
    assert moto.bodies == []


def test_sms_to_a_phone_is_never_affected_by_a_topic_fault() -> None:
    moto, faults = _Moto(), Faults()
    faults.set_sns_publish("outage")
    body = urlencode({"Action": "Publish", "PhoneNumber": "+8613812345678", "Message": "hi"}).encode()

    status, _ = _call(FaultInjectingApp(moto, faults), body)

    assert status.startswith("200") and moto.bodies == [body]


def test_an_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SNS fault"):
        Faults().set_sns_publish("meltdown")


# --- alarms, snapshots --------------------------------------------------------------------------------


def _emf(metric: str, value: float, service: str = "outbox-relay") -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": 0,
            "CloudWatchMetrics": [
                {
                    "Namespace": "PaymentOutbox",
                    "Dimensions": [["service"]],
                    "Metrics": [{"Name": metric, "Unit": "Count"}],
                }
            ],
        },
        "service": service,
        metric: [value],
    }


def test_the_failed_messages_alarm_fires_on_the_relays_metric_and_clears_after_its_period() -> None:
    # Given the template's alarms
    board = MetricsBoard(alarms(TEMPLATE))

    # When the relay reports a failed message (and another service's metric of the same name does not count)
    board.record(_emf("MessagesFailed", 5, service="someone-else"), now=100.0)
    assert board.evaluate(now=100.0) == []
    board.record(_emf("MessagesFailed", 1), now=101.0)
    fired = board.evaluate(now=101.0)

    # Then MessagesFailedAlarm goes to ALARM, and back to OK once the sample leaves its period
    assert [(spec.logical_id, state, value) for spec, state, value in fired] == [
        ("MessagesFailedAlarm", "ALARM", 1.0)
    ]
    assert board.snapshot()["metrics"]["MessagesFailed"] == 6.0  # the total of every EMF line
    cleared = board.evaluate(now=101.0 + 61)
    assert [(spec.logical_id, state) for spec, state, _ in cleared] == [("MessagesFailedAlarm", "OK")]


def test_a_snapshot_keeps_binary_attribute_values_through_json(tmp_path: Path) -> None:
    # Given captured state with a binary DynamoDB value
    state = {
        "version": snapshot.FORMAT_VERSION,
        "dynamodb": {"T": snapshot._encode([{"b": {"B": b"\x00\xff"}}])},
        "sqs": {},
    }

    # When saved and loaded
    snapshot.save(tmp_path / "state.json", state)
    loaded = snapshot.load(tmp_path / "state.json")

    # Then the bytes come back
    assert loaded is not None
    assert snapshot._decode(loaded["dynamodb"]["T"]) == [{"b": {"B": b"\x00\xff"}}]
    assert snapshot.load(tmp_path / "absent.json") is None


def test_faults_are_set_on_the_emulator_from_outside_and_an_outage_then_refuses_publishes() -> None:
    # Given an emulator in a process of its own (the kill chaos run's), healthy
    moto, faults = _Moto(), Faults()
    app = FaultInjectingApp(moto, faults)
    body = json.dumps({"sns": "outage"}).encode()
    environ = {"PATH_INFO": "/_emulator/faults", "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body))}
    status: list[str] = []
    # When an outage is set through its faults path
    answer = b"".join(app({**environ, "wsgi.input": io.BytesIO(body)}, lambda line, *_: status.append(line)))
    # Then it says so, and a publish to the topic is now answered 503 without reaching moto
    assert status[0].startswith("200") and json.loads(answer) == {"sns": "outage"}
    assert _call(app, _publish_batch_body(["topic.points"]))[0].startswith("503")
    assert moto.bodies == []
    # When it is cleared / Then publishes go through again
    clear = json.dumps({"sns": None}).encode()
    app({**environ, "CONTENT_LENGTH": str(len(clear)), "wsgi.input": io.BytesIO(clear)}, lambda *_: None)
    assert _call(app, _publish_batch_body(["topic.points"]))[0].startswith("200")
