"""Creates the template's messaging and table resources in an AWS emulator (moto), and resolves each
function's environment against them, so the local system cannot drift from what deploys.

Only what the functions talk to is provisioned: SNS topics and subscriptions, SQS queues with their
redrive policies and queue policies, DynamoDB tables — each with every setting the template gives it
(retention periods, encryption, policies, TTL, point-in-time recovery…), so what the emulator reports
is what AWS would (tests/integration/test_provisioning.py compares them). The one deliberate
difference: the local stack may shorten visibility timeouts (``visibility_timeouts``, from
``payment_outbox_dev.local.timing``). Values the emulator cannot provide (the database, the webhook
secret) are supplied by the caller as overrides. Provisioning twice is harmless: what exists is kept
and brought to the template's settings (the local stack may attach to an emulator that holds them).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import boto3

from payment_outbox_dev.checks.template import FunctionSpec, functions, resources_of_type

_KNOWN_PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}


@dataclass
class Provisioned:
    #: logical id -> what ``!Ref`` gives (ARN for topics, URL for queues, name for tables).
    refs: dict[str, str] = field(default_factory=dict)
    #: (logical id, attribute) -> what ``!GetAtt`` gives.
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    #: condition name -> its value under ``parameters`` (template Conditions section).
    conditions: dict[str, bool] = field(default_factory=dict)

    def queue_url(self, logical_id: str) -> str:
        return self.refs[logical_id]

    def resolve(self, value: Any) -> Any:
        """Resolve the intrinsic functions an environment value may use; None if it cannot be."""
        if isinstance(value, str | int | float | bool):
            return str(value)
        if isinstance(value, dict) and "Ref" in value:
            name = value["Ref"]
            return self.refs.get(name) or self.parameters.get(name) or _KNOWN_PSEUDO.get(name)
        if isinstance(value, dict) and "Fn::If" in value:
            condition, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.conditions.get(condition) else when_false)
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            return self.attributes.get((logical_id, attribute))
        if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            return self._substitute(value["Fn::Sub"])
        return None

    def _substitute(self, text: str) -> str | None:
        """``!Sub`` in its one-string form: ``${Name}`` as ``!Ref``, ``${Name.Attribute}`` as ``!GetAtt``;
        None when a name cannot be resolved (as for any other unresolvable value)."""
        missing = False

        def one(match: re.Match[str]) -> str:
            nonlocal missing
            name = match.group(1)
            logical_id, _, attribute = name.partition(".")
            value = self.resolve({"Fn::GetAtt": [logical_id, attribute]} if attribute else {"Ref": name})
            if value is None:
                missing = True
                return ""
            return str(value)

        substituted = re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, text)
        return None if missing else substituted

    def flag(self, value: Any) -> bool:
        """A boolean property, which the template may switch with ``!If`` (absent: false)."""
        return str(self.resolve(value)).lower() == "true"

    def environment(self, spec: FunctionSpec, overrides: dict[str, str] | None = None) -> dict[str, str]:
        env = {}
        for name, value in spec.environment.items():
            resolved = self.resolve(value)
            if resolved is not None:
                env[name] = resolved
        env.update(overrides or {})
        return env

    def environments(
        self, template: dict[str, Any], overrides: dict[str, str] | None = None
    ) -> dict[str, dict[str, str]]:
        """Each function's environment, keyed by logical id."""
        return {spec.logical_id: self.environment(spec, overrides) for spec in functions(template)}


#: Template properties that name or tag a resource rather than set one of its attributes.
QUEUE_NOT_ATTRIBUTES = frozenset({"QueueName", "Tags"})
TOPIC_NOT_ATTRIBUTES = frozenset({"TopicName", "Tags", "Subscription"})
SUBSCRIPTION_NOT_ATTRIBUTES = frozenset({"TopicArn", "Protocol", "Endpoint", "Region"})
#: Properties of the template that are JSON documents in the API's attributes.
JSON_ATTRIBUTES = frozenset(
    {"RedrivePolicy", "RedriveAllowPolicy", "FilterPolicy", "DeliveryPolicy", "Policy"}
)
_NO_VALUE = object()


