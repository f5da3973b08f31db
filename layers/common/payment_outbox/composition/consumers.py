"""PointsConsumer and SmsConsumer: each SQS record handled once per envelope messageId.

No SQLAlchemy here: the consumers' cold start never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.adapters.idempotent_record_handler import IdempotentEnvelopeHandler
from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog, SnsSmsSender
from payment_outbox.adapters.sqs_batch import TracedRecords, from_fifo_queue
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import Envelope
from payment_outbox.services.points import credit_points
from payment_outbox.services.sms import UncertainSms, send_sms
from payment_outbox.settings import IdempotencySettings, PointsSettings, SmsSettings


def build_points_consumer() -> IdempotentEnvelopeHandler:
    clients, clock = AwsClients(), SystemClock()
    ledger = DynamoDbPointsLedger(
        clients.factory("dynamodb", timeouts.DYNAMODB), PointsSettings().points_table_name
    )
    return _once_per_message(
        lambda envelope: credit_points(envelope, ledger, clock).to_dict(),
        "points",
        clients,
        record_seconds=points_record_seconds(),
    )


#: DynamoDB calls of one SMS record: the idempotency record's put and update, the intent's put, its
#: read when one exists (and its move), and the SENT record.
SMS_RECORD_DYNAMODB_CALLS = 6
#: Of one points record: the idempotency record's put and update, and the ledger's transaction.
POINTS_RECORD_DYNAMODB_CALLS = 3
#: Counted once per SMS parked as uncertain (alarm SmsDeliveriesUncertainAlarm).
UNCERTAIN_SMS_METRIC = "SmsDeliveriesUncertain"


def build_sms_consumer() -> IdempotentEnvelopeHandler:
    clients, clock = AwsClients(), SystemClock()
    settings = SmsSettings()
    sender = sms_sender(clients)
    deliveries = DynamoDbSmsDeliveryLog(
        clients.factory("dynamodb", timeouts.DYNAMODB), settings.sms_deliveries_table_name
    )
    policy = UncertainSms(settings.sms_uncertain_delivery)
    return _once_per_message(
        lambda envelope: send_sms(
            envelope, sender, deliveries, clock, uncertain=policy, on_uncertain=count_uncertain_sms
        ).to_dict(),
        "sms",
        clients,
        record_seconds=sms_record_seconds(),
    )


def sms_sender(clients: AwsClients) -> SnsSmsSender:
    """The SMS provider's client: one attempt, short timeouts (``timeouts.SMS_SEND``)."""
    return SnsSmsSender(clients.factory("sns", timeouts.SMS_SEND))


def sms_record_seconds() -> float:
    """The worst case of one SMS record: a record starts only with this much time left."""
    return (
        SMS_RECORD_DYNAMODB_CALLS * timeouts.DYNAMODB.worst_case_seconds()
        + timeouts.SMS_SEND.worst_case_seconds()
    )


def points_record_seconds() -> float:
    """The worst case of one points record."""
    return POINTS_RECORD_DYNAMODB_CALLS * timeouts.DYNAMODB.worst_case_seconds()


def count_uncertain_sms(_message_id: str) -> None:
    """SmsDeliveriesUncertain (service=sms-consumer): the alarm's metric; the log names the message.

    Powertools' Metrics instances share one metric set: the handler's ``log_metrics`` flushes it."""
    Metrics().add_metric(name=UNCERTAIN_SMS_METRIC, unit=MetricUnit.Count, value=1)


def _once_per_message(
    handle: Callable[[Envelope], dict[str, Any]],
    key_prefix: str,
    clients: AwsClients,
    *,
    record_seconds: float,
) -> IdempotentEnvelopeHandler:
    settings = IdempotencySettings()
    return IdempotentEnvelopeHandler(
        handle,
        table_name=settings.idempotency_table_name,
        ttl_seconds=settings.idempotency_ttl_seconds,
        dynamodb_client=clients.factory("dynamodb", timeouts.DYNAMODB)(),
        key_prefix=key_prefix,
        record_seconds=record_seconds,
    )


class RecordHandler(Protocol):
    """What a consumer does with one SQS record (``IdempotentEnvelopeHandler``)."""

    def register(self, context: LambdaContext | None) -> None: ...

    def __call__(self, record: SQSRecord) -> dict[str, Any]: ...


class SqsConsumer:
    """One consumer Lambda's batch: the record handler built on the first invocation and kept for the
    container's life, each record handled inside the trace it carries, and the failed records reported
    back so only they return to the queue (and, in the end, its DLQ).

    The batch semantics follow the queue the event comes from: a FIFO queue (ordered delivery) fails
    the rest of a failed record's message group (its stream) in the batch, so nothing overtakes it,
    while the other groups go on; a standard queue settles each record on its own.
    """

    def __init__(
        self, name: str, build: Callable[[], RecordHandler], *, logger: Logger, tracer: Tracer
    ) -> None:
        self._name = name
        self._handler = cache(build)
        self._logger = logger
        self._tracer = tracer
        self._processor = BatchProcessor(event_type=EventType.SQS)
        self._fifo_processor = SqsFifoPartialProcessor(skip_group_on_error=True)

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        handler = self._handler()
        handler.register(context)
        return process_partial_response(
            event=event,
            record_handler=TracedRecords(handler, logger=self._logger, tracer=self._tracer, name=self._name),
            processor=self._fifo_processor if from_fifo_queue(event) else self._processor,
            context=context,
        )
