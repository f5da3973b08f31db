"""``payment-outbox preflight --aws``: what only the account can tell, asked with the deployer's own
credentials and read-only calls (never a change; secret values are parsed, never shown).

- the network (``account_network``): subnets and zones, VPC DNS, endpoints already in the VPC,
  route tables, security-group egress;
- Lambda: the account's concurrency quota against the reserved and capped concurrency;
- the database: the engine version exists in the Region (CreateDatabase=true);
- secrets: each named secret exists, is readable, has the shape the functions parse, and its KMS key
  is usable by them (a customer managed key must be in SecretKmsKeyArns);
- SMS: the sandbox, the monthly spend limit, an origination number;
- API Gateway: whether the Region already has a CloudWatch logging role.

Each check that cannot run (a call denied, say) says so as a note instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from payment_outbox.adapters.secrets import database_credentials, webhook_secrets
from payment_outbox.errors import ConfigurationError
from payment_outbox_dev.checks.account_network import Finding, listed, network_findings

#: Lambda keeps this much of an account's concurrency unreserved, always.
LAMBDA_MINIMUM_UNRESERVED = 10
#: The Service Quotas code of Lambda's concurrent executions.
LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"
#: SNS's monthly SMS spend limit of an account nobody raised, in USD.
DEFAULT_SMS_SPEND_LIMIT = "1"


@dataclass
class Clients:
    """The AWS clients the checks call (boto3 clients, or stand-ins answering the same way)."""

    ec2: Any
    lambda_: Any
    rds: Any
    secretsmanager: Any
    kms: Any
    sns: Any
    apigateway: Any
    cloudformation: Any

    @classmethod
    def of(cls, session: Any) -> Clients:
        return cls(
            ec2=session.client("ec2"),
            lambda_=session.client("lambda"),
            rds=session.client("rds"),
            secretsmanager=session.client("secretsmanager"),
            kms=session.client("kms"),
            sns=session.client("sns"),
            apigateway=session.client("apigateway"),
            cloudformation=session.client("cloudformation"),
        )


def concurrency_findings(clients: Clients, values: dict[str, str], stack: str | None = None) -> list[Finding]:
    limits = clients.lambda_.get_account_settings()["AccountLimit"]
    quota = int(limits["ConcurrentExecutions"])
    # On an update, the payment API's reservation is already out of the unreserved count.
    unreserved = int(limits["UnreservedConcurrentExecutions"]) + _reserved_by(clients, stack)
    reserved = int(values.get("PaymentApiReservedConcurrency", "0") or 0)
    findings = []
    most = unreserved - LAMBDA_MINIMUM_UNRESERVED
    if reserved > most:
        findings.append(
            Finding(
                "Lambda concurrency",
                f"the account's concurrency quota is {quota} with {unreserved} unreserved: reserving "
                f"PaymentApiReservedConcurrency={reserved} would leave fewer than the "
                f"{LAMBDA_MINIMUM_UNRESERVED} Lambda keeps unreserved and the deploy fails; set it to "
                f"{max(most, 0)} or less (0 reserves none), or raise the quota first "
                f"({LAMBDA_CONCURRENCY_QUOTA} in Service Quotas)",
            )
        )
    shared = unreserved - min(reserved, max(most, 0))
    capped = {
        name: int(values.get(name, "0") or 0)
        for name in ("PointsMaximumConcurrency", "SmsMaximumConcurrency", "MaxRelayConcurrency")
    }
    caps = ", ".join(f"{k}={v}" for k, v in capped.items())
    if sum(capped.values()) >= shared:
        findings.append(
            Finding(
                "Lambda concurrency",
                f"the consumers and relays at their caps ({caps}) "
                f"could take all {shared} of the concurrency left unreserved, and the admin API, the "
                "reconciler and the janitor would be throttled; lower those caps or raise the quota "
                f"({LAMBDA_CONCURRENCY_QUOTA})",
                blocking=False,
            )
        )
    return findings


def _reserved_by(clients: Clients, stack: str | None) -> int:
    """The concurrency the stack's payment API reserves today (0 when the stack does not exist yet)."""
    if not stack:
        return 0
    try:
        resource = clients.cloudformation.describe_stack_resource(
            StackName=stack, LogicalResourceId="PaymentApiFunction"
        )["StackResourceDetail"]
    except ClientError as exc:
        if _code(exc) == "ValidationError":  # no such stack (or resource) yet
            return 0
        raise
    reserved = clients.lambda_.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
    return int(reserved.get("ReservedConcurrentExecutions", 0))


