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
    ) -> None:
        self._handle = handle
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
        """Lets Powertools expire an INPROGRESS record when this invocation runs out of time."""
        if context is not None:
            self._config.register_lambda_context(context)

    def __call__(self, record: SQSRecord) -> dict[str, Any]:
        envelope = Envelope.parse(record.body)
        result: dict[str, Any] = self._process_once(envelope=envelope.to_dict())
        return result

    def _process(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return self._handle(Envelope.model_validate(envelope))
