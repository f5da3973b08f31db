"""One deployment of template.yaml, offline: the SAM transform run by aws-sam-translator (no AWS
involved), its Conditions evaluated for the parameter values, and what the proofs read of it —
resources, their dependencies, each function's environment, role and calls, endpoints, NAT — plus
one deployment per distinct outcome of the combinations the Rules accept.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from payment_outbox_dev.checks.parameters import (
    CUSTOM_RESOURCE_RESPONSE_SERVICE,
    CUSTOM_RESOURCE_TYPE,
    ENDPOINT_PARAMETERS,
    EXISTING_ENDPOINT,
    NAT_PARAMETER,
    REGION,
    evaluate_conditions,
    parameter_combinations,
    parameter_values,
    refs_to_parameters,
    refusals,
)

_PSEUDO = {
    "AWS::Region",
    "AWS::AccountId",
    "AWS::Partition",
    "AWS::StackName",
    "AWS::StackId",
    "AWS::URLSuffix",
    "AWS::NoValue",
    "AWS::NotificationARNs",
}


class _NoManagedPolicies:
    """The transform asks IAM for managed policy ARNs only to resolve names; we use none by name."""

    def load(self) -> dict[str, str]:
        return {}


def transform_offline(template: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the SAM transform with aws-sam-translator, no AWS involved."""
    from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

    document = copy.deepcopy(template)
    for logical_id, resource in document["Resources"].items():
        props = resource.get("Properties", {})
        # The transform wants S3 locations; `sam build` would upload the folders there.
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = f"s3://payment-outbox-artifacts/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://payment-outbox-artifacts/{logical_id}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    transformed: dict[str, Any] = transform(document, parameters or {}, _NoManagedPolicies())
    return transformed


