"""`payment-outbox preflight --aws` asks the account what only it can tell, read-only, and says what to set.

Each account state is built in moto (VPC attributes, endpoints, route tables, NAT, security groups,
secrets, KMS keys, SMS attributes, the API Gateway account). moto does not emulate four calls:
Lambda's GetAccountSettings, RDS's DescribeDBEngineVersions, SNS's GetSMSSandboxAccountStatus and
ListOriginationNumbers; for those the checks read recorded answers through botocore's Stubber, which
holds them to the service's own response shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from payment_outbox_dev.checks.account import Clients, account_findings
from payment_outbox_dev.checks.account_network import Finding
from payment_outbox_dev.checks.template_proofs import ENDPOINT_PARAMETERS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "payment-outbox-prod"
PAYMENT_API = "payment-outbox-prod-PaymentApiFunction-AbC123"
CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _account_settings(quota: int, unreserved: int) -> dict[str, Any]:
    """GetAccountSettings as Lambda answers it."""
    return {
        "AccountLimit": {
            "TotalCodeSize": 80530636800,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": quota,
            "UnreservedConcurrentExecutions": unreserved,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
    }


def _engine_versions(*versions: str) -> dict[str, Any]:
    """DescribeDBEngineVersions as RDS answers it (the fields the check reads, and a few more)."""
    return {
        "DBEngineVersions": [
            {
                "Engine": "aurora-mysql",
                "EngineVersion": version,
                "DBParameterGroupFamily": "aurora-mysql8.0",
                "SupportedEngineModes": ["provisioned"],
            }
            for version in versions
        ]
    }


@dataclass
class Recorded:
    """What moto does not emulate, as the services answer it."""

    quota: int = 1000
    unreserved: int = 1000
    engine_versions: tuple[str, ...] = ("8.0.mysql_aurora.3.10.6",)
    in_sandbox: bool = False
    origination_numbers: list[dict[str, Any]] = field(
        default_factory=lambda: [{"PhoneNumber": "+18005550100", "Status": "ACTIVE", "Iso2CountryCode": "US"}]
    )
    lambda_error: str | None = None
    #: The stack's payment API's reservation today, when the stack exists (an update).
    reserved_by_stack: int | None = None


class _SnsWithRecordedCalls:
    """moto's SNS, with the two calls moto lacks answered from recordings."""

    def __init__(self, emulated: Any, recorded: Any) -> None:
        self._emulated = emulated
        self._recorded = recorded

    def __getattr__(self, name: str) -> Any:
        if name in ("get_sms_sandbox_account_status", "list_origination_numbers"):
            return getattr(self._recorded, name)
        return getattr(self._emulated, name)


def _clients(recorded: Recorded) -> Clients:
    lambda_ = boto3.client("lambda", region_name=REGION)
    rds = boto3.client("rds", region_name=REGION)
    sns_recorded = boto3.client("sns", region_name=REGION)
    lambda_stub, rds_stub, sns_stub = Stubber(lambda_), Stubber(rds), Stubber(sns_recorded)
    if recorded.lambda_error:
        lambda_stub.add_client_error("get_account_settings", service_error_code=recorded.lambda_error)
    else:
        lambda_stub.add_response(
            "get_account_settings", _account_settings(recorded.quota, recorded.unreserved)
        )
    if recorded.reserved_by_stack is not None:
        lambda_stub.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": recorded.reserved_by_stack},
            {"FunctionName": PAYMENT_API},
        )
    rds_stub.add_response("describe_db_engine_versions", _engine_versions(*recorded.engine_versions))
    sns_stub.add_response("get_sms_sandbox_account_status", {"IsInSandbox": recorded.in_sandbox})
    sns_stub.add_response("list_origination_numbers", {"PhoneNumbers": recorded.origination_numbers})
    for stub in (lambda_stub, rds_stub, sns_stub):
        stub.activate()
    return Clients(
        ec2=boto3.client("ec2", region_name=REGION),
        lambda_=lambda_,
        rds=rds,
        secretsmanager=boto3.client("secretsmanager", region_name=REGION),
        kms=boto3.client("kms", region_name=REGION),
        sns=_SnsWithRecordedCalls(boto3.client("sns", region_name=REGION), sns_recorded),
        apigateway=boto3.client("apigateway", region_name=REGION),
        cloudformation=_cloudformation(recorded),
    )