def provision(
    template: dict[str, Any],
    *,
    region: str = "us-east-1",
    parameters: dict[str, str] | None = None,
    visibility_timeouts: dict[str, int] | None = None,
) -> Provisioned:
    session = boto3.session.Session(region_name=region)
    # Untyped clients: the template's values are only known at run time.
    sns: Any = session.client("sns")
    sqs: Any = session.client("sqs")
    dynamodb: Any = session.client("dynamodb")
    out = Provisioned(parameters=_parameter_defaults(template) | (parameters or {}))
    out.conditions = _conditions(template, out.parameters)
    # The execution role SAM makes for each function (``!GetAtt <Function>Role.Arn``), which resource
    # policies name; the emulator does not evaluate them, but they keep their shape.
    account = _KNOWN_PSEUDO["AWS::AccountId"]
    for spec in functions(template):
        role = f"{spec.logical_id}Role"
        out.attributes[(role, "Arn")] = f"arn:aws:iam::{account}:role/{role}"

    for logical_id, resource in resources_of_type(template, "AWS::SNS::Topic").items():
        props = resource.get("Properties", {})
        attributes = topic_attributes(out, props)
        name = _literal(out, props.get("TopicName")) or _local_name(
            logical_id, attributes.get("FifoTopic") == "true"
        )
        arn = sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        for attribute, value in attributes.items():  # an existing topic (a kept emulator) too
            sns.set_topic_attributes(TopicArn=arn, AttributeName=attribute, AttributeValue=value)
        out.refs[logical_id] = arn
        out.attributes[(logical_id, "TopicName")] = name
        out.attributes[(logical_id, "TopicArn")] = arn

    queues = resources_of_type(template, "AWS::SQS::Queue")
    # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
    for logical_id in sorted(queues, key=lambda q: "RedrivePolicy" in queues[q].get("Properties", {})):
        props = queues[logical_id].get("Properties", {})
        attributes = queue_attributes(out, props)
        if visibility_timeouts and logical_id in visibility_timeouts:
            attributes["VisibilityTimeout"] = str(visibility_timeouts[logical_id])
        name = _literal(out, props.get("QueueName")) or _local_name(
            logical_id, attributes.get("FifoQueue") == "true"
        )
        url = _create_queue(sqs, name, attributes)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        out.refs[logical_id] = url
        out.attributes[(logical_id, "Arn")] = arn
        out.attributes[(logical_id, "QueueName")] = name
        out.attributes[(logical_id, "QueueUrl")] = url

    for resource in resources_of_type(template, "AWS::SQS::QueuePolicy").values():
        props = resource.get("Properties", {})
        policy = json.dumps(resolve_deep(out, props["PolicyDocument"]))
        for queue in props.get("Queues", []):
            sqs.set_queue_attributes(QueueUrl=out.resolve(queue), Attributes={"Policy": policy})

    for resource in resources_of_type(template, "AWS::SNS::TopicPolicy").values():
        props = resource.get("Properties", {})
        policy = json.dumps(resolve_deep(out, props["PolicyDocument"]))
        for topic in props.get("Topics", []):
            sns.set_topic_attributes(
                TopicArn=out.resolve(topic), AttributeName="Policy", AttributeValue=policy
            )

    for resource in resources_of_type(template, "AWS::SNS::Subscription").values():
        props = resource["Properties"]
        if props.get("Protocol") != "sqs":
            continue  # e-mail and other human endpoints mean nothing locally
        attributes = subscription_attributes(out, props)
        topic_arn, endpoint = out.resolve(props["TopicArn"]), out.resolve(props["Endpoint"])
        _subscribe(sns, topic_arn, props["Protocol"], endpoint, attributes)

    for logical_id, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        name = _literal(out, props.get("TableName")) or logical_id
        table: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for optional in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if optional in props:
                table[optional] = resolve_deep(out, props[optional])
        if "StreamSpecification" in props:
            table["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        sse = props.get("SSESpecification")
        if sse:
            table["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
            }
        # Provisioned before (an emulator that kept running): keep the table and its items, and add
        # the global secondary indexes the template has gained since.
        try:
            dynamodb.create_table(**table)
        except dynamodb.exceptions.ResourceInUseException:
            _add_missing_indexes(dynamodb, table)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        recovery = props.get("PointInTimeRecoverySpecification")
        if recovery:
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": bool(recovery.get("PointInTimeRecoveryEnabled"))
                },
            )
        out.refs[logical_id] = name
        account = _KNOWN_PSEUDO["AWS::AccountId"]
        out.attributes[(logical_id, "Arn")] = f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    s3: Any = session.client("s3")
    for logical_id, resource in resources_of_type(template, "AWS::S3::Bucket").items():
        if "Condition" in resource and not out.conditions.get(resource["Condition"]):
            continue  # the template would not create it either
        name = logical_id.lower()  # bucket names are lower case
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        out.refs[logical_id] = name
        out.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
    return out


def queue_attributes(out: Provisioned, props: dict[str, Any]) -> dict[str, str]:
    """Every SQS attribute the template's queue properties set, as the SQS API spells them."""
    return _attributes(out, props, QUEUE_NOT_ATTRIBUTES)


def topic_attributes(out: Provisioned, props: dict[str, Any]) -> dict[str, str]:
    """Every SNS topic attribute the template's topic properties set."""
    return _attributes(out, props, TOPIC_NOT_ATTRIBUTES)


