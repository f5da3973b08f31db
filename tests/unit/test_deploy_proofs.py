"""What a real `sam deploy` would only find out in AWS, proven offline from the transformed template for
every parameter combination the template's Rules accept: CloudFormation's creation order, each VPC
function's path to the services it calls, alarm coverage, and the operator's path through IAM routes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from payment_outbox_dev.checks import template_proofs as proofs
from payment_outbox_dev.checks.template import load_template
from payment_outbox_dev.checks.template_proofs import Deployment
from tests.support import ROOT

pytestmark = pytest.mark.unit


#: Values for the parameters without defaults; every other one is enumerated or left at its default.
REQUIRED = {
    "WebhookSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook",
    "VpcId": "vpc-0123",
    "SubnetIds": "subnet-a,subnet-b",
    "SecurityGroupIds": "sg-0123",
    "DbHost": "db.internal",
    "DbSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
    "DbAppUserSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-app",
    "OrderCallerPrincipalArns": "arn:aws:iam::123456789012:role/order-service",
    "OpsAlarmEmail": "ops@example.com",
    "PrivateRouteTableIds": "rtb-a,rtb-b",
}


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def transformed(source: dict[str, Any]) -> dict[str, Any]:
    return proofs.transform_offline(source, {})


@pytest.fixture(scope="module")
def deployments(source: dict[str, Any], transformed: dict[str, Any]) -> list[Deployment]:
    found = list(proofs.deployable_combinations(source, transformed, REQUIRED))
    # Both database modes, each endpoint mode of each service, fan-out or not and NAT or not are among them.
    shapes = {(d.conditions["ShouldCreateDatabase"], d.has_nat()) for d in found}
    assert shapes == {(True, True), (True, False), (False, True), (False, False)}
    for service, parameter in proofs.ENDPOINT_PARAMETERS.items():
        modes = {(d.parameters[parameter], d.has_nat()) for d in found}
        assert modes >= {("create", False), ("existing", False), ("none", True)}, (service, modes)
    assert {d.conditions["ShouldFanOutRelays"] for d in found} == {True, False}
    assert any(not d.has_nat() and d.parameters["VpcEndpointLambda"] == "none" for d in found)
    # And every fence (who may act) both set and unset, in each database mode
    fences = {
        (
            d.conditions["ShouldCreateDatabase"],
            d.conditions["HasSecretKmsKeys"],
            d.conditions["HasOperatorPrincipals"],
        )
        for d in found
    }
    assert len(fences) == 8, fences
    modes = {
        (d.conditions["ShouldAuthenticateUsers"], d.conditions["ShouldCreateUserPool"]) for d in found
    } | {(d.conditions["ShouldFirewallCallback"], d.conditions["ShouldAllowListProvider"]) for d in found}
    assert len(modes) == 3, modes
    # And the covering set keeps the run bounded
    assert len(found) < 1500, len(found)
    return found


def _deployment(source: dict[str, Any], transformed: dict[str, Any], **given: str) -> Deployment:
    return Deployment.of(source, transformed, {**REQUIRED, **given})


def _report(deployments: list[Deployment], check: Any) -> str:
    problems: dict[str, list[str]] = {}
    for deployment in deployments:
        for problem in check(deployment):
            problems.setdefault(problem, []).append(
                ", ".join(f"{k}={v}" for k, v in sorted(deployment.parameters.items()) if k not in REQUIRED)
            )
    return "\n".join(
        f"{p}\n    e.g. with {w[0]} ({len(w)} combinations)" for p, w in sorted(problems.items())
    )


# --------------------------------------------------------------------------- deploy order


def test_the_migration_runs_after_all_it_needs_and_before_every_database_function(
    deployments: list[Deployment],
) -> None:
    # Given every accepted parameter combination
    # When CloudFormation's dependency graph is built from Ref, GetAtt, Sub and DependsOn
    report = _report(deployments, proofs.deploy_order_problems)
    # Then the migration waits for its log group, the database behind the proxy and its endpoints,
    # and every function that uses the database waits for the migration
    assert not report, report


def test_the_deploy_order_proof_sees_a_migration_that_would_outrun_the_database(
    source: dict[str, Any],
) -> None:
    # Given the template without the migration's references to what it needs
    broken = copy.deepcopy(source)
    del broken["Resources"]["SchemaMigration"]["Properties"]["RunsAfter"]
    transformed = proofs.transform_offline(broken, {})
    # When the proof runs with a created database and endpoints
    problems = proofs.deploy_order_problems(_deployment(broken, transformed, CreateDatabase="true"))
    # Then it names the instance, the proxy target group and the endpoints
    text = "\n".join(problems)
    for missing in (
        "DatabaseInstance",
        "DatabaseProxyTargetGroup",
        "SecretsManagerEndpoint",
        "S3Endpoint",
    ):
        assert f"before {missing} " in text, text


def test_every_function_logs_to_a_group_created_before_it_and_deleted_after_it(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given the template: each function names its log group through LoggingConfig
    deployment = _deployment(source, transformed)
    for function_id in deployment.functions:
        log_group = deployment.log_group_of(function_id)
        assert log_group is not None, function_id
        assert log_group in deployment.created_before(function_id), function_id
    assert proofs.log_group_problems(deployment) == []
    # When a log group is named after its function instead (the group follows the function, so an
    # invocation during a delete recreates it), or a function has no LoggingConfig
    broken = copy.deepcopy(source)
    relay = broken["Resources"]["OutboxRelayFunction"]["Properties"]
    del relay["LoggingConfig"]
    broken["Resources"]["OutboxRelayLogGroup"]["Properties"]["LogGroupName"] = {
        "Fn::Sub": "/aws/lambda/${OutboxRelayFunction}"
    }
    janitor = broken["Resources"]["OutboxJanitorLogGroup"]["Properties"]
    janitor["LogGroupName"] = {"Fn::Sub": "/aws/lambda/${OutboxJanitorFunction}"}
    problems = proofs.log_group_problems(_deployment(broken, proofs.transform_offline(broken, {})))
    # Then the proof names both
    text = "\n".join(problems)
    assert "OutboxRelayFunction logs to a group Lambda creates" in text, text
    assert "OutboxJanitorLogGroup is named after OutboxJanitorFunction" in text, text


def test_cloudformation_gives_up_on_the_migration_before_its_default_hour(source: dict[str, Any]) -> None:
    # Given the migration custom resource and its function
    migration = source["Resources"]["SchemaMigration"]["Properties"]
    function_timeout = source["Resources"]["SchemaMigratorFunction"]["Properties"]["Timeout"]
    # Then CloudFormation's wait is bounded: longer than the function may run, far below an hour
    assert function_timeout < int(migration["ServiceTimeout"]) <= 600


def test_a_failed_first_create_can_roll_the_database_back(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given a first deploy that creates the database, with default protection
    deployment = _deployment(source, transformed, CreateDatabase="true")
    cluster = deployment.properties("DatabaseCluster")
    # Then the cluster can be deleted by a rollback, and its data is snapshotted on delete
    assert cluster["DeletionProtection"] is False
    assert deployment.resources["DatabaseCluster"]["DeletionPolicy"] == "Snapshot"
    # And an operator turns protection on explicitly
    protected = _deployment(source, transformed, CreateDatabase="true", DatabaseDeletionProtection="true")
    assert protected.properties("DatabaseCluster")["DeletionProtection"] is True


# --------------------------------------------------------------------------- network reach


def test_every_vpc_function_reaches_every_service_it_calls(deployments: list[Deployment]) -> None:
    # Given every accepted parameter combination
    # When each VPC function's services (from its role, plus S3 for a custom resource's answer) are
    # matched with the endpoints created in the same combination, or NAT
    report = _report(deployments, proofs.network_problems)
    # Then each one is reachable
    assert not report, report


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"VpcEndpointSns": "none"}, "set VpcEndpointSns=create"),
        ({"VpcEndpointSecretsManager": "none"}, "set VpcEndpointSecretsManager=create"),
        ({"VpcEndpointS3": "none"}, "set VpcEndpointS3=create"),
        ({"VpcEndpointDynamoDb": "none"}, "set VpcEndpointDynamoDb=create"),
        ({"VpcEndpointSqs": "none"}, "set VpcEndpointSqs=create"),
        ({"VpcEndpointLambda": "none", "MaxRelayConcurrency": "4"}, "set VpcEndpointLambda=create"),
    ],
)
def test_a_combination_that_cannot_reach_aws_is_refused_saying_what_to_set(
    source: dict[str, Any], transformed: dict[str, Any], given: dict[str, str], says: str
) -> None:
    # Given subnets without NAT and a service without an endpoint, created or existing
    values = proofs.parameter_values(source, {**REQUIRED, "SubnetsHaveNat": "false", **given})
    assert proofs.network_problems(Deployment(source, transformed, values))
    # When the template's Rules are evaluated
    refused = " ".join(proofs.refusals(source, values))
    # Then the deploy is refused before anything is created, saying what to set
    assert says in refused and "SubnetsHaveNat=true" in refused, refused


def test_gateway_endpoints_the_stack_creates_need_route_tables(source: dict[str, Any]) -> None:
    values = proofs.parameter_values(source, {**REQUIRED, "PrivateRouteTableIds": ""})
    refused = " ".join(proofs.refusals(source, values))
    assert "set PrivateRouteTableIds" in refused, refused
    # Existing gateway endpoints need none
    existing = {"VpcEndpointS3": "existing", "VpcEndpointDynamoDb": "existing"}
    assert proofs.refusals(source, {**values, **existing}) == []


@pytest.mark.parametrize("parameter", sorted(proofs.ENDPOINT_PARAMETERS.values()))
def test_an_endpoint_the_vpc_already_has_is_accepted_and_reaches_its_service(
    source: dict[str, Any], transformed: dict[str, Any], parameter: str
) -> None:
    # Given subnets without NAT whose VPC already has this service's endpoint (a landing zone's)
    values = proofs.parameter_values(source, {**REQUIRED, "SubnetsHaveNat": "false", parameter: "existing"})
    deployment = Deployment(source, transformed, values)
    # Then the stack creates none for it, the Rules accept it and every function still reaches it
    assert proofs.refusals(source, values) == []
    service_endpoint = parameter.removeprefix("VpcEndpoint") + "Endpoint"  # VpcEndpointSns: SnsEndpoint
    assert service_endpoint in _deployment(source, transformed).resources
    assert service_endpoint not in deployment.resources
    assert proofs.network_problems(deployment) == []
    # While "none" there would leave a function without a path
    assert proofs.network_problems(Deployment(source, transformed, {**values, parameter: "none"}))


def test_a_relay_that_never_fans_out_needs_no_lambda_endpoint(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    values = proofs.parameter_values(
        source,
        {**REQUIRED, "SubnetsHaveNat": "false", "VpcEndpointLambda": "none", "MaxRelayConcurrency": "1"},
    )
    assert proofs.refusals(source, values) == []
    deployment = Deployment(source, transformed, values)
    assert "lambda" not in deployment.services_called("OutboxRelayFunction")
    assert proofs.network_problems(deployment) == []
    # And with "create" the stack creates no Lambda endpoint nobody would use
    created = Deployment(source, transformed, {**values, "VpcEndpointLambda": "create"})
    assert "LambdaEndpoint" not in created.resources


def test_subnets_with_nat_need_no_endpoints(source: dict[str, Any], transformed: dict[str, Any]) -> None:
    values = proofs.parameter_values(
        source,
        {
            **REQUIRED,
            "SubnetsHaveNat": "true",
            "PrivateRouteTableIds": "",
            **dict.fromkeys(proofs.ENDPOINT_PARAMETERS.values(), "none"),
        },
    )
    assert proofs.refusals(source, values) == []
    assert proofs.network_problems(Deployment(source, transformed, values)) == []


# --------------------------------------------------------------------------- operators and alarms


def test_iam_routes_need_only_execute_api_invoke(deployments: list[Deployment]) -> None:
    # Given the transformed API (SAM's default for AWS_IAM invokes with the caller's credentials)
    # When each IAM-authorised route's integration is read
    report = _report(deployments[:1], proofs.operator_path_problems)
    # Then API Gateway invokes with its own permission, so callers need only execute-api:Invoke
    assert not report, report


def test_every_function_queue_api_and_database_is_alarmed_and_alarms_reach_someone(
    deployments: list[Deployment],
) -> None:
    # Given every accepted combination (functions, queues, DLQs, the API and the database enumerated
    # from the template, so ones added later are covered too)
    report = _report(deployments, proofs.alarm_problems)
    # Then each is covered by an alarm with an action, sums survive a missing datapoint, and a
    # scheduled function that stops running alarms
    assert not report, report


def test_alarms_reaching_nobody_are_refused(source: dict[str, Any]) -> None:
    values = proofs.parameter_values(source, {**REQUIRED, "OpsAlarmEmail": ""})
    refused = " ".join(proofs.refusals(source, values))
    assert "OpsAlarmEmail" in refused, refused


def test_every_secret_a_function_reads_is_granted(deployments: list[Deployment]) -> None:
    report = _report(deployments, proofs.grant_problems)
    assert not report, report


def test_the_sms_consumer_publishes_to_phone_numbers_but_never_to_a_topic(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given the SMS consumer's role
    deployment = _deployment(source, transformed)
    statements = deployment.role_statements("SmsConsumerFunction")
    publish = [s for s in statements if "sns:Publish" in proofs.as_list(s["Action"])]
    # Then sns:Publish is allowed on "*" (phone numbers have no ARN) and denied on every topic ARN
    assert any(s["Effect"] == "Allow" and s["Resource"] == "*" for s in publish)
    denied = [s["Resource"] for s in publish if s["Effect"] == "Deny"]
    assert denied == [{"Fn::Sub": "arn:${AWS::Partition}:sns:*:*:*"}], denied


def test_the_open_callback_is_logged_throttled_and_capped(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    deployment = _deployment(source, transformed)
    stages = deployment.of_type("AWS::ApiGateway::Stage")
    # Then there is exactly one stage, named by the Stage parameter (no stray "Stage" stage)
    assert len(stages) == 1
    for deployment_id in deployment.of_type("AWS::ApiGateway::Deployment"):
        assert "StageName" not in deployment.properties(deployment_id)
    stage = next(iter(stages.values()))["Properties"]
    # And it writes access logs and throttles every route
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["PaymentApiAccessLogGroup", "Arn"]}
    assert json.loads(stage["AccessLogSetting"]["Format"])["status"] == "$context.status"
    (setting, callback) = stage["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    # And the callback has a throttle of its own
    assert (callback["ResourcePath"], callback["HttpMethod"]) == ("/~1payments~1notify", "POST")
    assert callback["ThrottlingRateLimit"] == {"Ref": "CallbackThrottlingRateLimit"}
    assert setting["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    # And the callback's function has concurrency reserved
    assert deployment.properties("PaymentApiFunction")["ReservedConcurrentExecutions"] == {
        "Ref": "PaymentApiReservedConcurrency"
    }
    # And the access log group comes after the account's API Gateway logging role when the stack sets it
    assert "ApiGatewayAccount" in deployment.created_before(next(iter(stages))), (
        "the stage could be created before API Gateway may write its logs"
    )


def test_the_sms_consumer_is_paced(source: dict[str, Any], transformed: dict[str, Any]) -> None:
    deployment = _deployment(source, transformed)
    mappings = [
        deployment.properties(i)
        for i in deployment.of_type("AWS::Lambda::EventSourceMapping")
        if deployment.properties(i)["FunctionName"] == {"Ref": "SmsConsumerFunction"}
    ]
    paced = [{"MaximumConcurrency": {"Ref": "SmsMaximumConcurrency"}}]
    assert [m["ScalingConfig"] for m in mappings] == paced


def test_a_points_backlog_cannot_take_the_accounts_unreserved_concurrency(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    deployment = _deployment(source, transformed)
    mappings = [
        deployment.properties(i)
        for i in deployment.of_type("AWS::Lambda::EventSourceMapping")
        if deployment.properties(i)["FunctionName"] == {"Ref": "PointsConsumerFunction"}
    ]
    assert [m.get("ScalingConfig") for m in mappings] == [
        {"MaximumConcurrency": {"Ref": "PointsMaximumConcurrency"}}
    ]


def test_the_regions_api_gateway_logging_role_outlives_the_stack_that_set_it(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    deployment = _deployment(source, transformed, CreateApiGatewayLogRole="true")
    for logical_id in ("ApiGatewayLogRole", "ApiGatewayAccount"):
        resource = deployment.resources[logical_id]
        kept = (resource["DeletionPolicy"], resource["UpdateReplacePolicy"])
        assert kept == ("Retain", "Retain"), logical_id
    # And a second environment leaves it alone
    second = _deployment(source, transformed, CreateApiGatewayLogRole="false")
    assert "ApiGatewayAccount" not in second.resources


def test_two_stacks_never_share_a_dashboard(source: dict[str, Any], transformed: dict[str, Any]) -> None:
    name = _deployment(source, transformed).properties("PipelineDashboard")["DashboardName"]
    assert "${AWS::StackName}" in name["Fn::Sub"], name


def test_the_created_database_is_reached_on_the_proxys_port_only(source: dict[str, Any]) -> None:
    created = proofs.parameter_values(source, {**REQUIRED, "CreateDatabase": "true", "DbPort": "3307"})
    assert any("leave DbPort at 3306" in r for r in proofs.refusals(source, created))
    existing = proofs.parameter_values(source, {**REQUIRED, "CreateDatabase": "false", "DbPort": "3307"})
    assert not any("DbPort" in r for r in proofs.refusals(source, existing))


def test_aurora_stays_on_its_lts_version_with_logs_and_insights_by_parameter(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given a created database with the defaults
    default = _deployment(source, transformed, CreateDatabase="true", DatabaseFailoverReplica="true")
    # Then no instance upgrades its minor version on its own, nothing is exported, insights are off
    for instance in ("DatabaseInstance", "DatabaseReplicaInstance"):
        properties = default.properties(instance)
        assert properties["AutoMinorVersionUpgrade"] == {"Ref": "DatabaseAutoMinorVersionUpgrade"}
        assert properties["EnablePerformanceInsights"] == {"Ref": "DatabasePerformanceInsights"}
    assert default.parameters["DatabaseAutoMinorVersionUpgrade"] == "false"
    assert "EnableCloudwatchLogsExports" not in default.properties("DatabaseCluster")
    # And log exports follow the parameter, within the logs Aurora MySQL has
    exported = _deployment(source, transformed, CreateDatabase="true", DatabaseLogExports="error,slowquery")
    exports = exported.properties("DatabaseCluster")["EnableCloudwatchLogsExports"]
    assert exports == {"Ref": "DatabaseLogExports"}
    unknown = proofs.parameter_values(source, {**REQUIRED, "DatabaseLogExports": "error,everything"})
    assert any("DatabaseLogExports lists Aurora MySQL logs" in r for r in proofs.refusals(source, unknown))


def test_both_environments_set_their_concurrency_and_prod_is_protected() -> None:
    from payment_outbox_dev.checks.preflight import overrides_from_samconfig

    dev = overrides_from_samconfig(ROOT / "samconfig.toml", "default")
    prod = overrides_from_samconfig(ROOT / "samconfig.toml", "prod")
    for environment in (dev, prod):
        for name in ("PaymentApiReservedConcurrency", "PointsMaximumConcurrency", "SmsMaximumConcurrency"):
            assert name in environment, name
    # A new account (quota 10) can deploy dev: nothing reserved
    assert dev["PaymentApiReservedConcurrency"] == "0"
    assert prod["DatabaseDeletionProtection"] == "true"
    # The Region's API Gateway logging role is set by one environment only
    assert dev.get("CreateApiGatewayLogRole", "true") == "true" and prod["CreateApiGatewayLogRole"] == "false"


def test_prod_can_have_a_failover_replica_and_a_current_engine(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    from cfnlint.data.schemas.extensions import aws_rds_dbcluster

    with_replica = _deployment(source, transformed, CreateDatabase="true", DatabaseFailoverReplica="true")
    instances = with_replica.of_type("AWS::RDS::DBInstance")
    assert len(instances) == 2
    assert sorted(with_replica.properties(i)["PromotionTier"] for i in instances) == [0, 1]
    deprecated = json.loads(
        (Path(aws_rds_dbcluster.__file__).parent / "engine_version_deprecated.json").read_text()
    )
    version = source["Parameters"]["DatabaseEngineVersion"]["Default"]
    assert version not in json.dumps(deprecated)
    assert version.startswith("8.0.mysql_aurora.3.") and int(version.split(".")[4]) >= 10


def test_a_created_database_is_reached_over_tls_only(source: dict[str, Any]) -> None:
    values = proofs.parameter_values(source, {**REQUIRED, "CreateDatabase": "true", "DbRequireTls": "false"})
    assert any("DbRequireTls=true" in r for r in proofs.refusals(source, values))


def test_the_functions_connect_as_the_application_user_and_only_the_migrator_as_master(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given a deployment that creates the database
    deployment = _deployment(source, transformed, CreateDatabase="true")
    master = {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]}
    application = {"Ref": "DatabaseAppUserSecret"}
    # Then every database function but the migrator connects with the application user's secret
    for function_id in deployment.functions:
        if not deployment.uses_database(function_id):
            continue
        environment = deployment.environment(function_id)
        if deployment.custom_resources_of(function_id):
            assert environment["DB_SECRET_ARN"] == master
            assert environment["DB_APP_USER_SECRET_ARN"] == application
        else:
            assert environment["DB_SECRET_ARN"] == application, function_id
    # And the proxy accepts that user
    secrets = [auth["SecretArn"] for auth in deployment.properties("DatabaseProxy")["Auth"]]
    assert application in secrets


# --------------------------------------------------------------------------- who may act


def test_no_unnamed_principal_can_publish_or_send_an_envelope(deployments: list[Deployment]) -> None:
    # Given every accepted combination (operators named or not)
    # When the topic's and the queues' resource policies are evaluated for each function's role, an
    # outsider role of the account and each named operator
    report = _report(deployments, proofs.envelope_problems)
    # Then only the payment API's and the relay's roles may publish, only the topic and the named
    # operators may send to the queues, and the topic's deliveries still arrive
    assert not report, report


def _without_resource(source: dict[str, Any], logical_id: str) -> dict[str, Any]:
    broken = copy.deepcopy(source)
    del broken["Resources"][logical_id]
    return broken


def test_the_envelope_proof_sees_an_open_topic_and_an_open_queue(source: dict[str, Any]) -> None:
    # Given the template without the topic's policy, and then without the points queue's Deny
    for missing, says in (
        ("OrderEventsTopicPolicy", f"{proofs.OUTSIDER} could publish envelopes to OrderEventsTopic"),
        ("OrderEventsTopicPolicy", "PointsConsumerFunction's role could publish envelopes"),
        ("PointsDeadLetterQueuePolicy", "PointsDeadLetterQueue ("),
    ):
        broken = _without_resource(source, missing)
        transformed = proofs.transform_offline(broken, {})
        # When the proof runs
        problems = "\n".join(proofs.envelope_problems(_deployment(broken, transformed)))
        # Then it names who could forge an envelope
        assert says in problems, problems
    broken = copy.deepcopy(source)
    statements = broken["Resources"]["PointsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    statements[:] = [s for s in statements if s["Effect"] != "Deny"]
    problems = "\n".join(proofs.envelope_problems(_deployment(broken, proofs.transform_offline(broken, {}))))
    assert "could send forged envelopes to PointsQueue" in problems, problems


def test_operators_may_redrive_dead_letters_and_the_topic_still_delivers(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Given named operators
    operator = "arn:aws:iam::123456789012:role/ops"
    deployment = _deployment(source, transformed, OperatorPrincipalArns=f"{operator},arn:aws:iam::1:role/x-*")
    for queue in ("PointsQueue", "PointsDeadLetterQueue", "SmsQueue", "SmsDeadLetterQueue"):
        statements = proofs.policy_statements(deployment, "AWS::SQS::QueuePolicy", "Queues", {"Ref": queue})
        # Then an operator (also one a wildcard names) may send, an outsider may not
        assert not proofs.denies(deployment, statements, "sqs:SendMessage", proofs.Caller(operator))
        wildcard = proofs.Caller("arn:aws:iam::1:role/x-oncall")
        assert not proofs.denies(deployment, statements, "sqs:SendMessage", wildcard)
        assert proofs.denies(deployment, statements, "sqs:SendMessage", proofs.Caller(proofs.OUTSIDER))
    # And operators may not publish envelopes
    topic = proofs.policy_statements(
        deployment, "AWS::SNS::TopicPolicy", "Topics", {"Ref": "OrderEventsTopic"}
    )
    assert proofs.denies(deployment, topic, "sns:Publish", proofs.Caller(operator))
    # And without operators nobody may send, not even by a wildcard
    closed = _deployment(source, transformed)
    statements = proofs.policy_statements(closed, "AWS::SQS::QueuePolicy", "Queues", {"Ref": "PointsQueue"})
    assert proofs.denies(closed, statements, "sqs:SendMessage", proofs.Caller(operator))


def test_functions_decrypt_secrets_with_exactly_the_named_keys_through_secrets_manager(
    deployments: list[Deployment],
) -> None:
    # Given every accepted combination, with and without customer managed keys
    report = _report(deployments, proofs.secret_key_problems)
    # Then each function that reads a secret may decrypt with those keys, via Secrets Manager only,
    # and no function holds a KMS grant when none is given
    assert not report, report


def test_the_key_proof_sees_a_function_that_could_not_decrypt_its_secret(source: dict[str, Any]) -> None:
    # Given the template with the relay's decrypt grant left out
    broken = copy.deepcopy(source)
    policies = broken["Resources"]["OutboxRelayFunction"]["Properties"]["Policies"]
    policies[:] = [p for p in policies if "HasSecretKmsKeys" not in json.dumps(p)]
    transformed = proofs.transform_offline(broken, {})
    keys = "arn:aws:kms:us-east-1:123456789012:key/secrets"
    # When the proof runs with a customer managed key
    problems = proofs.secret_key_problems(_deployment(broken, transformed, SecretKmsKeyArns=keys))
    # Then it names the relay
    assert problems == ["OutboxRelayFunction reads secrets but may not decrypt them with SecretKmsKeyArns"]
    # And the grant itself is kms:Decrypt on exactly the given keys, via Secrets Manager
    deployment = _deployment(source, proofs.transform_offline(source, {}), SecretKmsKeyArns=keys)
    (grant,) = [
        s
        for s in deployment.role_statements("OutboxRelayFunction")
        if s.get("Sid") == "DecryptSecretsThroughSecretsManager"
    ]
    assert proofs.values_of(deployment, grant["Resource"]) == [keys]
    assert grant["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}
    }
    # And it is no service the function calls itself (no KMS endpoint needed)
    assert "kms" not in deployment.services_called("OutboxRelayFunction")


def test_no_function_but_the_migrator_connects_with_the_migrators_credentials(
    deployments: list[Deployment],
) -> None:
    report = _report(deployments, proofs.database_user_problems)
    assert not report, report


def test_an_existing_database_needs_an_application_user_of_its_own(source: dict[str, Any]) -> None:
    # Given an existing database without an application user's secret, or with the migrator's own
    for given in ({"DbAppUserSecretArn": ""}, {"DbAppUserSecretArn": REQUIRED["DbSecretArn"]}):
        values = proofs.parameter_values(source, {**REQUIRED, "CreateDatabase": "false", **given})
        # When the Rules are evaluated
        refused = " ".join(proofs.refusals(source, values))
        # Then the deploy is refused, saying why
        assert "DbAppUserSecretArn" in refused and "migrator" in refused, refused


def test_each_route_takes_only_the_callers_the_parameters_name(deployments: list[Deployment]) -> None:
    # Given every accepted combination: CallerIdentity iam or cognito (a pool given or created),
    # callers and operators named or not
    # When each route's authorizer is read and the API's resource policy evaluated for the named
    # principals, an unnamed one and an anonymous caller
    report = _report(deployments, proofs.caller_problems)
    # Then admin routes let only operators through, order routes only the named callers (iam) or the
    # pool's tokens (cognito), and the callback stays open to the provider
    assert not report, report


def _route_reaches(deployment: Deployment, method: str, path: str, principal: str | None) -> bool:
    policy = deployment.properties("PaymentApi")["Body"]["x-amazon-apigateway-policy"]["Statement"]
    return proofs.reaches(
        deployment, policy, proofs.Caller(principal_arn=principal), f"execute-api:/dev/{method}{path}"
    )


def test_operators_and_order_callers_are_fenced_apart(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    operator, service = "arn:aws:iam::123456789012:role/ops", REQUIRED["OrderCallerPrincipalArns"]
    deployment = _deployment(source, transformed, OperatorPrincipalArns=operator)
    # Then an operator reaches the admin routes but not the order routes, the order service the
    # order routes but not the admin routes, and an unsigned request neither
    assert _route_reaches(deployment, "GET", "/admin/stats", operator)
    assert not _route_reaches(deployment, "GET", "/admin/stats", service)
    assert not _route_reaches(deployment, "POST", "/orders", operator)
    assert _route_reaches(deployment, "POST", "/orders", service)
    assert _route_reaches(deployment, "GET", "/orders/7", service)
    assert not _route_reaches(deployment, "GET", "/admin/stats", None)
    # And the callback is reached unsigned
    assert _route_reaches(deployment, "POST", "/payments/notify", None)
    # And with no operator named, nobody reaches the admin routes
    closed = _deployment(source, transformed)
    assert not _route_reaches(closed, "GET", "/admin/orders/7/trace", operator)


def test_cognito_mode_authorises_order_routes_with_the_user_pool(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    given = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_abc"
    for pool, expected, created in (
        ("", {"Fn::GetAtt": ["OrderUserPool", "Arn"]}, True),
        (given, {"Ref": "CognitoUserPoolArn"}, False),
    ):
        # Given cognito mode with a pool the stack creates, then an existing one
        deployment = _deployment(source, transformed, CallerIdentity="cognito", CognitoUserPoolArn=pool)
        routes = proofs.api_routes(deployment, "PaymentApi")
        for route in (("POST", "/orders"), ("GET", "/orders/{orderId}")):
            scheme = proofs.route_security(deployment, "PaymentApi", routes[route])
            # Then the order routes take that pool's tokens
            assert scheme is not None and scheme["x-amazon-apigateway-authtype"] == "cognito_user_pools"
            assert scheme["x-amazon-apigateway-authorizer"]["providerARNs"] == [expected]
        # And the admin routes still take SigV4 only
        admin = proofs.route_security(deployment, "PaymentApi", routes[("GET", "/admin/stats")])
        assert admin is not None and admin["x-amazon-apigateway-authtype"] == "awsSigv4"
        # And the pool and its client exist only when the stack makes them
        assert ("OrderUserPool" in deployment.resources) is created
        assert ("OrderUserPoolClient" in deployment.resources) is created
    # And in cognito mode the order callers need not be named
    values = proofs.parameter_values(
        source, {**REQUIRED, "CallerIdentity": "cognito", "OrderCallerPrincipalArns": ""}
    )
    assert proofs.refusals(source, values) == []


def test_iam_mode_refuses_a_deploy_without_named_order_callers(source: dict[str, Any]) -> None:
    values = proofs.parameter_values(source, {**REQUIRED, "OrderCallerPrincipalArns": ""})
    refused = " ".join(proofs.refusals(source, values))
    assert "OrderCallerPrincipalArns" in refused, refused


def test_the_callers_proof_sees_open_admin_routes_and_a_wrong_authorizer(source: dict[str, Any]) -> None:
    # Given the template without its operators' fence, and with the order routes always on SigV4
    broken = copy.deepcopy(source)
    body = broken["Resources"]["PaymentApi"]["Properties"]["DefinitionBody"]
    statements = body["x-amazon-apigateway-policy"]["Statement"]
    statements[:] = [s for s in statements if s.get("Sid") != "OnlyOperatorsReachAdmin"]
    for methods in body["paths"].values():
        for operation in methods.values():
            operation["security"] = [{"AWS_IAM": []}]
    transformed = proofs.transform_offline(broken, {})
    # When the proof runs in each mode
    iam = "\n".join(proofs.caller_problems(_deployment(broken, transformed)))
    cognito = "\n".join(proofs.caller_problems(_deployment(broken, transformed, CallerIdentity="cognito")))
    # Then it names the outsider reaching the admin routes, and the order routes not on the user pool
    assert f"GET /admin/stats lets {proofs.OUTSIDER} through" in iam, iam
    assert "POST /orders is authorised by awsSigv4, not cognito_user_pools" in cognito, cognito
    # And it sees a payment API that is not told the mode its routes are authorised by
    untold = copy.deepcopy(source)
    del untold["Resources"]["PaymentApiFunction"]["Properties"]["Environment"]["Variables"]["CALLER_IDENTITY"]
    found = proofs.caller_problems(_deployment(untold, proofs.transform_offline(untold, {})))
    assert "POST /orders: PaymentApiFunction is not told CALLER_IDENTITY from CallerIdentity" in found, found


def test_the_callback_is_throttled_on_its_own_and_firewalled_on_request(
    deployments: list[Deployment],
) -> None:
    # Given every accepted combination, with the firewall off, on, and on with the provider's addresses
    report = _report(deployments, proofs.callback_problems)
    # Then the callback has its own throttle, and the web ACL its rate rule and address fence
    assert not report, report


def test_the_firewall_is_on_the_stage_with_its_rules(
    source: dict[str, Any], transformed: dict[str, Any]
) -> None:
    cidrs = "203.0.113.0/24,198.51.100.7/32"
    deployment = _deployment(source, transformed, CallbackFirewall="true", CallbackProviderCidrs=cidrs)
    (association,) = deployment.of_type("AWS::WAFv2::WebACLAssociation")
    arn = deployment.properties(association)["ResourceArn"]
    # Then the web ACL is associated with the API's stage, after the stage exists
    assert "PaymentApiStage" in deployment.created_before(association)
    assert "/restapis/${PaymentApi}/stages/${StageName}" in arn["Fn::Sub"][0]
    # And its addresses are the provider's
    (ip_set,) = deployment.of_type("AWS::WAFv2::IPSet")
    assert proofs.values_of(deployment, deployment.properties(ip_set)["Addresses"]) == cidrs.split(",")
    # And the proof sees a firewall without its rate rule
    broken = copy.deepcopy(source)
    rules = broken["Resources"]["CallbackWebAcl"]["Properties"]["Rules"]
    rules[:] = [r for r in rules if not (isinstance(r, dict) and r.get("Name") == "CallbackRateLimit")]
    problems = proofs.callback_problems(
        _deployment(broken, proofs.transform_offline(broken, {}), CallbackFirewall="true")
    )
    assert problems == ["the web ACL has no rate-based rule blocking a flood of callbacks"]
    # And a firewall whose decisions nobody can read
    unlogged = _without_resource(source, "CallbackWebAclLogging")
    problems = proofs.callback_problems(
        _deployment(unlogged, proofs.transform_offline(unlogged, {}), CallbackFirewall="true")
    )
    assert problems == ["CallbackWebAcl's decisions are not logged"]


# --------------------------------------------------------------------------- delivery past SNS


def test_every_subscription_has_a_dead_letter_queue_the_topic_can_write_and_an_alarm_watches(
    deployments: list[Deployment],
) -> None:
    # Given every accepted combination (standard and FIFO delivery among them)
    assert {d.conditions["ShouldDeliverInOrder"] for d in deployments} == {True, False}
    # When the subscriptions are read
    report = _report(deployments, proofs.subscription_problems)
    # Then each SNS-to-SQS subscription has its DLQ, FIFO when its queue is, encrypted as its queue,
    # writable by the topic
    assert not report, report
    # And each of those DLQs is alarmed (alarm_problems counts a subscription's DLQ as a dead-letter queue)
    assert not _report(deployments, proofs.alarm_problems)


def test_the_subscription_proof_sees_a_missing_dlq_a_mismatched_one_a_closed_one_and_no_alarm(
    source: dict[str, Any],
) -> None:
    def problems_of(broken: dict[str, Any], check: Any, **given: str) -> str:
        return "\n".join(check(_deployment(broken, proofs.transform_offline(broken, {}), **given)))

    # Given a subscription without its RedrivePolicy / Then the proof names it
    broken = copy.deepcopy(source)
    del broken["Resources"]["PointsSubscription"]["Properties"]["RedrivePolicy"]
    assert "PointsSubscription has no dead-letter queue" in problems_of(broken, proofs.subscription_problems)
    # Given a DLQ that is standard while its queue is FIFO, and unencrypted
    broken = copy.deepcopy(source)
    dlq = broken["Resources"]["SmsSubscriptionDeadLetterQueue"]["Properties"]
    for key in (
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
        "QueueName",
    ):
        dlq.pop(key)
    dlq["SqsManagedSseEnabled"] = False
    found = problems_of(broken, proofs.subscription_problems, OrderedDelivery="true")
    assert "SmsSubscriptionDeadLetterQueue must be FIFO exactly when its queue is" in found, found
    assert "SmsSubscriptionDeadLetterQueue is not encrypted as its queue is" in found, found
    # Given a DLQ whose policy does not let the topic send
    broken = _without_resource(source, "PointsSubscriptionDeadLetterQueuePolicy")
    broken["Resources"]["PointsSubscriptionDeadLetterQueuePolicy"] = copy.deepcopy(
        source["Resources"]["PointsDeadLetterQueuePolicy"]
    )
    policy = broken["Resources"]["PointsSubscriptionDeadLetterQueuePolicy"]["Properties"]
    policy["Queues"] = [{"Ref": "PointsSubscriptionDeadLetterQueue"}]
    found = problems_of(broken, proofs.subscription_problems)
    assert "cannot move undeliverable messages to PointsSubscriptionDeadLetterQueue" in found, found
    # Given a subscription DLQ no alarm watches
    broken = _without_resource(source, "SmsSubscriptionDeadLetterAlarm")
    found = problems_of(broken, proofs.alarm_problems)
    assert "dead-letter queue SmsSubscriptionDeadLetterQueue" in found, found


def test_a_changed_fence_parameter_reaches_the_live_stage(source: dict[str, Any]) -> None:
    # Given the API's definition without AlwaysDeploy
    plain = copy.deepcopy(source)
    del plain["Resources"]["PaymentApi"]["Properties"]["AlwaysDeploy"]

    def deployments(template: dict[str, Any], **given: str) -> list[str]:
        transformed = proofs.transform_offline(template, given)
        return [i for i, r in transformed["Resources"].items() if r["Type"] == "AWS::ApiGateway::Deployment"]

    # When only the parameters its authorizer and resource policy depend on change
    iam = deployments(plain, CallerIdentity="iam", OperatorPrincipalArns="arn:aws:iam::123456789012:role/ops")
    cognito = deployments(plain, CallerIdentity="cognito", OperatorPrincipalArns="")
    # Then SAM keeps the same deployment (its name hashes the definition's text), so API Gateway would
    # go on serving the old authorizer and policy...
    assert iam == cognito
    # ...which is why the API deploys its stage on every update
    assert source["Resources"]["PaymentApi"]["Properties"]["AlwaysDeploy"] is True