def _cloudformation(recorded: Recorded) -> Any:
    """moto's CloudFormation (no stack yet: a first deploy), or the stack's payment API as it answers."""
    client = boto3.client("cloudformation", region_name=REGION)
    if recorded.reserved_by_stack is None:
        return client
    stub = Stubber(client)
    stub.add_response(
        "describe_stack_resource",
        {
            "StackResourceDetail": {
                "StackName": STACK,
                "LogicalResourceId": "PaymentApiFunction",
                "PhysicalResourceId": PAYMENT_API,
                "ResourceType": "AWS::Lambda::Function",
                "LastUpdatedTimestamp": "2026-12-01T00:00:00Z",
                "ResourceStatus": "UPDATE_COMPLETE",
            }
        },
        {"StackName": STACK, "LogicalResourceId": "PaymentApiFunction"},
    )
    stub.activate()
    return client


@dataclass
class Account:
    """A moto account shaped like a landing-zone one: a private VPC with DNS on, two private subnets in
    two zones sharing a route table, the functions' security group, the secrets, a raised SMS spend
    limit and a Region-wide API Gateway logging role."""

    ec2: Any
    vpc: str
    subnets: list[str]
    table: str
    group: str
    values: dict[str, str]
    recorded: Recorded = field(default_factory=Recorded)

    def findings(self, **overrides: str) -> list[Finding]:
        return account_findings(_clients(self.recorded), {**self.values, **overrides}, REGION, STACK)

    def texts(self, **overrides: str) -> str:
        return "\n".join(
            f"{'BLOCKING' if f.blocking else 'note'} {f.check}: {f.text}" for f in self.findings(**overrides)
        )

    def endpoint(self, service: str, **kwargs: Any) -> str:
        kind = "Gateway" if service in ("s3", "dynamodb") else "Interface"
        extra = {"RouteTableIds": [self.table]} if kind == "Gateway" else {"SubnetIds": self.subnets[:1]}
        made = self.ec2.create_vpc_endpoint(
            VpcId=self.vpc,
            ServiceName=f"com.amazonaws.{REGION}.{service}",
            VpcEndpointType=kind,
            **{**extra, **kwargs},
        )
        return str(made["VpcEndpoint"]["VpcEndpointId"])


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
            ec2.modify_vpc_attribute(VpcId=vpc, **{attribute: {"Value": True}})
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
            for cidr, zone in (("10.20.1.0/24", "us-east-1a"), ("10.20.2.0/24", "us-east-1b"))
        ]
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        for subnet in subnets:
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
        group = ec2.create_security_group(GroupName="functions", Description="functions", VpcId=vpc)[
            "GroupId"
        ]
        secrets = boto3.client("secretsmanager", region_name=REGION)
        webhook = secrets.create_secret(Name="webhook", SecretString=json.dumps({"current": "s" * 32}))["ARN"]
        boto3.client("sns", region_name=REGION).set_sms_attributes(attributes={"MonthlySpendLimit": "100"})
        boto3.client("apigateway", region_name=REGION).update_account(
            patchOperations=[
                {
                    "op": "replace",
                    "path": "/cloudwatchRoleArn",
                    "value": "arn:aws:iam::123456789012:role/apigw-logs",
                }
            ]
        )
        values = {
            "Stage": "prod",
            "VpcId": vpc,
            "SubnetIds": ",".join(subnets),
            "SecurityGroupIds": group,
            "PrivateRouteTableIds": table,
            "SubnetsHaveNat": "false",
            "WebhookSecretArn": webhook,
            "CreateDatabase": "true",
            "DatabaseEngineVersion": "8.0.mysql_aurora.3.10.6",
            "DbPort": "3306",
            "CreateApiGatewayLogRole": "false",
            "PaymentApiReservedConcurrency": "100",
            "PointsMaximumConcurrency": "10",
            "SmsMaximumConcurrency": "5",
            "MaxRelayConcurrency": "4",
            **dict.fromkeys(ENDPOINT_PARAMETERS.values(), "create"),
        }
        yield Account(ec2, vpc, subnets, table, group, values)


def test_a_ready_account_raises_nothing(account: Account) -> None:
    assert account.findings() == []


# --------------------------------------------------------------------------- the network


def test_a_vpc_made_through_the_api_has_dns_hostnames_off_and_is_told_how_to_turn_them_on(
    account: Account,
) -> None:
    account.ec2.modify_vpc_attribute(VpcId=account.vpc, EnableDnsHostnames={"Value": False})
    text = account.texts()
    assert f"BLOCKING VPC DNS: {account.vpc} has DNS hostnames off" in text, text
    assert f"modify-vpc-attribute --vpc-id {account.vpc} --enable-dns-hostnames" in text
    # With NAT and no interface endpoint at all, private DNS is not needed
    assert "VPC DNS" not in account.texts(
        SubnetsHaveNat="true",
        VpcEndpointSns="none",
        VpcEndpointSecretsManager="none",
        VpcEndpointLambda="none",
    )


