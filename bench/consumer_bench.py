"""Consumer cost: DynamoDB calls per first delivery and per duplicate (counted by botocore hooks on
the consumers' own client), and records per second through a batch of 10."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from bench.env import BenchWorld, on_new_clients
from bench.relay_bench import publish_batch_limit
from bench.stats import Section, Target, median
from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS

CONSUMERS = {
    "points": ("PointsQueue", "PointsConsumerFunction", TOPIC_POINTS),
    "sms": ("SmsQueue", "SmsConsumerFunction", TOPIC_SMS),
}
BATCH = 10
#: The calls each consumer's design makes for a first delivery: the idempotency record's put and its
#: completion, and between them points' one transaction (ledger entry and balance), or the SMS
#: delivery guard's read and its record.
FIRST_DELIVERY_CALLS = {"points": 3, "sms": 4}


class CallCounter:
    """Counts DynamoDB API calls by operation, via ``before-call.dynamodb`` on each DynamoDB client the
    functions create inside the block (cold-start a function there so its own clients are counted)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.write_units: defaultdict[str, float] = defaultdict(float)
        self.read_units: defaultdict[str, float] = defaultdict(float)
        self._hooks = ExitStack()

    def _count(self, event_name: str, **_: Any) -> None:
        self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def _units(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """Capacity units by DynamoDB's rules for items under a kilobyte: a write unit per item
        written, two in a transaction; a read unit per strongly consistent read, half for an
        eventually consistent one, two in a transaction."""
        operation = model.name
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self.write_units[params["TableName"]] += 1
        elif operation == "GetItem":
            self.read_units[params["TableName"]] += 1 if params.get("ConsistentRead") else 0.5
        elif operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                (kind, body), *_rest = item.items()
                (self.read_units if kind == "ConditionCheck" else self.write_units)[body["TableName"]] += 2
        elif operation == "TransactGetItems":
            for item in params["TransactItems"]:
                self.read_units[item["Get"]["TableName"]] += 2
        elif operation == "BatchWriteItem":
            for table_name, requests in params["RequestItems"].items():
                self.write_units[table_name] += len(requests)
        elif operation in ("Query", "Scan"):
            self.read_units[params["TableName"]] += 1 if params.get("ConsistentRead") else 0.5

    def _hook(self, client: Any) -> None:
        client.meta.events.register("before-call.dynamodb", self._count)
        client.meta.events.register("before-parameter-build.dynamodb", self._units)

    def __enter__(self) -> CallCounter:
        self._hooks.enter_context(on_new_clients("dynamodb", self._hook))
        return self

    def __exit__(self, *_: object) -> None:
        self._hooks.close()

    def take(self) -> Counter[str]:
        taken = Counter(self.calls)
        self.calls.clear()
        return taken

    def take_units(self) -> tuple[dict[str, float], dict[str, float]]:
        taken = dict(self.write_units), dict(self.read_units)
        self.write_units.clear()
        self.read_units.clear()
        return taken


def _receive_batch(sqs: Any, queue_url: str, size: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    for _ in range(20):
        if len(received) >= size:
            break
        received += sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=size - len(received),
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
    return received


def consumer_cost(
    world: BenchWorld, *, batches: int, rounds: int, progress: Callable[[str], None]
) -> Section:
    import boto3

    from bench.data import due_messages
    from payment_outbox_dev.local.harness import sqs_event

    sqs: Any = boto3.client("sqs")
    figures: dict[str, Any] = {}
    targets = []
    counter = CallCounter()
    first_order = 1
    for name, (queue, function, topic) in CONSUMERS.items():
        queue_url = world.queue_url(queue)
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        world.functions.handler(function)  # load the module before anything is timed
        first_calls: Counter[str] = Counter()
        duplicate_calls: Counter[str] = Counter()
        first_records = duplicate_records = 0
        first_writes: defaultdict[str, float] = defaultdict(float)
        first_reads: defaultdict[str, float] = defaultdict(float)
        rates: list[float] = []
        duplicate_rates: list[float] = []
        with counter:
            world.functions.cold_start(function)  # its clients are created, and counted, from here
            for round_no in range(rounds + 1):  # round 0 warms the handler, clients and tables up
                sqs.purge_queue(QueueUrl=queue_url)
                generated = due_messages(2 * BATCH * batches, first_order=first_order)
                messages = [m for m in generated if m.topic == topic]
                first_order += BATCH * batches
                publish_batch_limit(messages, world.topic_arn)
                elapsed = duplicate_elapsed = 0.0
                handled = 0
                for _ in range(batches):
                    received = _receive_batch(sqs, queue_url, BATCH)
                    event = sqs_event(received, queue_arn)
                    counter.take()
                    counter.take_units()
                    started = time.perf_counter()
                    response = world.functions.invoke(function, event)
                    elapsed += time.perf_counter() - started
                    first = counter.take()
                    writes, reads = counter.take_units()
                    started = time.perf_counter()
                    again = world.functions.invoke(function, event)  # the same records delivered again
                    duplicate_elapsed += time.perf_counter() - started
                    duplicate = counter.take()
                    counter.take_units()
                    if response["batchItemFailures"] or again["batchItemFailures"]:
                        raise RuntimeError(f"{function} failed records: {response} / {again}")
                    for start in range(0, len(received), 10):
                        sqs.delete_message_batch(
                            QueueUrl=queue_url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                for i, m in enumerate(received[start : start + 10])
                            ],
                        )
                    handled += len(received)
                    if round_no:
                        for table, units in writes.items():
                            first_writes[table] += units
                        for table, units in reads.items():
                            first_reads[table] += units
                        first_calls += first
                        duplicate_calls += duplicate
                        first_records += len(received)
                        duplicate_records += len(received)
                if round_no:
                    rates.append(handled / elapsed)
                    duplicate_rates.append(handled / duplicate_elapsed)
                    progress(f"{name} consumer round {round_no}/{rounds}: {rates[-1]:.0f} records/s")
        per_first = sum(first_calls.values()) / first_records
        per_duplicate = sum(duplicate_calls.values()) / duplicate_records
        figures[name] = {
            "records": first_records,
            "dynamodb_calls_per_first_delivery": per_first,
            "dynamodb_calls_per_duplicate": per_duplicate,
            "first_delivery_calls_by_operation": {
                k: v / first_records for k, v in sorted(first_calls.items())
            },
            "duplicate_calls_by_operation": {
                k: v / duplicate_records for k, v in sorted(duplicate_calls.items())
            },
            "records_per_second_median": median(rates),
            "ms_per_record_median": 1000 / median(rates),
            "write_units_per_record": sum(first_writes.values()) / first_records,
            "read_units_per_record": sum(first_reads.values()) / first_records,
            "write_units_by_table_per_record": {
                k: v / first_records for k, v in sorted(first_writes.items())
            },
            "read_units_by_table_per_record": {k: v / first_records for k, v in sorted(first_reads.items())},
            "duplicate_records_per_second_median": median(duplicate_rates),
            "records_per_second_rounds": rates,
        }
        targets += [
            Target(
                f"{name} consumer: DynamoDB calls per first delivery",
                per_first,
                "<=",
                FIRST_DELIVERY_CALLS[name],
            ),
            Target(f"{name} consumer: DynamoDB calls per duplicate", per_duplicate, "<=", 1),
        ]
    section = Section("consumer_cost", "Consumer cost")
    section.figures = {"batch": BATCH, "batches": batches, "rounds": rounds, **figures}
    section.targets = targets
    return section
