"""Configuration, read once from the environment into typed models (never ``os.environ`` elsewhere).

Each Lambda reads only the settings it needs, so each function's environment in template.yaml lists
exactly what its code reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.money import MoneyRules, parse_currencies, parse_points_per_unit
from payment_outbox.domain.signature import MAX_TOLERANCE_SECONDS, MIN_SECRET_LENGTH
from payment_outbox.errors import ConfigurationError
from payment_outbox.timeouts import DatabaseTimeouts


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)


class DatabaseSettings(_Settings):
    """Either a full SQLAlchemy URL (local, tests, demo) or host/name plus a Secrets Manager secret."""

    database_url: SecretStr | None = None
    db_host: str | None = None
    db_port: int = 3306
    db_name: str | None = None
    db_secret_arn: str | None = None
    #: Encrypt and verify the server's certificate and host name (never encrypted without verifying).
    db_tls: bool = False
    #: Secret holding the PEM CA bundle to verify against; without it, the system's trusted
    #: authorities, which hold the RDS Proxy's CA but not the RDS CA of an RDS or Aurora endpoint.
    db_tls_ca_secret_arn: str | None = None
    #: PyMySQL's socket timeouts (each function's own in template.yaml: they are part of its timeout
    #: budget, tests/unit/test_timeout_budget.py). The defaults suit tooling and tests.
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    db_read_timeout_seconds: float = Field(default=30.0, gt=0, le=900)
    db_write_timeout_seconds: float = Field(default=30.0, gt=0, le=900)

    def timeouts(self) -> DatabaseTimeouts:
        return DatabaseTimeouts(
            connect_seconds=self.db_connect_timeout_seconds,
            read_seconds=self.db_read_timeout_seconds,
            write_seconds=self.db_write_timeout_seconds,
        )

    @field_validator("db_tls_ca_secret_arn", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def required_secret_arn(self) -> str:
        if not self.db_secret_arn:
            raise ConfigurationError("DB_SECRET_ARN is not set")
        return self.db_secret_arn

    @model_validator(mode="after")
    def _one_source(self) -> DatabaseSettings:
        if self.database_url is None and not (self.db_host and self.db_name and self.db_secret_arn):
            raise ValueError("set DATABASE_URL, or DB_HOST, DB_NAME and DB_SECRET_ARN")
        return self


class MigrationSettings(_Settings):
    """The schema migrator's own: the application user it keeps (only when the stack made the database)."""

    #: Secret {"username", "password"} of the user the other functions connect as; unset: none kept.
    db_app_user_secret_arn: str | None = None

    @field_validator("db_app_user_secret_arn", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class OutboxSettings(_Settings):
    order_events_topic_arn: str
    #: Publishes a message may have refused (its own per-entry failures) before it is marked FAILED;
    #: an outage (SNS refusing or not answering a whole request) charges no attempt.
    outbox_max_attempts: int = Field(default=5, ge=1, le=100)
    #: A message still unpublished this long after it was written is marked FAILED at its next
    #: failure, outage or not (what bounds a message's retries through an outage).
    outbox_max_message_age_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    #: Rows one claim takes: two waves of the relay's concurrent requests (10 x 10 entries), so the
    #: requests of one claim keep the pipe full while the previous claim is recorded.
    outbox_batch_size: int = Field(default=200, ge=1, le=1000)
    outbox_lease_seconds: int = Field(default=60, ge=5)
    outbox_backoff_base_seconds: float = Field(default=2.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=300.0, gt=0)
    #: Per-stream order: hold a message while an earlier one of its stream (business key x topic) is
    #: pending, in the relay and in the after-commit publish (FIFO topics).
    outbox_ordered_by_key: bool = False
    #: Upper bound of the after-commit publish, so it never delays the callback response much.
    outbox_immediate_publish_timeout_seconds: float = Field(default=1.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.outbox_max_attempts,
            base_delay_seconds=self.outbox_backoff_base_seconds,
            max_delay_seconds=self.outbox_backoff_max_seconds,
            max_age_seconds=self.outbox_max_message_age_hours * 3600,
        )


class RelaySettings(_Settings):
    """The scheduled relay's own knobs: concurrency, sub-minute polling, fan-out under a backlog."""

    #: PublishBatch requests in flight at once (one boto3 client, one connection each).
    relay_max_in_flight: int = Field(default=10, ge=1, le=50)
    #: Polling within a scheduled run: how often, and how long after the last claimed row.
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0, le=10)
    relay_idle_cutoff_seconds: float = Field(default=0.0, ge=0, le=60)
    #: Relays at once under a backlog, the scheduled one included; 1 turns fan-out off. Fan-out
    #: invokes the running function itself, by the name in its Lambda context.
    max_relay_concurrency: int = Field(default=1, ge=1, le=100)