def test_an_endpoint_the_vpc_already_has_is_to_be_used_not_created_again(account: Account) -> None:
    # Given a landing-zone VPC with an SNS endpoint with private DNS, letting HTTPS in from the functions
    endpoint_group = account.ec2.create_security_group(
        GroupName="vpce", Description="vpce", VpcId=account.vpc
    )
    account.ec2.authorize_security_group_ingress(
        GroupId=endpoint_group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "UserIdGroupPairs": [{"GroupId": account.group}],
            }
        ],
    )
    endpoint = account.endpoint("sns", PrivateDnsEnabled=True, SecurityGroupIds=[endpoint_group["GroupId"]])
    # Then creating another would fail the deploy, and preflight says to use it
    text = account.texts()
    assert (
        f"already has a sns endpoint with private DNS ({endpoint})" in text
        and "set VpcEndpointSns=existing" in text
    )
    # And with VpcEndpointSns=existing nothing is left to say
    assert account.findings(VpcEndpointSns="existing") == []


def test_an_existing_endpoint_that_lets_no_https_in_from_the_functions_is_reported(account: Account) -> None:
    closed = account.ec2.create_security_group(GroupName="closed", Description="closed", VpcId=account.vpc)
    endpoint = account.endpoint(
        "secretsmanager", PrivateDnsEnabled=True, SecurityGroupIds=[closed["GroupId"]]
    )
    text = account.texts(VpcEndpointSecretsManager="existing")
    assert f"{endpoint} (secretsmanager) lets no HTTPS in from the functions" in text, text


def test_existing_where_the_vpc_has_none_or_without_private_dns_says_what_to_set(account: Account) -> None:
    text = account.texts(VpcEndpointLambda="existing")
    assert (
        "VpcEndpointLambda=existing but the VPC has no lambda endpoint: set VpcEndpointLambda=create" in text
    )
    endpoint = account.endpoint("lambda", PrivateDnsEnabled=False)
    text = account.texts(VpcEndpointLambda="existing")
    assert f"{endpoint} (lambda) has private DNS off" in text and "--private-dns-enabled" in text, text
    # A relay that never fans out calls no Lambda: nothing to say about its endpoint
    assert "lambda" not in account.texts(VpcEndpointLambda="existing", MaxRelayConcurrency="1")


def test_gateway_endpoints_existing_or_created_against_the_subnets_route_tables(account: Account) -> None:
    other = account.ec2.create_route_table(VpcId=account.vpc)["RouteTable"]["RouteTableId"]
    endpoint = account.endpoint("s3", RouteTableIds=[other])
    # An S3 endpoint that does not serve the subnets' route table
    text = account.texts(VpcEndpointS3="existing")
    assert f"route table {account.table} has no route to the s3 endpoint {endpoint}" in text, text
    assert f"--add-route-table-ids {account.table}" in text
    # One that does: "create" would add a second to the same table, which fails
    account.ec2.modify_vpc_endpoint(VpcEndpointId=endpoint, AddRouteTableIds=[account.table])
    assert account.findings(VpcEndpointS3="existing") == []
    assert f"already routes s3 through {endpoint}" in account.texts()


