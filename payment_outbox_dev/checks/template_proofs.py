"""Offline proofs over template.yaml that CloudFormation only checks during a real deploy.

The template is transformed with aws-sam-translator (no AWS involved), its Conditions and Rules are
evaluated for given parameter values, and then:

- **deploy order**: CloudFormation creates a resource after everything it references (Ref, GetAtt,
  Sub, DependsOn); a custom resource must come after all that its function needs at run time, and
  every function that uses the database after the schema migration;
- **network reach**: each function in the VPC must reach every AWS service it calls (read from its
  role: the IAM proof shows role and calls agree) through an endpoint created in the same deployment,
  an endpoint the operator states the VPC already has (``VpcEndpoint*=existing``), or NAT the
  operator states with ``SubnetsHaveNat``;
- **alarm coverage**: every function, queue, dead-letter queue, scheduled function, API and database
  has an alarm that reaches someone;
- **operator path**: IAM-authorised routes need only ``execute-api:Invoke`` from their callers;
- **grants**: every secret a function is configured to read is granted to its role;
- **envelopes**: only the roles of the functions that write envelopes may publish to the topic, and
  nothing but the topic (and named operators) may send to the queues, whatever any other principal's
  own IAM policy allows (the resource policies are evaluated for each principal);
- **secret keys**: functions that read secrets may decrypt with the secrets' customer managed keys,
  exactly those and only through Secrets Manager, and with none given they hold no KMS grant;
- **database users**: every function but the schema migrator connects as the application user, never
  with the migrator's credentials, in both database modes;
- **log groups** (with the deploy order): every function logs, through ``LoggingConfig``, to a log
  group of the stack named without referring to any function, so the group is created before the
  function and deleted after it (an invocation during a delete cannot recreate it);
- **callers**: the order routes take SigV4 from the named callers only (``CallerIdentity=iam``) or a
  user pool's tokens (``cognito``: the pool given or the one created), the admin routes SigV4 from the
  named operators only, and the callback stays open to the provider — the API's resource policy is
  evaluated for named, unnamed and anonymous callers on every route;
- **callback**: the callback has a throttle of its own and, with ``CallbackFirewall``, a web ACL on the
  stage with a rate-based rule for it and, given the provider's addresses, nobody else's.

Each check returns problems in plain words; an empty list means the deployment holds. The
deployment they read is ``checks.deployment``, its parameters ``checks.parameters``; the proofs on
who may do what (envelopes, secret keys, database users, callers, the callback) are
``checks.policy_proofs``. This module answers for all of them.
"""

from __future__ import annotations

from typing import Any

from payment_outbox_dev.checks.deployment import (
    Deployment,
    as_list,
    deployable_combinations,
    is_empty,
    referenced,
    referenced_once,
    same,
    transform_offline,
)
from payment_outbox_dev.checks.parameters import (
    CUSTOM_RESOURCE_RESPONSE_SERVICE,
    ENDPOINT_PARAMETERS,
    EXISTING_ENDPOINT,
    NAT_PARAMETER,
    REGION,
    parameter_values,
    refusals,
)
from payment_outbox_dev.checks.policy_proofs import (
    OUTSIDER,
    SNS_SERVICE,
    Caller,
    allows,
    api_routes,
    callback_problems,
    caller_problems,
    database_user_problems,
    denies,
    envelope_problems,
    policy_statements,
    reaches,
    route_security,
    secret_key_problems,
    values_of,
)

#: The database resources an alarm must watch: their type, the RDS metric dimension naming them, a word.
DATABASE_ALARM_DIMENSIONS = (
    ("AWS::RDS::DBCluster", "DBClusterIdentifier", "database cluster"),
    ("AWS::RDS::DBProxy", "ProxyName", "database proxy"),
)

__all__ = [
    "ENDPOINT_PARAMETERS",
    "EXISTING_ENDPOINT",
    "OUTSIDER",
    "REGION",
    "Caller",
    "Deployment",
    "alarm_problems",
    "all_problems",
    "api_routes",
    "as_list",
    "callback_problems",
    "caller_problems",
    "database_user_problems",
    "denies",
    "deploy_order_problems",
    "deployable_combinations",
    "envelope_problems",
    "grant_problems",
    "log_group_problems",
    "network_problems",
    "operator_path_problems",
    "parameter_values",
    "policy_statements",
    "reaches",
    "refusals",
    "route_security",
    "secret_key_problems",
    "subscription_problems",
    "transform_offline",
    "values_of",
]


