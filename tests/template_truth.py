"""Tools for proving template.yaml and the code agree: the SAM transform done offline, intrinsic
functions resolved against the resources provisioned in moto, and every AWS call recorded per function.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from payment_outbox_dev.checks.template_proofs import transform_offline
from payment_outbox_dev.local.harness import ACCOUNT, REGION, current_function
from payment_outbox_dev.local.provision import Provisioned

#: The offline SAM transform is the proofs' own (payment_outbox_dev.checks.template_proofs); re-exported here.
__all__ = ["transform_offline"]

#: Environment variables Powertools itself reads (service name, metrics namespace, log level).
POWERTOOLS_VARIABLES = frozenset(
    {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
)


@dataclass
class Resolver:
    """Renders CloudFormation intrinsics into concrete strings using what moto provisioned."""

    provisioned: Provisioned
    parameters: dict[str, str]

    def render(self, value: Any, local: dict[str, str] | None = None) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return [self.render(v, local) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"cannot resolve {value!r}")
        ((key, argument),) = value.items()
        if key == "Ref":
            return self._ref(argument)
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            resolved = self.provisioned.attributes.get((logical_id, attribute))
            if resolved is None:
                raise ValueError(f"no attribute {logical_id}.{attribute}")
            return resolved
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            names = {k: self.render(v, local) for k, v in variables.items()}
            return re.sub(r"\$\{([^}]+)\}", lambda m: names.get(m.group(1)) or self._ref(m.group(1)), text)
        if key == "Fn::If":
            condition, when_true, when_false = argument
            return self.render(when_true if self.provisioned.conditions[condition] else when_false, local)
        if key == "Fn::Join":
            separator, parts = argument
            return separator.join(self.render(p, local) for p in parts)
        raise ValueError(f"cannot resolve {key}")

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK_NAME,
        }
        if "." in name:  # ${Resource.Attribute} inside Fn::Sub
            logical_id, attribute = name.split(".", 1)
            return self.provisioned.attributes[(logical_id, attribute)]
        for source in (pseudo, self.parameters, self.provisioned.refs):
            if name in source:
                return source[name]
        raise ValueError(f"cannot resolve Ref {name}")


@dataclass(frozen=True)
class Grant:
    actions: frozenset[str]
    resources: tuple[str, ...]

    def allows(self, action: str, resource: str) -> bool:
        return any(fnmatch.fnmatchcase(action, a) for a in self.actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in self.resources
        )


def inline_grants(transformed: dict[str, Any], function_id: str, resolver: Resolver) -> list[Grant]:
    """The Allow statements of the function's role (managed AWS policies are left aside: logs,
    X-Ray, VPC and SQS polling — calls the Lambda service makes, not our code)."""
    function = transformed["Resources"][function_id]["Properties"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    grants = []
    for policy in transformed["Resources"][role_id]["Properties"].get("Policies", []):
        if "Fn::If" in policy:  # a policy that exists only under a condition
            condition, when_true, when_false = policy["Fn::If"]
            policy = when_true if resolver.provisioned.conditions[condition] else when_false
            if policy == {"Ref": "AWS::NoValue"}:
                continue
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement.get("Effect") != "Allow":
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            grants.append(Grant(frozenset(actions), tuple(resolver.render(r) for r in resources)))
    return grants


@dataclass(frozen=True)
class Call:
    function: str
    service: str
    operation: str
    params: dict[str, Any] = field(hash=False, compare=False)


class CallRecorder:
    """Records every AWS API call made while a function runs, via botocore's parameter-build event
    (it carries the API parameters as the caller gave them)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = boto3.session.Session.client
        recorder = self

        def client(session: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
            made = original(session, *args, **kwargs)
            made.meta.events.register("before-parameter-build", recorder._record)
            return made

        monkeypatch.setattr(boto3.session.Session, "client", client)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        function = current_function.get()
        if function is not None:
            service = model.service_model.service_name
            self.calls.append(Call(function, service, model.name, dict(params)))

    def by_function(self) -> dict[str, list[Call]]:
        grouped: dict[str, list[Call]] = defaultdict(list)
        for call in self.calls:
            grouped[call.function].append(call)
        return grouped


#: The stack name the offline transform's ``${AWS::StackName}`` stands for.
STACK_NAME = "payment-outbox"


def _function_arn(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def _table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def required_permissions(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """The IAM (action, resource ARN) pairs one API call needs."""
    if service == "dynamodb" and operation == "TransactWriteItems":
        needed = []
        for item in params["TransactItems"]:
            ((kind, spec),) = item.items()
            needed.append((f"dynamodb:{_TRANSACT_ACTIONS[kind]}", _table_arn(spec["TableName"])))
        return needed
    if service == "dynamodb":
        # A Query or Scan of an index is authorised on the index's ARN, not the table's.
        index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
        return [(f"dynamodb:{operation}", _table_arn(params["TableName"]) + index)]
    if service == "sns" and operation in ("Publish", "PublishBatch"):
        # PublishBatch is authorised as sns:Publish; an SMS to a phone number has no resource ARN.
        return [("sns:Publish", params.get("TopicArn") or params.get("TargetArn") or "*")]
    if service == "lambda" and operation == "Invoke":
        return [("lambda:InvokeFunction", _function_arn(params["FunctionName"]))]
    if service == "secretsmanager":
        return [(f"secretsmanager:{operation}", params["SecretId"])]
    if service == "s3":
        key = params.get("Key", "*")
        return [(f"s3:{operation}", f"arn:aws:s3:::{params['Bucket']}/{key}")]
    if service == "sqs" and "QueueUrl" in params:
        # A queue URL names its account and queue; batch calls are authorised as their single forms.
        action = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}.get(
            operation, operation
        )
        *_, account, name = params["QueueUrl"].rstrip("/").split("/")
        return [(f"sqs:{action}", f"arn:aws:sqs:{REGION}:{account}:{name}")]
    return [(f"{service}:{operation}", "*")]
