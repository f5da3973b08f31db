"""The local stack, live: `payment-outbox local` in a subprocess, driven only over HTTP and the AWS API of
its emulator — and `payment-outbox invoke` for every function with its events/ file.

The stack runs on SQLite in a temporary data directory and on free ports; every wait is a bounded
poll. Subprocesses are stopped (SIGINT, then kill) whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest

from payment_outbox.domain.signature import sign
from payment_outbox_dev import cli
from payment_outbox_dev.checks.template import api_routes, find_function, functions, load_template
from payment_outbox_dev.local.auth import LocalCredentials
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET
from tests.support import ROOT, recent_paid_at

# Not MariaDB: the stack runs on SQLite, as `make local` does by default.
pytestmark = pytest.mark.local_stack

TEMPLATE = load_template(ROOT / "template.yaml")
DEADLINE_SECONDS = 20.0
#: The shortest time scale that keeps the template's orderings (the relay's timeout above its reserve).
TIME_SCALE = "1/15"
START_DEADLINE_SECONDS = 120.0  # worker processes import the handlers: slow on a busy machine
MISSING = {"message": "Missing Authentication Token"}
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], deadline: float = DEADLINE_SECONDS) -> T:
    ends = time.monotonic() + deadline
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > ends:
            raise AssertionError(f"not within {deadline:.0f} s: {what}")
        time.sleep(0.2)


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    api: str
    emulator: str
    log: Path
    data_dir: Path

    def credentials(self) -> LocalCredentials:
        """The stack's local credentials and token key (made at its first start)."""
        return LocalCredentials.load_or_create(self.data_dir)

    def http(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        signed: bool = True,
    ) -> tuple[int, Any]:
        """One request; ``signed``: with SigV4 by the local credentials, as an IAM caller (unless the
        headers carry an Authorization of their own)."""
        data = b"" if body is None else body.encode()
        headers = dict(headers or {})
        if signed and "Authorization" not in headers:
            headers = self.credentials().sign(method, self.api + path, data, headers)
        request = urllib.request.Request(  # noqa: S310 - a local http URL
            self.api + path,
            data=None if body is None else data,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"null")

    def aws(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.emulator, region_name="us-east-1")

    def resources(self) -> dict[str, str]:
        status, state = self.http("GET", "/_local/state")
        assert status == 200, state
        refs: dict[str, str] = state["resources"]
        return refs

    def outbox_of(self, order_no: str) -> list[dict[str, Any]]:
        _, state = self.http("GET", "/_local/state")
        return [row for row in state["outbox"] if row["businessKey"] == order_no]

    def create_order(self, user_id: int, amount: str) -> dict[str, Any]:
        status, order = self.http(
            "POST", "/orders", json.dumps({"userId": user_id, "phone": "+8613812345678", "amount": amount})
        )
        assert status == 201, order
        created: dict[str, Any] = order
        return created

    def pay(self, order: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(
            {
                "orderNo": order["orderNo"],
                "transactionId": f"txn-{order['orderNo']}",
                "amount": order["amount"],
                "currency": order["currency"],
                "paidAt": recent_paid_at(),
            }
        )
        signature = sign(body.encode(), LOCAL_WEBHOOK_SECRET, int(time.time()))
        return self.http("POST", "/payments/notify", body, {"X-Signature": signature})

    def balance(self, user_id: int) -> int:
        item = (
            self.aws("dynamodb")
            .get_item(
                TableName=self.resources()["PointsTable"],
                Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "BALANCE"}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return int(item["balance"]["N"]) if item else 0

    def sms_deliveries(self, message_ids: list[str]) -> list[dict[str, Any]]:
        table = self.resources()["SmsDeliveriesTable"]
        items = self.aws("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
        return [item for item in items if item["messageId"]["S"] in message_ids]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, deadline: float = DEADLINE_SECONDS) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                return None
        return self.process.returncode


def start_stack(data_dir: Path, log: Path, *extra_args: str) -> RunningStack:
    api_port, emulator_port = _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_SECRET", "AWS_ENDPOINT_URL")
    }
    command = [
        sys.executable, "-m", "payment_outbox_dev.cli", "--root", str(ROOT), "local",
        "--api-port", str(api_port), "--emulator-port", str(emulator_port), "--data-dir", str(data_dir),
        "--poll-interval", "0.5", "--time-scale", TIME_SCALE, *extra_args,
    ]  # fmt: skip
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # noqa: S603
    stack = RunningStack(
        process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{emulator_port}", log, data_dir
    )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the stack exited with {process.returncode}:\n{stack.output()}")
        try:
            return stack.http("GET", "/_local/routes", signed=False)[0] == 200
        except OSError:
            return False

    try:
        wait_for("the stack to answer", ready, START_DEADLINE_SECONDS)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("local-stack")
    running = start_stack(folder / "data", folder / "stack.log")
    try:
        yield running
    finally:
        running.stop()


def _user_id() -> int:
    """A user no other test touched, so its balance starts at zero."""
    return 1_000_000 + time.monotonic_ns() % 1_000_000


# --- the paid order, live -----------------------------------------------------------------------------


def test_a_paid_order_over_http_ends_with_points_credited_and_one_sms(stack: RunningStack) -> None:
    # Given an order created over HTTP
    user_id = _user_id()
    order = stack.create_order(user_id, "128.50")

    # When the provider's signed callback arrives
    status, paid = stack.pay(order)

    # Then the order is PAID at once, the relay/consumers credit the points and send one SMS
    assert status == 200, paid
    assert paid["status"] == "PAID"
    wait_for("points credited", lambda: stack.balance(user_id) == int(Decimal("128.50")))
    rows = stack.outbox_of(order["orderNo"])
    assert sorted(row["topic"] for row in rows) == ["topic.points", "topic.sms"]
    sms_ids = [row["messageId"] for row in rows if row["topic"] == "topic.sms"]
    deliveries = wait_for("the SMS delivery record", lambda: stack.sms_deliveries(sms_ids))
    assert len(deliveries) == 1
    assert deliveries[0]["maskedPhone"]["S"] == "+86*******5678"
    status, fetched = stack.http("GET", f"/orders/{order['orderId']}")
    assert (status, fetched["status"]) == (200, "PAID")


def test_the_stack_runs_ordered_delivery_on_fifo_queues(tmp_path: Path) -> None:
    # Given the stack started with OrderedDelivery=true
    stack = start_stack(
        tmp_path / "data", tmp_path / "stack.log", "--parameter-overrides", "OrderedDelivery=true"
    )
    try:
        # Then the emulator holds the FIFO topic and queues of that mode
        resources = stack.resources()
        assert resources["OrderEventsTopic"].endswith(".fifo")
        assert resources["PointsQueue"].endswith(".fifo")
        # When an order is paid over HTTP
        user_id = _user_id()
        order = stack.create_order(user_id, "42.00")
        status, _ = stack.pay(order)
        assert status == 200
        # Then its points are credited and its SMS recorded, through the FIFO queues
        wait_for("the points", lambda: stack.balance(user_id) == 42 or None)
        message_ids = [row["messageId"] for row in stack.outbox_of(order["orderNo"])]
        wait_for("the SMS", lambda: stack.sms_deliveries(message_ids) or None)
    finally:
        stack.stop()


def test_a_duplicate_callback_answers_the_same_order_and_adds_no_message(stack: RunningStack) -> None:
    # Given a paid order
    order = stack.create_order(_user_id(), "10.00")
    assert stack.pay(order)[0] == 200

    # When the same callback arrives again
    status, again = stack.pay(order)

    # Then it answers the paid order and the outbox still holds the order's two messages only
    assert (status, again["status"]) == (200, "PAID")
    assert len(stack.outbox_of(order["orderNo"])) == 2


def test_a_record_its_consumer_fails_is_received_again_and_finally_lands_in_the_dlq(
    stack: RunningStack,
) -> None:
    # Given a message on the topic its points consumer cannot process
    resources = stack.resources()
    poison = f"not an envelope {time.monotonic_ns()}"
    stack.aws("sns").publish(
        TopicArn=resources["OrderEventsTopic"],
        Message=poison,
        MessageAttributes={"topic": {"DataType": "String", "StringValue": "topic.points"}},
    )
    max_receives = TEMPLATE["Resources"]["PointsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    sqs = stack.aws("sqs")

    # When the consumer fails it on every receive
    def dead_lettered() -> dict[str, Any] | None:
        messages = sqs.receive_message(
            QueueUrl=resources["PointsDeadLetterQueue"], AttributeNames=["All"], MaxNumberOfMessages=10
        ).get("Messages", [])
        return next((m for m in messages if m["Body"] == poison), None)

    # (each receive comes a visibility timeout after the last: the template's, time-scaled)
    visibility = stack.http("GET", "/_local/workers")[1]["timing"]["visibilityTimeouts"]["PointsQueue"]
    message = wait_for(
        "the poison message in the points DLQ", dead_lettered, deadline=max_receives * visibility + 30
    )

    # Then it was received maxReceiveCount times from the queue before the redrive moved it
    assert int(message["Attributes"]["ApproximateReceiveCount"]) > max_receives
    sqs.delete_message(QueueUrl=resources["PointsDeadLetterQueue"], ReceiptHandle=message["ReceiptHandle"])
    assert "retry" in stack.output() and "PointsQueue" in stack.output()


# --- the routes: exactly the template's ---------------------------------------------------------------


def test_the_stack_serves_exactly_the_routes_of_the_template(stack: RunningStack) -> None:
    # Given the template's API routes
    expected = {(r.method, r.path, r.function) for r in api_routes(TEMPLATE)}

    # When the stack is asked for its route table
    status, table = stack.http("GET", "/_local/routes")

    # Then it is the template's, no more, no less
    assert status == 200
    assert {(r["method"], r["path"], r["function"]) for r in table["routes"]} == expected


def test_every_template_route_reaches_its_function_and_nothing_else_is_served(stack: RunningStack) -> None:
    routes = api_routes(TEMPLATE)
    for route in routes:
        # Given a route of the template, When it is requested with its method
        path = route.path.replace("{orderId}", "1").replace("{messageId}", "m-1")
        status, body = stack.http(route.method, path, "{}" if route.method == "POST" else None)
        # Then its function answers (not API Gateway's missing-route answer)
        assert body != MISSING, (route, status)
        assert status < 500, (route, status, body)

    # And a known path with another method, or an unknown path, is refused like API Gateway does
    templated = {r.path for r in routes}
    assert stack.http("DELETE", "/orders") == (405, MISSING)
    assert stack.http("GET", "/payments/notify") == (405, MISSING)
    assert stack.http("PUT", "/orders/1") == (405, MISSING)
    for unknown in ("/", "/nope", "/orders/1/extra", "/payments", "/dev/orders"):
        assert unknown not in templated
        assert stack.http("GET", unknown) == (404, MISSING), unknown


def test_every_authorised_route_refuses_a_request_without_valid_credentials(stack: RunningStack) -> None:
    stranger = LocalCredentials.load_or_create(stack.data_dir / "stranger")
    for route in api_routes(TEMPLATE):
        if not route.authorized:
            continue
        # Given an order or admin route of the template (iam mode: SigV4 for every one)
        path = route.path.replace("{orderId}", "1").replace("{messageId}", "m-1")
        body = "{}" if route.method == "POST" else None
        data = (body or "").encode()
        # When it is requested with no credentials, other credentials, or a signature of another body
        unsigned = stack.http(route.method, path, body, signed=False)
        foreign = stack.http(route.method, path, body, stranger.sign(route.method, stack.api + path, data))
        altered = stack.credentials().sign(route.method, stack.api + path, b'{"x": 1}')
        tampered = stack.http(route.method, path, body, altered) if body else (403, None)
        # Then API Gateway's own 403 answers, and the function never runs
        assert unsigned == (403, MISSING), (route, unsigned)
        assert foreign == (403, {"message": "The security token included in the request is invalid."}), route
        assert tampered[0] == 403, (route, tampered)


def test_an_unsigned_callback_is_refused_by_the_function_not_by_the_stack(stack: RunningStack) -> None:
    # Given a callback without its signature header
    body = json.dumps(
        {"orderNo": "PO1", "transactionId": "t", "amount": "1.00", "paidAt": "2026-11-27T10:15:00Z"}
    )

    # When it is posted
    status, answer = stack.http("POST", "/payments/notify", body)

    # Then the payment API's own error model answers 401
    assert status == 401
    assert answer["error"]["code"]


# --- restart ------------------------------------------------------------------------------------------


def test_committed_state_survives_a_stop_and_a_restart_with_the_same_data_dir(tmp_path: Path) -> None:
    # Given a stack in which an order was paid and its points credited
    data_dir, log = tmp_path / "data", tmp_path / "stack.log"
    first = start_stack(data_dir, log)
    user_id = _user_id()
    try:
        order = first.create_order(user_id, "42.90")
        assert first.pay(order)[0] == 200
        wait_for("points credited", lambda: first.balance(user_id) == 42)
        sms_ids = [r["messageId"] for r in first.outbox_of(order["orderNo"]) if r["topic"] == "topic.sms"]
        wait_for("the SMS delivery record", lambda: first.sms_deliveries(sms_ids))
    finally:
        # When it is stopped with Ctrl-C
        code = first.stop()
    assert code == 0, first.output()
    assert "stopped" in first.output()

    # And started again on the same data directory (new ports, a new emulator process)
    second = start_stack(data_dir, log)
    try:
        # Then the order is still PAID, the balance kept, the SMS record kept
        status, fetched = second.http("GET", f"/orders/{order['orderId']}")
        assert (status, fetched["status"], fetched["orderNo"]) == (200, "PAID", order["orderNo"])
        assert second.balance(user_id) == 42
        assert len(second.sms_deliveries(sms_ids)) == 1
        assert len(second.outbox_of(order["orderNo"])) == 2
    finally:
        assert second.stop() == 0, second.output()


# --- invoke -------------------------------------------------------------------------------------------


def _events_of(logical_id: str) -> list[Path]:
    spec = find_function(TEMPLATE, logical_id)
    folder = spec.code_uri.rstrip("/").rsplit("/", 1)[-1]
    return sorted((ROOT / "events").glob(f"{folder}_*.json"))


INVOCATIONS = [
    (spec.logical_id, event) for spec in functions(TEMPLATE) for event in _events_of(spec.logical_id)
]


def test_every_function_of_the_template_has_an_event_to_invoke() -> None:
    # Given the template's functions, Then each named in this test has its events/ file
    invoked = {logical_id for logical_id, _ in INVOCATIONS}
    assert {
        "PaymentApiFunction",
        "OutboxRelayFunction",
        "PointsConsumerFunction",
        "SmsConsumerFunction",
    } <= invoked


def test_every_file_in_events_is_invoked() -> None:
    # Every events/ file belongs to a function of the template, so the test below runs each one
    assert sorted(event for _, event in INVOCATIONS) == sorted((ROOT / "events").glob("*.json"))


SUCCESS_STATUS = {"payment_api_create_order.json": 201}


@pytest.mark.parametrize(("logical_id", "event_file"), INVOCATIONS, ids=lambda v: getattr(v, "name", v))
def test_invoke_runs_the_function_with_its_event(
    logical_id: str, event_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the shipped event file, as it is (a new user's first command)
    event = json.loads(event_file.read_text())

    # When it is invoked like `sam local invoke`, on a fresh database and emulator
    code = cli.main(["--root", str(ROOT), "invoke", logical_id, "--event", str(event_file)])

    # Then it succeeds: the handler's response is printed, a success for its event source
    captured = capsys.readouterr()
    assert code == 0, captured.err
    response = json.loads(captured.out)
    if "httpMethod" in event:
        # (the callback signed at invoke time; the orders it names seeded on the fresh database)
        assert response["statusCode"] == SUCCESS_STATUS.get(event_file.name, 200), response
        assert isinstance(json.loads(response["body"]), dict)
    elif "Records" in event:
        assert response == {"batchItemFailures": []}
    else:
        assert isinstance(response, dict)
    if "ResponseURL" in event:
        # (answered to invoke's loopback stand-in, never the recorded S3 URL)
        assert "CloudFormation stand-in received SUCCESS" in captured.err, captured.err
    if logical_id == "OutboxRelayFunction":
        assert response["claimed"] == 0


def test_invoke_says_what_it_prepared_and_can_be_told_not_to(capsys: pytest.CaptureFixture[str]) -> None:
    notify = str(ROOT / "events" / "payment_api_notify.json")
    get_order = str(ROOT / "events" / "payment_api_get_order.json")

    # When the callback event is invoked as shipped, then with --no-sign
    assert cli.main(["--root", str(ROOT), "invoke", "payment_api", "--event", notify]) == 0
    signed = capsys.readouterr()
    assert cli.main(["--root", str(ROOT), "invoke", "payment_api", "--event", notify, "--no-sign"]) == 0
    unsigned = capsys.readouterr()

    # Then the first was signed now (and says so) and paid; the second kept its stale signature: 401
    assert "callback signed now" in signed.err and json.loads(signed.out)["statusCode"] == 200
    assert json.loads(unsigned.out)["statusCode"] == 401

    # When an order event runs on an empty database (--no-seed)
    assert cli.main(["--root", str(ROOT), "invoke", "payment_api", "--event", get_order, "--no-seed"]) == 0
    # Then it is 404, and the seeded run said which order it seeded
    assert json.loads(capsys.readouterr().out)["statusCode"] == 404
    assert "seeded with order 1 (PO20261127000001" in signed.err


def test_the_installed_console_script_invokes_by_short_name(tmp_path: Path) -> None:
    # Given the console script installed with the package
    script = Path(sys.executable).parent / "payment-outbox"
    assert script.is_file()

    # When a function is invoked by its folder name
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(  # noqa: S603
        [str(script), "invoke", "payment_api", "--event", str(ROOT / "events/payment_api_create_order.json")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False,
    )  # fmt: skip

    # Then it answers 201 on stdout and its logs went to stderr
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["statusCode"] == 201
    assert "PaymentApiFunction returned" in result.stderr


# --- HTTP front: 100-continue, clients that go away, why a record failed -------------------------------


def _raw(stack: RunningStack) -> socket.socket:
    host, port = stack.api.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_expect_100_continue_is_answered_before_the_body_is_sent(stack: RunningStack) -> None:
    # Given a client that announces a body and waits for the go-ahead, as curl does for large bodies
    body = json.dumps({"userId": _user_id(), "phone": "+8613812345678", "amount": "3.00"}).encode()
    signed = stack.credentials().sign("POST", "http://127.0.0.1/orders", body)
    with _raw(stack) as client:
        client.sendall(
            b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-Amz-Date: {signed['X-Amz-Date']}\r\nAuthorization: {signed['Authorization']}\r\n".encode()
            + b"Expect: 100-continue\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        # When it waits for the interim answer, Then 100 Continue comes at once
        interim = client.recv(64)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        # And the body then gets the function's answer
        client.sendall(body)
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201"), answer


def test_a_client_that_disconnects_mid_request_prints_no_traceback(stack: RunningStack) -> None:
    # Given clients that go away: one mid-body, one right after its headers, one resetting the connection
    for partial in (
        b'POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{"userId": 1',
        b"GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ):
        with _raw(stack) as client:
            client.sendall(partial)
    with _raw(stack) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.sendall(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")

    # When the stack goes on serving
    assert stack.http("GET", "/_local/routes")[0] == 200

    # Then its output holds no traceback
    time.sleep(0.5)
    assert "Traceback" not in stack.output()


def test_a_retry_line_names_the_error_that_failed_the_record(stack: RunningStack) -> None:
    # Given, on the topic, a message the SMS consumer cannot parse and an envelope whose SMS payload
    # it refuses
    resources = stack.resources()
    poison = f"not json either {time.monotonic_ns()}"
    envelope_id = f"retry-line-{time.monotonic_ns()}"
    envelope = {
        "messageId": envelope_id,
        "topic": "topic.sms",
        "businessKey": "ORD-RETRY-LINE",
        "businessType": "ORDER_PAID",
        "occurredAt": "2026-01-01T00:00:00Z",
        "payload": {"templateId": "ORDER_PAID"},
    }
    for body in (poison, json.dumps(envelope)):
        stack.aws("sns").publish(
            TopicArn=resources["OrderEventsTopic"],
            Message=body,
            MessageAttributes={"topic": {"DataType": "String", "StringValue": "topic.sms"}},
        )

    # When the consumer fails them, Then each one's retry line names its own error: class and message
    def retry_line(record: str, error: str) -> Callable[[], str | None]:
        def probe() -> str | None:
            lines = stack.output().splitlines()
            return next(
                (
                    line
                    for line in lines
                    if "SmsQueue" in line and "failed (receive" in line and record in line and error in line
                ),
                None,
            )

        return probe

    poison_line = wait_for(
        "the poison message's retry line naming its error",
        retry_line("(not an envelope)", "InvalidEnvelope: not a valid envelope"),
    )
    envelope_line = wait_for(
        "the envelope's retry line naming its error",
        retry_line(envelope_id, f"InvalidEnvelope: message {envelope_id}: payload is not a valid SmsPayload"),
    )
    assert "reported failed by the function" not in poison_line + envelope_line


# --- time: the template's orderings, on the running stack -----------------------------------------------


def test_the_running_stack_keeps_every_ordering_of_the_template(stack: RunningStack) -> None:
    from payment_outbox_dev.arguments import positive_fraction
    from payment_outbox_dev.local.timing import scaled_timing

    # Given the timing derived from the template at the stack's time scale
    expected = scaled_timing(TEMPLATE, positive_fraction(TIME_SCALE))
    assert expected.violations() == []

    # When the running stack is asked for its effective timing
    status, answer = stack.http("GET", "/_local/workers")

    # Then it is that timing, and the emulator's polled queues really have its visibility timeouts
    assert status == 200
    assert answer["timing"] == json.loads(json.dumps(expected.describe()))
    resources = stack.resources()
    for queue, seconds in expected.visibilities.items():
        attributes = stack.aws("sqs").get_queue_attributes(
            QueueUrl=resources[queue], AttributeNames=["VisibilityTimeout", "MessageRetentionPeriod"]
        )["Attributes"]
        assert attributes["VisibilityTimeout"] == str(seconds), queue
    # And every function the template invokes runs in workers of its own
    functions_with_workers = {w["function"] for w in answer["workers"] if w["alive"]}
    assert {r.function for r in api_routes(TEMPLATE)} <= functions_with_workers
    assert {"PointsConsumerFunction", "SmsConsumerFunction", "OutboxRelayFunction"} <= functions_with_workers


def test_the_in_progress_window_is_the_consumers_time_scaled_timeout(stack: RunningStack) -> None:
    from payment_outbox_dev.arguments import positive_fraction
    from payment_outbox_dev.local.timing import scaled_timing

    # Given a paid order whose points message was consumed
    user_id = _user_id()
    order = stack.create_order(user_id, "7.00")
    assert stack.pay(order)[0] == 200
    wait_for("points credited", lambda: stack.balance(user_id) == 7)
    points_id = next(
        r["messageId"] for r in stack.outbox_of(order["orderNo"]) if r["topic"] == "topic.points"
    )

    # When its idempotency record is read
    items = stack.aws("dynamodb").scan(TableName=stack.resources()["IdempotencyTable"], ConsistentRead=True)
    record = next(i for i in items["Items"] if points_id in json.dumps(i))

    # Then the INPROGRESS lock it held lasted at most the consumer's time-scaled timeout (the Lambda
    # context's remaining time), not the template's 30 s: the lock ends long before a redelivery
    timing = scaled_timing(TEMPLATE, positive_fraction(TIME_SCALE))
    ttl = 86_400  # IDEMPOTENCY_TTL_SECONDS' default: the completed record's expiry is completion + ttl
    lock_ends = int(record["in_progress_expiration"]["N"]) / 1000
    completed = int(record["expiration"]["N"]) - ttl
    window = timing.in_progress_window("PointsConsumerFunction")
    assert lock_ends - completed <= window + 1.0  # whole seconds in "expiration"
    assert window < timing.visibilities["PointsQueue"]


# --- one trace, and the page to try the API -----------------------------------------------------------


def test_the_callbacks_correlation_id_is_on_both_consumers_log_lines_in_the_orders_trace(
    stack: RunningStack,
) -> None:
    # Given an order paid by a callback that carries a W3C traceparent
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    user = _user_id()
    order = stack.create_order(user, "12.00")
    body = json.dumps(
        {
            "orderNo": order["orderNo"],
            "transactionId": f"txn-{order['orderNo']}",
            "amount": order["amount"],
            "currency": order["currency"],
            "paidAt": recent_paid_at(),
        }
    )
    headers = {
        "X-Signature": sign(body.encode(), LOCAL_WEBHOOK_SECRET, int(time.time())),
        "traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
    }
    assert stack.http("POST", "/payments/notify", body, headers)[0] == 200
    wait_for("the points credited", lambda: stack.balance(user) == 12 or None)

    # When the order's trace is asked for, once both consumers have logged their work
    def traced() -> dict[str, Any] | None:
        status, journey = stack.http("GET", f"/_local/trace?orderNo={order['orderNo']}")
        assert status == 200, journey
        done = {
            e["function"]
            for e in journey["events"]
            if e["kind"] == "log" and e["message"].endswith("handled")
        }
        return journey if {"PointsConsumerFunction", "SmsConsumerFunction"} <= done else None

    journey = wait_for("both consumers' lines in the trace", traced)

    # Then the callback's correlation id is the one the rows kept, and every consumer line carries it
    [callback] = [e for e in journey["events"] if e["kind"] == "log" and e["message"] == "payment accepted"]
    assert journey["correlationIds"] == [callback["correlation_id"]]
    assert journey["traceIds"] == [trace_id]
    consumer_lines = [
        e for e in journey["events"] if e["kind"] == "log" and e["function"].endswith("ConsumerFunction")
    ]
    assert {e["function"] for e in consumer_lines} == {"PointsConsumerFunction", "SmsConsumerFunction"}
    assert {e["correlation_id"] for e in consumer_lines} == {callback["correlation_id"]}
    assert {e["trace_id"] for e in consumer_lines} == {trace_id}
    # And the journey lists the rows' writing and sending and both effects, in time order
    kinds = [e["kind"] for e in journey["events"]]
    assert {"outbox", "points", "sms", "log"} <= set(kinds)
    times = [e["at"] for e in journey["events"]]
    assert times == sorted(times)


def test_the_stack_serves_powertools_swagger_ui_over_the_openapi_document(stack: RunningStack) -> None:
    with urllib.request.urlopen(stack.api + "/swagger", timeout=15) as response:  # noqa: S310
        page = response.read().decode()
        content_type = response.headers["Content-Type"]
    # Then it is the interactive page, its assets inline (no network), over the checked-in document
    assert content_type.startswith("text/html")
    assert "SwaggerUIBundle(swaggerUIOptions)" in page
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert json.dumps(document["info"]["title"]) in page or document["info"]["title"] in page
    assert "<script src=" not in page
    # And the page's own document request answers the document
    status, served = stack.http("GET", "/swagger?format=json")
    assert (status, served) == (200, document)


def test_the_operator_commands_speak_to_the_running_stack(
    stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from payment_outbox_dev.cli import main

    # Given a paid order on the stack
    user = _user_id()
    order = stack.create_order(user, "7.00")
    assert stack.pay(order)[0] == 200
    wait_for("the points credited", lambda: stack.balance(user) == 7 or None)
    capsys.readouterr()
    # When the operator traces it, lists the failure groups and the DLQs, and rehearses a redrive
    assert main(["trace", order["orderNo"], "--api", stack.api]) == 0
    trace = capsys.readouterr().out
    local = ["--api", stack.api, "--data-dir", str(stack.data_dir)]
    assert main(["failures", *local]) == 0
    failures = json.loads(capsys.readouterr().out)
    assert main(["dlq", *local]) == 0
    dlqs = json.loads(capsys.readouterr().out)
    name = dlqs["items"][0]["name"]
    assert main(["dlq", "redrive", name, "--reason", "rehearsal", *local]) == 0
    rehearsal = json.loads(capsys.readouterr().out)
    # Then the trace names the order, its correlation id and its rows; the lists are the admin API's
    assert trace.startswith(f"order {order['orderNo']}: correlation id(s) ")
    assert " outbox  topic.points " in trace and " written" in trace
    assert set(failures) >= {"groups", "scanned", "truncated"}
    assert {item["name"] for item in dlqs["items"]} >= {"PointsDeadLetterQueue", "SmsDeadLetterQueue"}
    assert (rehearsal["dryRun"], rehearsal["auditId"]) == (True, None)
    # And a group action without its reason is refused before any request
    assert main(["failures", "requeue", "0123456789abcdef", "--api", stack.api]) == 2
