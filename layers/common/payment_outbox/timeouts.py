"""The timeout budget: how long each call to something we do not own may take, at worst.

Every boto3 client is built from one ``CallBudget`` (``payment_outbox.adapters.aws``): botocore's
*standard* retry mode, an explicit number of attempts, and explicit connect and read timeouts — never
botocore's defaults (legacy mode, 5 attempts, 60 s read timeout, longer than most of our functions
live). ``tests/unit/test_timeout_budget.py`` adds up, per function, the worst case of the calls on its
path from these same values and proves it fits the function's Timeout in template.yaml (29 s for the
API behind API Gateway).
"""

from __future__ import annotations

from dataclasses import dataclass

#: botocore's standard mode sleeps at most ``2 ** (attempt - 1)`` s (random, capped at 20 s) before
#: a retry (``botocore.retries.standard.ExponentialBackoff``).
STANDARD_MODE_MAX_BACKOFF_SECONDS = 20.0


@dataclass(frozen=True)
class CallBudget:
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_attempts: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.connect_timeout_seconds <= 0 or self.read_timeout_seconds <= 0:
            raise ValueError(f"not a budget: {self}")

    def worst_case_seconds(self) -> float:
        """Every attempt waits out its connect and read timeouts, with the longest backoff between."""
        backoff = sum(
            min(2.0**retry, STANDARD_MODE_MAX_BACKOFF_SECONDS) for retry in range(self.max_attempts - 1)
        )
        return self.max_attempts * (self.connect_timeout_seconds + self.read_timeout_seconds) + backoff


#: Sending an SMS: ONE attempt. A retried Publish whose first answer was lost sends the SMS twice;
#: an answer that does not come within the read timeout is an uncertain delivery
#: (``payment_outbox.services.sms``), never a silent resend.
SMS_SEND = CallBudget(connect_timeout_seconds=2, read_timeout_seconds=5, max_attempts=1)
#: DynamoDB (idempotency records, ledger, SMS deliveries): single-digit milliseconds when healthy.
DYNAMODB = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=2)
#: Secrets Manager reads (database credentials, CA bundle, application user): cached once read.
SECRETS = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=2)
#: The same reads on a hot path (the payment API inside API Gateway's 29 s, the relay's minute): one
#: short attempt. A refused read fails this request or run; the next one reads again.
SECRETS_ON_HOT_PATH = CallBudget(connect_timeout_seconds=0.5, read_timeout_seconds=1, max_attempts=1)
#: The scheduled relay's PublishBatch: a retry is safe (consumers are idempotent); a row whose
#: request fails is retried by the relay's own backoff.
SNS_RELAY = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=3, max_attempts=2)
#: Fan-out: an asynchronous Invoke of the relay itself.
LAMBDA_INVOKE = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=3, max_attempts=2)
#: The admin API's DLQ redrive (receive, send, delete), inside API Gateway's 29 s.
SQS_REDRIVE = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=2)
#: The janitor's archive PutObject (up to one batch of rows as JSON lines).
S3_ARCHIVE = CallBudget(connect_timeout_seconds=2, read_timeout_seconds=10, max_attempts=3)


def after_commit_publish(timeout_seconds: float) -> CallBudget:
    """The after-commit publish of the payment API: one attempt bounded by ``timeout_seconds``
    (``OutboxSettings.outbox_immediate_publish_timeout_seconds``); the relay retries what it misses."""
    return CallBudget(
        connect_timeout_seconds=timeout_seconds, read_timeout_seconds=timeout_seconds, max_attempts=1
    )


@dataclass(frozen=True)
class DatabaseTimeouts:
    """PyMySQL's socket timeouts: a database that stops answering (a failover, a network partition)
    raises after these, instead of holding the function until Lambda kills it."""

    connect_seconds: float
    read_seconds: float
    write_seconds: float

    def unit_of_work_seconds(self) -> float:
        """What a database that stops answering costs one unit of work at most: the connection's
        (re)connect to its connect timeout, then the one round trip that waits to the read timeout —
        PyMySQL raises there, and the unit of work ends with the error. (A request, a few kilobytes
        at most on every path, goes into the socket's send buffer at once; ``write_seconds`` bounds
        a larger one that would fill it.)"""
        return self.connect_seconds + self.read_seconds