def deploy_order_problems(deployment: Deployment) -> list[str]:
    problems = list(deployment.missing_references()) + log_group_problems(deployment)
    migrations = [c for f in deployment.functions for c in deployment.custom_resources_of(f)]
    for function_id in deployment.functions:
        for custom in deployment.custom_resources_of(function_id):
            before = deployment.created_before(custom)
            needed = deployment.created_before(function_id) | {function_id}
            log_group = deployment.log_group_of(function_id)
            if log_group is not None:
                needed.add(log_group)
            for service in deployment.services_called(function_id):
                needed.update(deployment.endpoints.get(service, []))
            if deployment.uses_database(function_id):
                needed.update(_database_resources(deployment))
            for missing in sorted(needed - before):
                problems.append(
                    f"{custom} (run by {function_id} during the deploy) may start before {missing} "
                    f"({deployment.resources[missing]['Type']}) exists, which it needs at run time"
                )
        if deployment.uses_database(function_id) and not deployment.custom_resources_of(function_id):
            before = deployment.created_before(function_id)
            for migration in migrations:
                if migration not in before:
                    problems.append(
                        f"{function_id} uses the database but may go live before {migration} has run"
                    )
    return problems


def log_group_problems(deployment: Deployment) -> list[str]:
    """Every function logs to a log group of the stack that exists before it and goes after it."""
    problems = []
    for function_id in sorted(deployment.functions):
        log_group = deployment.log_group_of(function_id)
        if log_group is None:
            problems.append(
                f"{function_id} logs to a group Lambda creates on its first invocation: CloudFormation "
                "neither sets its retention nor deletes it, and the stack's next create meets it (give it "
                "a log group of the stack through LoggingConfig)"
            )
            continue
        named_after = set(referenced(deployment.properties(log_group).get("LogGroupName"))) & set(
            deployment.functions
        )
        if named_after:
            problems.append(
                f"{log_group} is named after {', '.join(sorted(named_after))}, so it is created after the "
                "function and deleted before it: an invocation in between recreates it and the stack's "
                "next create fails (name it literally)"
            )
    return problems


def _database_resources(deployment: Deployment) -> set[str]:
    """The database, its proxy and everything that lets connections through to it."""
    database = {i for i, r in deployment.resources.items() if r["Type"].startswith("AWS::RDS::")}
    groups = {g for i in database for g in referenced(deployment.properties(i))}
    for logical_id in deployment.of_type("AWS::EC2::SecurityGroupIngress"):
        if set(referenced(deployment.properties(logical_id).get("GroupId"))) & groups:
            database.add(logical_id)
    return database


def network_problems(deployment: Deployment) -> list[str]:
    if deployment.has_nat():
        return []
    endpoints = deployment.endpoints
    problems = []
    for function_id in sorted(deployment.functions):
        if not deployment.in_vpc(function_id):
            continue
        for service in sorted(deployment.services_called(function_id)):
            if service not in endpoints and not deployment.has_existing_endpoint(service):
                answers = service == CUSTOM_RESOURCE_RESPONSE_SERVICE and deployment.custom_resources_of(
                    function_id
                )
                why = " (its answer to CloudFormation: the deploy would hang)" if answers else ""
                problems.append(
                    f"{function_id} runs in the VPC and calls {service}{why}, but this deployment creates "
                    f"no {service} endpoint, {ENDPOINT_PARAMETERS.get(service, 'no parameter')} does not "
                    f'state an existing one and {NAT_PARAMETER} is not "true"'
                )
    return problems