def engine_findings(clients: Clients, values: dict[str, str]) -> list[Finding]:
    if values.get("CreateDatabase") != "true":
        return []
    version = values.get("DatabaseEngineVersion", "")
    offered = clients.rds.describe_db_engine_versions(Engine="aurora-mysql", EngineVersion=version)
    if offered.get("DBEngineVersions"):
        return []
    return [
        Finding(
            "database",
            f"Aurora MySQL {version} is not offered in this Region: set DatabaseEngineVersion to one that "
            "aws rds describe-db-engine-versions --engine aurora-mysql lists (a long-term support one)",
        )
    ]


#: Each secret parameter, when it is read, and how the functions parse it.
def _database_secret(values: dict[str, str]) -> bool:
    return values.get("CreateDatabase") != "true"


def _parse_pem(raw: str) -> None:
    if "-----BEGIN CERTIFICATE-----" not in raw:
        raise ConfigurationError("a CA bundle must be PEM certificates (-----BEGIN CERTIFICATE-----)")


def _parse_webhook(raw: str) -> None:
    if not webhook_secrets(raw):
        raise ConfigurationError('a webhook secret is a string or JSON {"current": ..., "previous": ...}')


def _parse_credentials(raw: str) -> None:
    database_credentials(raw)


SECRETS: dict[str, tuple[Callable[[dict[str, str]], bool], Callable[[str], None]]] = {
    "WebhookSecretArn": (lambda values: True, _parse_webhook),
    "DbSecretArn": (_database_secret, _parse_credentials),
    "DbAppUserSecretArn": (_database_secret, _parse_credentials),
    "DbCaBundleSecretArn": (lambda values: True, _parse_pem),
}


def secret_findings(clients: Clients, values: dict[str, str]) -> list[Finding]:
    findings = []
    keys = set(listed(values.get("SecretKmsKeyArns")))
    for parameter, (needed, parse) in SECRETS.items():
        arn = values.get(parameter, "")
        if not arn or not needed(values):
            continue
        try:
            described = clients.secretsmanager.describe_secret(SecretId=arn)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            missing = f"{parameter}: no secret {arn} in this Region; create it (step 1)"
            findings.append(Finding("secrets", missing))
            continue
        findings += _key_findings(clients, parameter, described.get("KmsKeyId"), keys)
        try:
            value = clients.secretsmanager.get_secret_value(SecretId=arn)
        except ClientError as exc:
            findings.append(
                Finding(
                    "secrets",
                    f"{parameter}: not readable with your credentials ({_code(exc)}), so its shape is "
                    "unchecked; the functions read it with the stack's grants",
                    blocking=False,
                )
            )
            continue
        try:
            parse(str(value.get("SecretString", "")))
        except ConfigurationError as exc:
            findings.append(Finding("secrets", f"{parameter}: {arn} is not what the functions read: {exc}"))
    return findings


def _key_findings(clients: Clients, parameter: str, key_id: str | None, given: set[str]) -> list[Finding]:
    if not key_id:
        return []  # the AWS managed key aws/secretsmanager: no grant needed
    key = clients.kms.describe_key(KeyId=key_id)["KeyMetadata"]
    findings = []
    if key.get("KeyState") != "Enabled":
        findings.append(
            Finding(
                "secrets", f"{parameter}: its KMS key {key['Arn']} is {key.get('KeyState')}: nothing reads it"
            )
        )
    if key.get("KeyManager") == "CUSTOMER" and key["Arn"] not in given:
        findings.append(
            Finding(
                "secrets",
                f"{parameter} is encrypted with the customer managed key {key['Arn']}, which the functions "
                "may not use: add it to SecretKmsKeyArns",
            )
        )
    return findings