class WebhookSettings(_Settings):
    """The payment provider's signing secret: from Secrets Manager in AWS, from configuration locally."""

    #: At least ``MIN_SECRET_LENGTH`` characters (a secret from Secrets Manager too, when it is read).
    webhook_secret: SecretStr | None = None
    webhook_secret_arn: str | None = None
    #: How old a signature may be; a wider window only widens the replay window, hence the bound.
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=MAX_TOLERANCE_SECONDS)

    @field_validator("webhook_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"WEBHOOK_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> WebhookSettings:
        if self.webhook_secret is None and not self.webhook_secret_arn:
            raise ValueError("set WEBHOOK_SECRET_ARN (or WEBHOOK_SECRET locally)")
        return self


class CallerSettings(_Settings):
    """How the payment API knows who calls its order routes (``payment_outbox.domain.callers``)."""

    #: ``iam``: a trusted service signs (SigV4) and names the user; ``cognito``: the user's own token.
    caller_identity: Literal["iam", "cognito"] = "iam"
    #: The token claim naming the user in ``cognito`` mode (an order user id: 1 .. 2**63-1).
    caller_user_claim: str = Field(default="sub", min_length=1, max_length=128)


class MoneySettings(_Settings):
    """Currencies the deployment accepts, and points per whole unit of each (``domain.money``)."""

    #: Comma-separated ISO 4217 codes: "CNY,USD".
    accepted_currencies: str = "CNY"
    #: Comma-separated ``CUR:points`` per whole unit: "CNY:1,USD:7"; every accepted currency needs one.
    points_per_unit: str = "CNY:1"

    @model_validator(mode="after")
    def _consistent(self) -> MoneySettings:
        self.rules()  # refused at start: a bad code, a bad rate, an accepted currency without a rate
        return self

    def rules(self) -> MoneyRules:
        return MoneyRules.of(
            parse_currencies(self.accepted_currencies), parse_points_per_unit(self.points_per_unit)
        )


class IdempotencySettings(_Settings):
    idempotency_table_name: str
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)


class PointsSettings(_Settings):
    points_table_name: str


class SmsSettings(_Settings):
    sms_deliveries_table_name: str
    #: A delivery that finds an earlier send unanswered: "park" it for an operator (never two SMS),
    #: or "resend" it (never none). Template parameter SmsUncertainDelivery.
    sms_uncertain_delivery: Literal["park", "resend"] = "park"


class AdminSettings(_Settings):
    """The admin API's bounds, and the dead-letter queues it can redrive."""

    #: Rows one bulk requeue changes at most; the response says when more matched.
    admin_requeue_max_rows: int = Field(default=1000, ge=1, le=1000)
    #: Every dead-letter queue and the queue its messages are redriven into (queue URL to queue URL):
    #: the consumers' DLQs and the SNS subscriptions' (template.yaml, ``DEAD_LETTER_SOURCES``).
    dead_letter_sources: dict[str, str] = Field(default_factory=dict)


class ReconcileSettings(_Settings):
    #: A sent row gets this long for its consumer effect to appear before it counts as missing.
    reconcile_effect_grace_minutes: int = Field(default=30, ge=1)
    #: How far back (before the grace period) sent rows are checked for their effect.
    reconcile_effect_window_hours: int = Field(default=24, ge=1)
    #: Sent rows read per page; every sent row of the window is checked, page after page.
    reconcile_sent_page_size: int = Field(default=500, ge=1, le=5000)
    #: PAID orders updated within this window are checked for missing outbox rows.
    reconcile_orders_lookback_hours: int = Field(default=24, ge=1)


class RetentionSettings(_Settings):
    #: SENT rows older than this are purged (archived first when a bucket is configured).
    outbox_retention_days: int = Field(default=7, ge=1)
    #: Rows per SELECT/DELETE statement; never more than 1,000.
    outbox_retention_batch_size: int = Field(default=1000, ge=1, le=1000)
    #: Empty or unset: no archive.
    archive_bucket_name: str | None = None

    @field_validator("archive_bucket_name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