def _metrics_of(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """Each metric an alarm watches: {namespace, name, dimensions}."""
    if "MetricName" in alarm:
        return [
            {
                "Namespace": alarm.get("Namespace"),
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm.get("Dimensions", []),
            }
        ]
    return [query["MetricStat"]["Metric"] for query in alarm.get("Metrics", []) if "MetricStat" in query]


def _dimension(metric: dict[str, Any], name: str) -> Any:
    return next((d["Value"] for d in metric.get("Dimensions", []) if d["Name"] == name), None)


def alarm_problems(deployment: Deployment) -> list[str]:
    alarms = {i: deployment.properties(i) for i in deployment.of_type("AWS::CloudWatch::Alarm")}
    problems = []

    def watched(
        namespace: str, metric_name: str, dimension: str, value: Any, *, on_silence: bool = False
    ) -> bool:
        for alarm in alarms.values():
            if on_silence and alarm.get("TreatMissingData") != "breaching":
                continue
            for metric in _metrics_of(alarm):
                if (metric.get("Namespace"), metric.get("MetricName")) == (namespace, metric_name) and (
                    _dimension(metric, dimension) == value
                ):
                    return True
        return False

    for function_id in sorted(deployment.functions):
        for metric_name in ("Errors", "Throttles"):
            if not watched("AWS/Lambda", metric_name, "FunctionName", {"Ref": function_id}):
                problems.append(f"no alarm watches {function_id}'s {metric_name}")
    # A scheduled function that stops emits nothing: something must alarm on its silence.
    for rule_id in deployment.of_type("AWS::Events::Rule"):
        for target in deployment.properties(rule_id).get("Targets", []):
            target_id = referenced_once(target.get("Arn"))
            if target_id is None or target_id not in deployment.functions:
                continue
            function_id = target_id
            service = deployment.environment(function_id).get("POWERTOOLS_SERVICE_NAME")
            if not (
                watched("AWS/Lambda", "Invocations", "FunctionName", {"Ref": function_id}, on_silence=True)
                or watched("PaymentOutbox", "", "service", service, on_silence=True)
                or any(
                    alarm.get("TreatMissingData") == "breaching" and _dimension(m, "service") == service
                    for alarm in alarms.values()
                    for m in _metrics_of(alarm)
                )
            ):
                problems.append(f"nothing alarms when the scheduled {function_id} stops running")
    dead_letter = {
        referenced_once(deployment.properties(q).get("RedrivePolicy", {}).get("deadLetterTargetArn"))
        for q in [*deployment.of_type("AWS::SQS::Queue"), *deployment.of_type("AWS::SNS::Subscription")]
    }
    for queue_id in sorted(deployment.of_type("AWS::SQS::Queue")):
        queue_name = {"Fn::GetAtt": [queue_id, "QueueName"]}
        if queue_id in dead_letter:
            if not watched("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue_name):
                problems.append(f"no alarm fires when a message lands in the dead-letter queue {queue_id}")
        elif not watched("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queue_name):
            problems.append(f"no alarm fires when messages wait too long in {queue_id}")
    for api_id in deployment.of_type("AWS::ApiGateway::RestApi"):
        name = deployment.properties(api_id).get("Name")
        if name is None or not watched("AWS/ApiGateway", "5XXError", "ApiName", name):
            problems.append(f"no alarm fires when {api_id} answers 5XX")
    for resource_type, dimension, what in DATABASE_ALARM_DIMENSIONS:
        for resource_id in deployment.of_type(resource_type):
            if not any(
                m.get("Namespace") == "AWS/RDS" and _dimension(m, dimension) == {"Ref": resource_id}
                for alarm in alarms.values()
                for m in _metrics_of(alarm)
            ):
                problems.append(f"no alarm watches the {what} {resource_id}")
    problems += _alarm_math_problems(alarms)
    problems += _alarm_delivery_problems(deployment, alarms)
    return problems


def _alarm_math_problems(alarms: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for alarm_id, alarm in sorted(alarms.items()):
        queries = alarm.get("Metrics", [])
        if len(queries) > 10:
            problems.append(f"{alarm_id} has {len(queries)} metric queries; CloudWatch allows 10")
        stats = [q for q in queries if "MetricStat" in q]
        for query in queries:
            expression = query.get("Expression")
            if expression and len(stats) > 1 and "FILL(" not in expression.replace(" ", ""):
                problems.append(
                    f"{alarm_id}'s expression {expression!r} drops out whenever one of its metrics has no "
                    "datapoint (wrap them in FILL(..., 0))"
                )
    return problems


def _alarm_delivery_problems(deployment: Deployment, alarms: dict[str, dict[str, Any]]) -> list[str]:
    subscribed = {
        referenced_once(deployment.properties(s).get("TopicArn"))
        for s in deployment.of_type("AWS::SNS::Subscription")
    }
    problems = []
    unheard: dict[str, list[str]] = {}
    for alarm_id, alarm in sorted(alarms.items()):
        topics = [referenced_once(a) for a in alarm.get("AlarmActions", [])]
        if not topics:
            problems.append(f"{alarm_id} has no alarm action: it would change state silently")
        for topic in topics:
            if topic not in subscribed and deployment.parameters.get("OpsAlarmEmail") != "none":
                unheard.setdefault(str(topic), []).append(alarm_id)
    for topic, alarm_ids in sorted(unheard.items()):
        problems.append(
            f"{len(alarm_ids)} alarms ({', '.join(alarm_ids)}) notify {topic}, which nobody is subscribed "
            "to: set OpsAlarmEmail"
        )
    return problems


def subscription_problems(deployment: Deployment) -> list[str]:
    """Delivery past SNS is guarded: every SNS-to-SQS subscription has a dead-letter queue (its
    RedrivePolicy) that exists, is FIFO exactly when its queue is, is encrypted as its queue is, and
    lets the topic send to it; ``alarm_problems`` checks that each is alarmed."""
    problems = []
    queues = deployment.of_type("AWS::SQS::Queue")
    for subscription_id in sorted(deployment.of_type("AWS::SNS::Subscription")):
        props = deployment.properties(subscription_id)
        if props.get("Protocol") != "sqs":
            continue
        dlq_id = referenced_once(props.get("RedrivePolicy", {}).get("deadLetterTargetArn"))
        if dlq_id is None:
            problems.append(
                f"{subscription_id} has no dead-letter queue: a delivery SNS cannot make is dropped"
            )
            continue
        if dlq_id not in queues:
            problems.append(
                f"{subscription_id}'s dead-letter queue {dlq_id} is not a queue of this deployment"
            )
            continue
        queue, dlq = (
            deployment.properties(referenced_once(props.get("Endpoint")) or ""),
            deployment.properties(dlq_id),
        )
        if bool(dlq.get("FifoQueue")) != bool(queue.get("FifoQueue")):
            problems.append(f"{subscription_id}: {dlq_id} must be FIFO exactly when its queue is")
        for key in ("SqsManagedSseEnabled", "KmsMasterKeyId"):
            if not same(dlq.get(key), queue.get(key)):
                problems.append(f"{subscription_id}: {dlq_id} is not encrypted as its queue is ({key})")
        topic = referenced_once(props.get("TopicArn"))
        statements = policy_statements(deployment, "AWS::SQS::QueuePolicy", "Queues", {"Ref": dlq_id})
        delivery = Caller(service=SNS_SERVICE, source_arn={"Ref": topic})
        if denies(deployment, statements, "sqs:SendMessage", delivery) or not allows(
            deployment, statements, "sqs:SendMessage", delivery
        ):
            problems.append(
                f"{topic} cannot move undeliverable messages to {dlq_id}, {subscription_id}'s DLQ"
            )
    return problems


def operator_path_problems(deployment: Deployment) -> list[str]:
    """IAM-authorised routes must need only execute-api:Invoke: API Gateway invokes the function with
    its own permission (no per-caller credentials), which a Lambda permission grants."""
    problems = []
    permissions = [deployment.properties(p) for p in deployment.of_type("AWS::Lambda::Permission")]
    for api_id in deployment.of_type("AWS::ApiGateway::RestApi"):
        body = deployment.properties(api_id).get("Body", {})
        for path, methods in body.get("paths", {}).items():
            for method, operation in methods.items():
                if not isinstance(operation, dict):
                    continue
                security = [name for entry in operation.get("security", []) for name in entry]
                if "AWS_IAM" not in security:
                    continue
                integration = operation.get("x-amazon-apigateway-integration", {})
                route = f"{method.upper()} {path}"
                if "credentials" in integration:
                    problems.append(
                        f"{route} invokes its function with the caller's credentials: every operator "
                        "would need lambda:InvokeFunction besides execute-api:Invoke (else 500)"
                    )
                target = next(iter(referenced(integration.get("uri"))), None)
                if target and not any(
                    referenced_once(p.get("FunctionName")) == target
                    and p.get("Principal") == "apigateway.amazonaws.com"
                    for p in permissions
                ):
                    problems.append(f"{route}: API Gateway has no permission to invoke {target}")
    return problems


def grant_problems(deployment: Deployment) -> list[str]:
    """Every secret a function is configured to read is granted to it."""
    problems = []
    for function_id in sorted(deployment.functions):
        granted = [
            s.get("Resource")
            for s in deployment.role_statements(function_id)
            if s.get("Effect") == "Allow" and "secretsmanager:GetSecretValue" in as_list(s.get("Action", []))
        ]
        for name, value in deployment.environment(function_id).items():
            if not name.endswith("_SECRET_ARN") or is_empty(deployment, value):
                continue
            if not any(
                same(value, g) or (isinstance(g, list) and any(same(value, x) for x in g)) for g in granted
            ):
                problems.append(f"{function_id} reads {name} but its role may not read that secret")
    return problems


def all_problems(deployment: Deployment) -> dict[str, list[str]]:
    return {
        "deploy order": deploy_order_problems(deployment),
        "network reach": network_problems(deployment),
        "alarms": alarm_problems(deployment),
        "subscriptions": subscription_problems(deployment),
        "operator path": operator_path_problems(deployment),
        "grants": grant_problems(deployment),
        "envelopes": envelope_problems(deployment),
        "secret keys": secret_key_problems(deployment),
        "database users": database_user_problems(deployment),
        "callers": caller_problems(deployment),
        "callback": callback_problems(deployment),
    }
