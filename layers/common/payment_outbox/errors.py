"""Every error the application raises on purpose, in one place.

Each carries a stable machine-readable ``code``; the HTTP layer maps classes to status codes in one
table (``payment_outbox.api.http``), so no handler ever returns ``str(exc)`` of an unexpected error.
"""

from __future__ import annotations

from typing import Any


class PaymentOutboxError(Exception):
    """Base of all deliberate errors. ``message`` is safe to show to a caller."""

    code = "error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class MalformedRequest(PaymentOutboxError):
    """The request body is not parseable (not JSON, not an object)."""

    code = "malformed_request"


class InvalidRequest(PaymentOutboxError):
    """The request parsed but breaks a field rule (type, range, format)."""

    code = "invalid_request"


class CurrencyNotAccepted(InvalidRequest):
    """The order names a currency this deployment does not accept (``ACCEPTED_CURRENCIES``)."""

    code = "currency_not_accepted"


class Unauthenticated(PaymentOutboxError):
    """The request carries no caller identity where the API's authorizer should have put one."""

    code = "unauthenticated"


class ForbiddenForCaller(PaymentOutboxError):
    """The caller may not act for the user the request names (cognito mode: another user)."""

    code = "user_not_caller"


class SignatureRejected(PaymentOutboxError):
    """The payment callback signature is missing, malformed, wrong or stale."""

    code = "invalid_signature"


class OrderNotFound(PaymentOutboxError):
    code = "order_not_found"


class PaymentConflict(PaymentOutboxError):
    """The callback contradicts what we know: wrong amount, or the order is paid by another transaction."""

    code = "payment_conflict"


class AmountMismatch(PaymentConflict):
    code = "amount_mismatch"


class CurrencyMismatch(PaymentConflict):
    """The provider reports a currency other than the order's: the same kind of contradiction as a
    different amount (the body is well formed; the stored order disagrees), hence 409, not 422."""

    code = "currency_mismatch"


class AlreadyPaid(PaymentConflict):
    code = "already_paid"


class TransactionAlreadyUsed(PaymentConflict):
    code = "transaction_already_used"


class OrderNumberTaken(PaymentOutboxError):
    """The order number drawn for a new order is already stored (the unique key said so): draw again."""

    code = "order_number_taken"


class InvalidEnvelope(PaymentOutboxError):
    """A consumed message is not a valid envelope: it can never succeed (poison message)."""

    code = "invalid_envelope"


class ConfigurationError(PaymentOutboxError):
    code = "configuration_error"


class RequestTooLarge(PaymentOutboxError):
    code = "request_too_large"


class MessageNotFound(PaymentOutboxError):
    code = "message_not_found"


class FailureGroupNotFound(PaymentOutboxError):
    """No failed or retrying row has this error fingerprint (now)."""

    code = "failure_group_not_found"


class DeadLetterQueueNotFound(PaymentOutboxError):
    """No dead-letter queue of the stack has this name."""

    code = "dlq_not_found"


class NotRequeueable(PaymentOutboxError):
    """The message is in a state a requeue must not touch (sent, without includeSent; or already due)."""

    code = "not_requeueable"


class SmsSendFailed(PaymentOutboxError):
    """The SMS provider refused or failed; the message is retried through its queue."""

    code = "sms_send_failed"


class SmsOutcomeUnknown(PaymentOutboxError):
    """The SMS request left, and no answer came back (a read timeout, a dropped connection): the
    provider may have sent it. Never retried blindly (``payment_outbox.services.sms``)."""

    code = "sms_outcome_unknown"


class SmsDeliveryBusy(PaymentOutboxError):
    """Another delivery of the same message holds its SMS intent right now; this one retries later."""

    code = "sms_delivery_busy"


class SmsNotUncertain(PaymentOutboxError):
    """An operator's resend or mark-delivered names an SMS that is not parked as uncertain."""

    code = "sms_not_uncertain"


class NotEnoughTimeLeft(PaymentOutboxError):
    """The invocation has less time left than the work's worst case: it is left for a later one."""

    code = "not_enough_time_left"