def subscription_attributes(out: Provisioned, props: dict[str, Any]) -> dict[str, str]:
    """Every SNS subscription attribute the template's subscription properties set."""
    return _attributes(out, props, SUBSCRIPTION_NOT_ATTRIBUTES)


def _attributes(out: Provisioned, props: dict[str, Any], skip: frozenset[str]) -> dict[str, str]:
    attributes = {}
    for name, raw in props.items():
        if name in skip:
            continue
        value = resolve_deep(out, raw)
        if value is _NO_VALUE:
            continue
        if name in JSON_ATTRIBUTES or isinstance(value, dict | list):
            attributes[name] = value if isinstance(value, str) else json.dumps(value)
        elif isinstance(value, bool):
            attributes[name] = str(value).lower()
        else:
            attributes[name] = str(value)
    return attributes


def _add_missing_indexes(dynamodb: Any, table: dict[str, Any]) -> None:
    existing = dynamodb.describe_table(TableName=table["TableName"])["Table"].get(
        "GlobalSecondaryIndexes", []
    )
    have = {index["IndexName"] for index in existing}
    for index in table.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] not in have:
            dynamodb.update_table(
                TableName=table["TableName"],
                AttributeDefinitions=table["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )


def resolve_deep(out: Provisioned, value: Any) -> Any:
    """``value`` with every intrinsic function resolved (``Ref``, ``Fn::GetAtt``, ``Fn::If``); a
    ``Ref: AWS::NoValue`` drops the key or item it stands for."""
    if isinstance(value, dict):
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if "Fn::If" in value:
            condition, when_true, when_false = value["Fn::If"]
            return resolve_deep(out, when_true if out.conditions.get(condition) else when_false)
        if len(value) == 1 and ("Ref" in value or "Fn::GetAtt" in value):
            return out.resolve(value)
        resolved = {k: resolve_deep(out, v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve_deep(out, item) for item in value) if v is not _NO_VALUE]
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _literal(out: Provisioned, value: Any) -> str | None:
    resolved = resolve_deep(out, value) if value is not None else None
    return resolved if isinstance(resolved, str) and resolved else None


def _conditions(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, bool]:
    """Evaluate the template's Conditions (Equals/Not/And/Or/Condition/Join over parameter Refs)."""
    values = {
        name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()
    } | parameters
    definitions: dict[str, Any] = template.get("Conditions", {})

    def evaluate(node: Any) -> Any:
        if isinstance(node, dict) and "Fn::Equals" in node:
            left, right = (evaluate(v) for v in node["Fn::Equals"])
            return str(left) == str(right)
        if isinstance(node, dict) and "Fn::Not" in node:
            return not evaluate(node["Fn::Not"][0])
        if isinstance(node, dict) and "Fn::And" in node:
            return all(evaluate(v) for v in node["Fn::And"])
        if isinstance(node, dict) and "Fn::Or" in node:
            return any(evaluate(v) for v in node["Fn::Or"])
        if isinstance(node, dict) and ("Condition" in node or "Fn::Condition" in node):
            return evaluate(definitions[node.get("Condition") or node["Fn::Condition"]])
        if isinstance(node, dict) and "Fn::Join" in node:  # a list parameter tested for emptiness
            separator, parts = node["Fn::Join"]
            items = evaluate(parts)
            return separator.join(str(evaluate(v)) for v in (items if isinstance(items, list) else [items]))
        if isinstance(node, dict) and "Ref" in node:
            return values.get(node["Ref"], "")
        return node

    return {name: bool(evaluate(definition)) for name, definition in definitions.items()}


def _local_name(logical_id: str, fifo: bool) -> str:
    """Locally a topic or queue is named after its logical id; FIFO ones must end in ``.fifo``."""
    return f"{logical_id}.fifo" if fifo else logical_id


def _create_queue(sqs: Any, name: str, attributes: dict[Any, str]) -> str:
    """Create the queue, or bring an existing one (from an earlier run) to the template's attributes."""
    try:
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _subscribe(sns: Any, topic_arn: str, protocol: str, endpoint: str, attributes: dict[str, str]) -> None:
    """Subscribe once: an existing subscription of the endpoint (an earlier run) gets the attributes."""
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for existing in page["Subscriptions"]:
            if existing["Protocol"] == protocol and existing["Endpoint"] == endpoint:
                for name, value in attributes.items():
                    sns.set_subscription_attributes(
                        SubscriptionArn=existing["SubscriptionArn"], AttributeName=name, AttributeValue=value
                    )
                return
    sns.subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint, Attributes=attributes)


def _parameter_defaults(template: dict[str, Any]) -> dict[str, str]:
    return {
        name: str(spec["Default"])
        for name, spec in template.get("Parameters", {}).items()
        if "Default" in spec and spec["Default"] != ""
    }