@dataclass
class Deployment:
    """The transformed template with its Conditions decided by one set of parameter values."""

    source: dict[str, Any]
    transformed: dict[str, Any]
    parameters: dict[str, str]
    conditions: dict[str, bool] = field(init=False)
    _properties: dict[str, Any] = field(init=False, default_factory=dict)
    _services: dict[str, set[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.conditions = evaluate_conditions(self.transformed, self.parameters)

    @classmethod
    def of(cls, source: dict[str, Any], transformed: dict[str, Any], given: dict[str, str]) -> Deployment:
        return cls(source, transformed, parameter_values(source, given))

    # --- what exists

    @cached_property
    def resources(self) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.transformed["Resources"].items()
            if "Condition" not in resource or self.conditions[resource["Condition"]]
        }

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {i: r for i, r in self.resources.items() if r["Type"] == resource_type}

    def resolve_ifs(self, node: Any) -> Any:
        """The node with every Fn::If replaced by its branch in this deployment (NoValue dropped)."""
        if isinstance(node, list):
            return [v for v in (self.resolve_ifs(n) for n in node) if v != {"Ref": "AWS::NoValue"}]
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                condition, when_true, when_false = node["Fn::If"]
                return self.resolve_ifs(when_true if self.conditions[condition] else when_false)
            return {
                k: v
                for k, v in ((k, self.resolve_ifs(v)) for k, v in node.items())
                if v != {"Ref": "AWS::NoValue"}
            }
        return node

    def properties(self, logical_id: str) -> dict[str, Any]:
        if logical_id not in self._properties:
            self._properties[logical_id] = self.resolve_ifs(self.resources[logical_id].get("Properties", {}))
        resolved: dict[str, Any] = self._properties[logical_id]
        return resolved

    # --- creation order

    @cached_property
    def dependencies(self) -> dict[str, set[str]]:
        """Each resource's direct dependencies as CloudFormation sees them."""
        graph: dict[str, set[str]] = {}
        for logical_id, resource in self.resources.items():
            named = set(referenced(self.properties(logical_id)))
            named |= set(referenced(self.resolve_ifs(resource.get("Metadata", {}))))
            depends_on = resource.get("DependsOn", [])
            named |= {depends_on} if isinstance(depends_on, str) else set(depends_on)
            graph[logical_id] = {n for n in named if n in self.transformed["Resources"]}
        return graph

    def missing_references(self) -> list[str]:
        return [
            f"{logical_id} refers to {target}, which this deployment does not create"
            for logical_id, targets in self.dependencies.items()
            for target in sorted(targets)
            if target not in self.resources
        ]

    def created_before(self, logical_id: str) -> set[str]:
        """Everything CloudFormation finishes before it starts ``logical_id``."""
        seen: set[str] = set()
        stack = list(self.dependencies.get(logical_id, ()))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.dependencies.get(current, ()))
        return seen

    # --- functions

    @cached_property
    def functions(self) -> dict[str, dict[str, Any]]:
        return self.of_type("AWS::Lambda::Function")

    def environment(self, function_id: str) -> dict[str, Any]:
        variables: dict[str, Any] = self.properties(function_id).get("Environment", {}).get("Variables", {})
        return variables

    def in_vpc(self, function_id: str) -> bool:
        return bool(self.properties(function_id).get("VpcConfig"))

    def uses_database(self, function_id: str) -> bool:
        return "DB_HOST" in self.environment(function_id)

    @cached_property
    def _custom_resources(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"].startswith("Custom::") or resource["Type"] == CUSTOM_RESOURCE_TYPE:
                target = referenced_once(self.properties(logical_id).get("ServiceToken"))
                if target is not None:
                    found.setdefault(target, []).append(logical_id)
        return found

    def custom_resources_of(self, function_id: str) -> list[str]:
        return self._custom_resources.get(function_id, [])

    def log_group_of(self, function_id: str) -> str | None:
        """The stack's log group the function writes to (its ``LoggingConfig.LogGroup``)."""
        target = referenced_once(self.properties(function_id).get("LoggingConfig", {}).get("LogGroup"))
        return target if target in self.of_type("AWS::Logs::LogGroup") else None

    def role_statements(self, function_id: str) -> list[dict[str, Any]]:
        role = self.properties(function_id).get("Role")
        role_id = referenced_once(role)
        if role_id is None or role_id not in self.resources:
            return []
        statements = []
        for policy in self.properties(role_id).get("Policies", []):
            document = policy.get("PolicyDocument", {})
            for statement in as_list(document.get("Statement", [])):
                statements.append(statement)
        return statements

    def services_called(self, function_id: str) -> set[str]:
        """The AWS services the function's own code calls: the services of its role's inline grants
        (managed policies are the Lambda service's own: logs, X-Ray, ENIs, queue polling), plus S3 for
        a custom resource's answer."""
        if function_id in self._services:
            return self._services[function_id]
        services = {
            str(action).split(":", 1)[0]
            for statement in self.role_statements(function_id)
            if statement.get("Effect") == "Allow" and not _through_another_service(statement)
            for action in as_list(statement.get("Action", []))
        }
        if self.custom_resources_of(function_id):
            services.add(CUSTOM_RESOURCE_RESPONSE_SERVICE)
        self._services[function_id] = services
        return services

    # --- network

    @cached_property
    def endpoints(self) -> dict[str, list[str]]:
        """Service name -> the VPC endpoints this deployment creates for it."""
        found: dict[str, list[str]] = {}
        for logical_id in self.of_type("AWS::EC2::VPCEndpoint"):
            name = self.properties(logical_id).get("ServiceName")
            text = name.get("Fn::Sub") if isinstance(name, dict) else name
            if isinstance(text, str):
                found.setdefault(text.rsplit(".", 1)[-1], []).append(logical_id)
        return found

    def has_nat(self) -> bool:
        return self.parameters.get(NAT_PARAMETER) == "true"

    def has_existing_endpoint(self, service: str) -> bool:
        parameter = ENDPOINT_PARAMETERS.get(service)
        return parameter is not None and self.parameters.get(parameter) == EXISTING_ENDPOINT


def is_empty(deployment: Deployment, value: Any) -> bool:
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in deployment.parameters:
        return deployment.parameters[value["Ref"]] == ""
    return bool(value == "")


def same(a: Any, b: Any) -> bool:
    return bool(_plain(a) == _plain(b))


def _plain(value: Any) -> Any:
    """``Fn::Sub ["${x}", {x: V}]`` (how SAM's policy templates wrap an ARN) is just V."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], list):
        text, variables = value["Fn::Sub"]
        match = re.fullmatch(r"\$\{([^}]+)\}", text)
        if match and match.group(1) in variables:
            return _plain(variables[match.group(1)])
    return value


class _Memo:
    """Rules and Conditions evaluated once per distinct value of the parameters each one reads: the
    combinations repeat them many times over."""

    def __init__(self, source: dict[str, Any], transformed: dict[str, Any]) -> None:
        self.source = source
        self.transformed = transformed
        definitions: dict[str, Any] = transformed.get("Conditions", {})
        self.rules = {
            name: sorted({n for n, _ in refs_to_parameters(rule)})
            for name, rule in source.get("Rules", {}).items()
        }
        direct = {name: {n for n, _ in refs_to_parameters(d)} for name, d in definitions.items()}
        used = {name: set(_conditions_in(d)) for name, d in definitions.items()}

        def reads(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
            found = set(direct[name])
            for other in used[name] - seen:
                found |= reads(other, seen | {name})
            return found

        self.conditions = {name: sorted(reads(name)) for name in definitions}
        self._refused: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._decided: dict[tuple[str, tuple[str, ...]], bool] = {}
        # A condition decides something only where it gates a resource, or an Fn::If inside a
        # resource that exists: the others are left out of the key that tells deployments apart.
        self.gating: dict[str, set[str | None]] = {}
        for resource in transformed["Resources"].values():
            owner = resource.get("Condition")
            if owner is not None:
                self.gating.setdefault(owner, set()).add(None)
            for condition in _conditions_in(resource):
                self.gating.setdefault(condition, set()).add(owner)

    def refusals(self, values: dict[str, str]) -> list[str]:
        found: list[str] = []
        for name, reads in self.rules.items():
            key = (name, tuple(values.get(n, "") for n in reads))
            if key not in self._refused:
                rule = {"Rules": {name: self.source["Rules"][name]}, "Parameters": self.source["Parameters"]}
                self._refused[key] = refusals(rule, values)
            found += self._refused[key]
        return found

    def conditions_of(self, values: dict[str, str]) -> dict[str, bool]:
        result: dict[str, bool] = {}
        missing = False
        for name, reads in self.conditions.items():
            key = (name, tuple(values.get(n, "") for n in reads))
            if key not in self._decided:
                missing = True
                break
            result[name] = self._decided[key]
        if not missing:
            return result
        decided = evaluate_conditions(self.transformed, values)
        for name, reads in self.conditions.items():
            self._decided[(name, tuple(values.get(n, "") for n in reads))] = decided[name]
        return decided

    def deciding(self, conditions: dict[str, bool]) -> tuple[tuple[str, bool], ...]:
        return tuple(
            (name, value)
            for name, value in sorted(conditions.items())
            if any(owner is None or conditions.get(owner, False) for owner in self.gating.get(name, ()))
        )


def _conditions_in(node: Any) -> Iterator[str]:
    """The Conditions a node names (Fn::If's first argument, Condition / Fn::Condition)."""
    if isinstance(node, list):
        for item in node:
            yield from _conditions_in(item)
    elif isinstance(node, dict):
        for key, arg in node.items():
            if key == "Fn::If" and isinstance(arg, list) and arg:
                yield str(arg[0])
                yield from _conditions_in(arg[1:])
            elif key in ("Condition", "Fn::Condition") and isinstance(arg, str):
                yield arg
            else:
                yield from _conditions_in(arg)


def deployable_combinations(
    source: dict[str, Any], transformed: dict[str, Any], base: dict[str, str]
) -> Iterator[Deployment]:
    """One Deployment per distinct outcome among the combinations the Rules accept: the Conditions
    that decide a resource or a property there, and the parameters the proofs read themselves (NAT,
    existing endpoints, an alarm e-mail of "none")."""
    memo = _Memo(source, transformed)
    seen: set[tuple[Any, ...]] = set()
    stated = [NAT_PARAMETER, *ENDPOINT_PARAMETERS.values()]
    for parameters in parameter_combinations(source, base):
        values = parameter_values(source, parameters)
        if memo.refusals(values):
            continue
        key = (
            memo.deciding(memo.conditions_of(values)),
            tuple(values.get(name) for name in stated),
            values.get("OpsAlarmEmail") == "none",
        )
        if key not in seen:
            seen.add(key)
            yield Deployment(source, transformed, values)


def _through_another_service(statement: dict[str, Any]) -> bool:
    """A grant used only by another service on the function's behalf (``kms:ViaService``: Secrets
    Manager decrypts with the key), so the function itself never calls that service."""
    return any("kms:ViaService" in tests for tests in statement.get("Condition", {}).values())


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def referenced_once(node: Any) -> str | None:
    names = list(referenced(node))
    return names[0] if names else None


def referenced(node: Any) -> Iterable[str]:
    """Logical ids a node refers to through Ref, Fn::GetAtt and Fn::Sub (parameters and pseudo
    parameters included; callers keep the resources)."""
    if isinstance(node, list):
        for item in node:
            yield from referenced(item)
    elif isinstance(node, dict):
        for key, arg in node.items():
            if key == "Ref" and isinstance(arg, str) and arg not in _PSEUDO:
                yield arg
            elif key == "Fn::GetAtt":
                yield (arg if isinstance(arg, list) else str(arg).split(".", 1))[0]
            elif key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    head = name.split(".", 1)[0]
                    if head not in variables and name not in _PSEUDO:
                        yield head
                yield from referenced(variables)
            else:
                yield from referenced(arg)