def test_nat_claimed_is_checked_against_the_route_tables(account: Account) -> None:
    no_nat = {"SubnetsHaveNat": "true", **dict.fromkeys(ENDPOINT_PARAMETERS.values(), "none")}
    # No default route: SubnetsHaveNat=true would leave every call hanging
    assert (
        f"SubnetsHaveNat=true but {account.subnets[0]}'s route table {account.table} has no default route"
        in (account.texts(**no_nat))
    )
    # A NAT gateway's default route: fine
    public = account.ec2.create_subnet(VpcId=account.vpc, CidrBlock="10.20.9.0/24")["Subnet"]["SubnetId"]
    address = account.ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = account.ec2.create_nat_gateway(SubnetId=public, AllocationId=address)["NatGateway"]["NatGatewayId"]
    account.ec2.create_route(RouteTableId=account.table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    assert "routes" not in account.texts(**no_nat)
    # An internet gateway's: a public subnet, where a function reaches nothing
    account.ec2.delete_route(RouteTableId=account.table, DestinationCidrBlock="0.0.0.0/0")
    gateway = account.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    account.ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=account.vpc)
    account.ec2.create_route(RouteTableId=account.table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    assert "routes to an internet gateway: a public subnet" in account.texts(**no_nat)


def test_route_tables_left_out_of_private_route_table_ids_are_named(account: Account) -> None:
    other = account.ec2.create_route_table(VpcId=account.vpc)["RouteTable"]["RouteTableId"]
    text = account.texts(PrivateRouteTableIds=other)
    assert f"PrivateRouteTableIds lacks {account.table}, the route table of {account.subnets[0]}" in text, (
        text
    )


def test_subnets_in_one_zone_cannot_hold_the_created_database(account: Account) -> None:
    text = account.texts(SubnetIds=account.subnets[0])
    assert "BLOCKING subnets: SubnetIds are all in us-east-1a: the created database's subnet group" in text, (
        text
    )
    # With an existing database it is a note about the zone's outages
    assert "note subnets: SubnetIds are all in us-east-1a" in account.texts(
        SubnetIds=account.subnets[0], CreateDatabase="false"
    )


def test_two_subnets_in_one_zone_cannot_take_a_created_interface_endpoint(account: Account) -> None:
    third = account.ec2.create_subnet(
        VpcId=account.vpc, CidrBlock="10.20.3.0/24", AvailabilityZone="us-east-1a"
    )
    subnets = ",".join([*account.subnets, third["Subnet"]["SubnetId"]])
    assert "more than one subnet in us-east-1a: an interface endpoint takes one" in account.texts(
        SubnetIds=subnets
    )
    existing = dict.fromkeys(("VpcEndpointSns", "VpcEndpointSecretsManager", "VpcEndpointLambda"), "existing")
    assert "more than one subnet" not in account.texts(SubnetIds=subnets, **existing)


def test_security_groups_that_let_no_https_or_mysql_out_are_reported(account: Account) -> None:
    account.ec2.revoke_security_group_egress(
        GroupId=account.group,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    account.ec2.authorize_security_group_egress(
        GroupId=account.group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    text = account.texts()
    assert f"SecurityGroupIds ({account.group}) let no MySQL out on TCP 3306" in text, text
    assert "HTTPS" not in text
    # The port is DbPort's
    assert "let no MySQL out on TCP 3307" in account.texts(DbPort="3307")


# --------------------------------------------------------------------------- quotas, database, secrets


def test_a_new_accounts_concurrency_quota_cannot_reserve_the_default(account: Account) -> None:
    account.recorded = Recorded(quota=10, unreserved=10)
    text = account.texts()
    assert "quota is 10 with 10 unreserved: reserving PaymentApiReservedConcurrency=100" in text, text
    assert "set it to 0 or less" in text and "L-B99A9384" in text
    # The caps of the consumers and relays then share the rest: a note
    assert "note Lambda concurrency: the consumers and relays at their caps" in account.texts(
        PaymentApiReservedConcurrency="0"
    )


def test_an_update_counts_the_reservation_the_stack_already_holds(account: Account) -> None:
    # Given a quota of 120 of which the deployed payment API already reserves 100 (20 left unreserved)
    account.recorded = Recorded(quota=120, unreserved=20, reserved_by_stack=100)
    # Then keeping its 100 fits: 10 stay unreserved
    assert "Lambda concurrency" not in account.texts(PointsMaximumConcurrency="2", SmsMaximumConcurrency="2")
    # While a first deploy seeing 20 unreserved could not reserve 100
    account.recorded = Recorded(quota=120, unreserved=20)
    assert "set it to 10 or less" in account.texts()


def test_a_denied_call_is_reported_as_not_checked(account: Account) -> None:
    account.recorded = Recorded(lambda_error="AccessDeniedException")
    text = account.texts()
    assert (
        "note Lambda concurrency: not checked: GetAccountSettings answered AccessDeniedException" in text
    ), text


def test_an_engine_version_the_region_does_not_offer_is_refused(account: Account) -> None:
    account.recorded = Recorded(engine_versions=())
    text = account.texts()
    assert "Aurora MySQL 8.0.mysql_aurora.3.10.6 is not offered in this Region" in text, text
    # Not asked without a created database
    assert "Aurora" not in account.texts(CreateDatabase="false", DbSecretArn="")


def test_secrets_missing_of_the_wrong_shape_or_under_a_key_the_functions_may_not_use(
    account: Account,
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    kms = boto3.client("kms", region_name=REGION)
    key = kms.create_key(Description="secrets")["KeyMetadata"]["Arn"]
    database = secrets.create_secret(
        Name="database", SecretString=json.dumps({"username": "app", "pass": "hunter22"}), KmsKeyId=key
    )["ARN"]
    ca = secrets.create_secret(Name="ca", SecretString=CA_BUNDLE)["ARN"]
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:nowhere-AbCdEf"
    text = account.texts(
        CreateDatabase="false", DbSecretArn=database, DbCaBundleSecretArn=ca, DbAppUserSecretArn=missing
    )
    assert f"DbAppUserSecretArn: no secret {missing} in this Region" in text, text
    assert "DbSecretArn: " in text and "database secret must be JSON with username and password" in text
    assert (
        f"DbSecretArn is encrypted with the customer managed key {key}" in text and "SecretKmsKeyArns" in text
    )
    assert "DbCaBundleSecretArn" not in text
    # The value itself is never shown
    assert "hunter22" not in text
    # Once the key is listed and the secret fixed, nothing is left about them
    secrets.put_secret_value(SecretId=database, SecretString=json.dumps({"username": "app", "password": "x"}))
    assert "DbSecretArn" not in account.texts(
        CreateDatabase="false", DbSecretArn=database, SecretKmsKeyArns=key
    )


def test_a_webhook_secret_that_is_not_what_the_callback_reads_is_reported(account: Account) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    empty = secrets.create_secret(Name="webhook-empty", SecretString=json.dumps({"next": "x"}))["ARN"]
    assert "WebhookSecretArn: " in account.texts(WebhookSecretArn=empty)


# --------------------------------------------------------------------------- SMS and API Gateway


def test_the_sms_sandbox_and_the_default_spend_limit_block_prod_and_are_notes_in_dev(
    account: Account,
) -> None:
    account.recorded = Recorded(in_sandbox=True, origination_numbers=[])
    boto3.client("sns", region_name=REGION).set_sms_attributes(attributes={"MonthlySpendLimit": "1"})
    text = account.texts()
    assert "BLOCKING SMS: the account's SMS is in the sandbox" in text, text
    assert "BLOCKING SMS: the monthly SMS spend limit is 1 USD" in text
    assert "note SMS: the account has no origination number" in text
    dev = account.texts(Stage="dev")
    assert "note SMS: the account's SMS is in the sandbox" in dev and "BLOCKING SMS" not in dev


def test_the_api_gateway_logging_role_is_set_once_per_region(account: Account) -> None:
    # Already set in the Region: a second stack should not set it again
    assert (
        "already logs through arn:aws:iam::123456789012:role/apigw-logs: set CreateApiGatewayLogRole=false"
        in (account.texts(CreateApiGatewayLogRole="true"))
    )
    # Not set, and the stack would not set it either: the stage's access log fails the deploy
    boto3.client("apigateway", region_name=REGION).update_account(
        patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": ""}]
    )
    assert (
        "BLOCKING API Gateway: the Region's API Gateway account has no CloudWatch logging role"
        in account.texts()
    )


# --------------------------------------------------------------------------- the command


def test_preflight_aws_reports_the_account_next_to_the_proofs(
    account: Account, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from payment_outbox_dev import cli
    from payment_outbox_dev.checks import preflight

    monkeypatch.setattr(preflight.Clients, "of", classmethod(lambda cls, session: _clients(account.recorded)))
    overrides = [
        f"{k}={v}"
        for k, v in {
            **account.values,
            "OpsAlarmEmail": "ops@example.com",
            "OrderCallerPrincipalArns": "arn:aws:iam::123456789012:role/order-service",
            "OperatorPrincipalArns": "arn:aws:iam::123456789012:role/ops",
            "DatabaseDeletionProtection": "false",
        }.items()
    ]
    args = [
        "--config-env",
        "prod",
        "--config-file",
        str(ROOT / "samconfig.toml"),
        "--template-file",
        str(ROOT / "template.yaml"),
        "--aws",
        "--parameter-overrides",
        *overrides,
    ]
    code = cli.main(["preflight", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "The account (us-east-1) raised nothing that would fail" in out
    # And an account finding fails it, under its own heading
    account.ec2.modify_vpc_attribute(VpcId=account.vpc, EnableDnsHostnames={"Value": False})
    code = cli.main(["preflight", *args])
    out = capsys.readouterr().out
    assert code == 1 and "The account (us-east-1), VPC DNS: these would fail" in out, out
