"""Consumer record handling with Powertools idempotency on DynamoDB, keyed on the envelope's messageId.

The SQS message id is useless as a key: a row published twice arrives as two SQS messages. The
envelope's ``messageId`` is the outbox row's, the same on every copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.adapters.idempotency_records import InProgressIndexingClient
from payment_outbox.domain.envelope import Envelope
from payment_outbox.errors import NotEnoughTimeLeft


def indexed_persistence_layer(table_name: str, dynamodb_client: Any) -> DynamoDBPersistenceLayer:
    """Powertools' DynamoDB persistence, keeping the in-progress index attribute as it writes
    (``adapters.idempotency_records``: how stuck records are found without a scan)."""
    # Stands in for the client: the calls Powertools makes go through it, every other attribute too.
    indexing: Any = InProgressIndexingClient(dynamodb_client)
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=indexing)


class IdempotentEnvelopeHandler:
    """Parses each SQS record into an envelope and runs ``handle`` at most once per messageId."""

    def __init__(
        self,
        handle: Callable[[Envelope], dict[str, Any]],
        *,
        table_name: str,
        ttl_seconds: int,
        dynamodb_client: Any,
        key_prefix: str,
        record_seconds: float | None = None,
    ) -> None:
        self._handle = handle
        self._record_seconds = record_seconds
        self._context: LambdaContext | None = None
        self._guarded = False
        self._config = IdempotencyConfig(
            event_key_jmespath="messageId",
            expires_after_seconds=ttl_seconds,
            raise_on_no_idempotency_key=True,
        )
        persistence = indexed_persistence_layer(table_name, dynamodb_client)
        self._process_once = idempotent_function(
            data_keyword_argument="envelope",
            persistence_store=persistence,
            config=self._config,
            key_prefix=key_prefix,
        )(self._process)

    def register(self, context: LambdaContext | None) -> None:
        """Lets Powertools expire an INPROGRESS record when this invocation runs out of time, and
        this handler leave a record it could not finish in time to a later invocation."""
        if context is not None:
            self._config.register_lambda_context(context)
        self._context = context
        # A function whose whole timeout is shorter than one record's worst case (a time-scaled local
        # run) could never start a record under the rule below: the rule is off for it.
        self._guarded = (
            context is not None
            and self._record_seconds is not None
            and context.get_remaining_time_in_millis() / 1000 >= self._record_seconds
        )

    def __call__(self, record: SQSRecord) -> dict[str, Any]:
        envelope = Envelope.parse(record.body)
        if self._guarded and self._context is not None and self._record_seconds is not None:
            left = self._context.get_remaining_time_in_millis() / 1000
            if left < self._record_seconds:
                # Never start what the invocation may not finish (an SMS send cut off by the
                # function's timeout is an uncertain SMS): the record returns to its queue untouched.
                raise NotEnoughTimeLeft(
                    f"{left:.1f} s left, a record may take {self._record_seconds:.0f} s: left for later"
                )
        result: dict[str, Any] = self._process_once(envelope=envelope.to_dict())
        return result

    def _process(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return self._handle(Envelope.model_validate(envelope))