def sms_findings(clients: Clients, values: dict[str, str]) -> list[Finding]:
    prod = values.get("Stage") == "prod"
    findings = []
    if clients.sns.get_sms_sandbox_account_status().get("IsInSandbox"):
        findings.append(
            Finding(
                "SMS",
                "the account's SMS is in the sandbox: only verified phone numbers receive messages, every "
                "other customer's SMS fails into the SMS DLQ and alarms; ask for production access "
                "(docs/deploy.md, step 0)",
                blocking=prod,
            )
        )
    attributes = clients.sns.get_sms_attributes(attributes=["MonthlySpendLimit"]).get("attributes", {})
    limit = attributes.get("MonthlySpendLimit", DEFAULT_SMS_SPEND_LIMIT)
    if limit == DEFAULT_SMS_SPEND_LIMIT:
        findings.append(
            Finding(
                "SMS",
                f"the monthly SMS spend limit is {limit} USD (the account's default): once it is spent "
                "every SMS fails into the SMS DLQ until the month ends; raise it (a quota request, then "
                "aws sns set-sms-attributes --attributes MonthlySpendLimit=<USD>)",
                blocking=prod,
            )
        )
    if not clients.sns.list_origination_numbers().get("PhoneNumbers"):
        findings.append(
            Finding(
                "SMS",
                "the account has no origination number: some destination countries (the US among them) "
                "refuse SMS without a registered one (docs/deploy.md, step 0)",
                blocking=False,
            )
        )
    return findings


def api_gateway_findings(clients: Clients, values: dict[str, str]) -> list[Finding]:
    role = clients.apigateway.get_account().get("cloudwatchRoleArn")
    creates = values.get("CreateApiGatewayLogRole") == "true"
    if role and creates:
        return [
            Finding(
                "API Gateway",
                f"the Region's API Gateway account already logs through {role}: set "
                "CreateApiGatewayLogRole=false (else this stack takes the setting over from whoever set it)",
                blocking=False,
            )
        ]
    if not role and not creates:
        return [
            Finding(
                "API Gateway",
                "the Region's API Gateway account has no CloudWatch logging role, and the stage's access log "
                "needs one (the deploy fails): set CreateApiGatewayLogRole=true",
            )
        ]
    return []


CHECKS: dict[str, Callable[[Clients, dict[str, str], str, str | None], list[Finding]]] = {
    "network": lambda c, v, region, stack: network_findings(c.ec2, v, region),
    "Lambda concurrency": lambda c, v, region, stack: concurrency_findings(c, v, stack),
    "database": lambda c, v, region, stack: engine_findings(c, v),
    "secrets": lambda c, v, region, stack: secret_findings(c, v),
    "SMS": lambda c, v, region, stack: sms_findings(c, v),
    "API Gateway": lambda c, v, region, stack: api_gateway_findings(c, v),
}


def account_findings(
    clients: Clients, values: dict[str, str], region: str, stack: str | None = None
) -> list[Finding]:
    """Every check's findings (``stack``: the stack's name, for what an update already holds); a check
    whose calls fail says that it was not checked and why."""
    findings: list[Finding] = []
    for name, check in CHECKS.items():
        try:
            findings += check(clients, values, region, stack)
        except ClientError as exc:
            operation = getattr(exc, "operation_name", "a call")
            findings.append(Finding(name, f"not checked: {operation} answered {_code(exc)}", blocking=False))
        except BotoCoreError as exc:
            findings.append(Finding(name, f"not checked: {exc}", blocking=False))
    return findings


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "an error"))
