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

Each check returns problems in plain words; an empty list means the deployment holds.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

#: The parameter with which the operator states that the VPC subnets route through a NAT gateway.
NAT_PARAMETER = "SubnetsHaveNat"
#: Per AWS service a function calls from the VPC, the parameter choosing its endpoint: "create" (the
#: stack's), "existing" (the operator states the VPC has one that the subnets use) or "none".
ENDPOINT_PARAMETERS = {
    "sns": "VpcEndpointSns",
    "secretsmanager": "VpcEndpointSecretsManager",
    "lambda": "VpcEndpointLambda",
    "s3": "VpcEndpointS3",
    "dynamodb": "VpcEndpointDynamoDb",
}
EXISTING_ENDPOINT = "existing"
#: Custom resources answer CloudFormation with a PUT to a pre-signed S3 URL.
CUSTOM_RESOURCE_RESPONSE_SERVICE = "s3"
REGION = "us-east-1"

CUSTOM_RESOURCE_TYPE = "AWS::CloudFormation::CustomResource"

#: Parameters that decide only who may act (callers, operators, keys, the application user, the
#: callback's firewall): each adds its own resources, grants and policy statements, and none changes
#: what the others decide. They vary in a product of their own across every ``SHAPE_PARAMETERS``
#: combination (the rest at their base values), while the full product of the others holds them at
#: theirs: multiplying that product (about 74,000 combinations) by theirs would take many minutes.
FENCE_PARAMETERS = frozenset(
    {
        "SecretKmsKeyArns",
        "OperatorPrincipalArns",
        "DbAppUserSecretArn",
        "CallerIdentity",
        "CognitoUserPoolArn",
        "OrderCallerPrincipalArns",
        "CallbackFirewall",
        "CallbackProviderCidrs",
    }
)
#: The deployment shapes the fences are crossed with: where the database is and how AWS is reached
#: (with each of the three uniform endpoint rows, see ``_covering_rows``).
SHAPE_PARAMETERS = frozenset({"CreateDatabase", "SubnetsHaveNat"})

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


# --------------------------------------------------------------------------- loading


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


# --------------------------------------------------------------------------- parameters, conditions, rules


def parameter_values(template: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """The stack's parameter values: the given ones over the template's defaults."""
    values = {
        name: str(spec["Default"])
        for name, spec in template.get("Parameters", {}).items()
        if "Default" in spec
    }
    values.update(given)
    return values


def _is_list_parameter(template: dict[str, Any], name: str) -> bool:
    kind = str(template.get("Parameters", {}).get(name, {}).get("Type", ""))
    return kind.startswith("List<") or kind == "CommaDelimitedList"


def _parameter_value(template: dict[str, Any], parameters: dict[str, str], name: str) -> Any:
    if name not in parameters:
        raise KeyError(f"parameter {name} has no value")
    value = parameters[name]
    return value.split(",") if _is_list_parameter(template, name) else value


def _evaluate(
    node: Any, template: dict[str, Any], parameters: dict[str, str], conditions: dict[str, bool] | None = None
) -> Any:
    """Evaluate the functions allowed in Conditions and Rules over parameter values."""
    if isinstance(node, list):
        return [_evaluate(n, template, parameters, conditions) for n in node]
    if not isinstance(node, dict):
        return str(node) if isinstance(node, int | float) and not isinstance(node, bool) else node
    if len(node) != 1:
        return node
    ((key, arg),) = node.items()

    def ev(n: Any) -> Any:
        return _evaluate(n, template, parameters, conditions)

    if key == "Ref":
        return _parameter_value(template, parameters, arg)
    if key == "Fn::Equals":
        left, right = ev(arg[0]), ev(arg[1])
        return str(left) == str(right) if not isinstance(left, list) else left == right
    if key == "Fn::Not":
        return not ev(arg[0])
    if key == "Fn::And":
        return all(ev(a) for a in arg)
    if key == "Fn::Or":
        return any(ev(a) for a in arg)
    if key in ("Condition", "Fn::Condition"):
        if conditions is None:
            raise ValueError("Conditions may not refer to Conditions in Rules")
        return conditions[arg]
    if key == "Fn::Join":
        separator, parts = arg
        values = ev(parts)
        return separator.join(str(v) for v in (values if isinstance(values, list) else [values]))
    if key == "Fn::Contains":
        return str(ev(arg[1])) in [str(v) for v in ev(arg[0])]
    if key == "Fn::EachMemberEquals":
        return all(str(v) == str(ev(arg[1])) for v in ev(arg[0]))
    if key == "Fn::EachMemberIn":
        allowed = [str(v) for v in ev(arg[1])]
        return all(str(v) in allowed for v in ev(arg[0]))
    raise ValueError(f"cannot evaluate {key} here")


def evaluate_conditions(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, bool]:
    definitions: dict[str, Any] = template.get("Conditions", {})
    conditions: dict[str, bool] = {}

    def resolve(name: str) -> bool:
        if name not in conditions:
            conditions[name] = bool(_evaluate(definitions[name], template, parameters, _Lazy(resolve)))
        return conditions[name]

    for name in definitions:
        resolve(name)
    return conditions


class _Lazy(dict):  # type: ignore[type-arg]
    """Conditions that refer to other conditions resolve them on first use."""

    def __init__(self, resolve: Any) -> None:
        super().__init__()
        self._resolve = resolve

    def __getitem__(self, name: str) -> bool:
        return bool(self._resolve(name))


def refusals(template: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """What the template's Rules would refuse at deploy time, with their messages."""
    messages = []
    for name, rule in template.get("Rules", {}).items():
        applies = rule.get("RuleCondition")
        if applies is not None and not _evaluate(applies, template, parameters):
            continue
        for assertion in rule.get("Assertions", []):
            if not _evaluate(assertion["Assert"], template, parameters):
                text = " ".join(str(assertion.get("AssertDescription", name)).split())
                messages.append(f"{name}: {text}")
    return messages


def _refs_to_parameters(node: Any) -> Iterator[tuple[str, list[str]]]:
    """(parameter, literal values it is compared with) for every Ref in Conditions/Rules."""
    if isinstance(node, list):
        for item in node:
            yield from _refs_to_parameters(item)
    elif isinstance(node, dict):
        for key, arg in node.items():
            if key in ("Fn::Equals", "Fn::EachMemberEquals") and isinstance(arg, list) and len(arg) == 2:
                for a, b in (arg, arg[::-1]):
                    if isinstance(a, dict) and set(a) == {"Ref"} and not isinstance(b, dict):
                        yield a["Ref"], [str(b)]
                    # A list parameter joined and compared with "" (is it empty?).
                    joined = a.get("Fn::Join") if isinstance(a, dict) and set(a) == {"Fn::Join"} else None
                    if (
                        joined
                        and isinstance(joined[1], dict)
                        and set(joined[1]) == {"Ref"}
                        and not isinstance(b, dict)
                    ):
                        yield joined[1]["Ref"], [str(b)]
            if key == "Fn::EachMemberIn" and isinstance(arg, list) and len(arg) == 2:
                a, b = arg
                if isinstance(a, dict) and set(a) == {"Ref"} and isinstance(b, list):
                    # Every allowed member at once: a value the Rule accepts.
                    yield a["Ref"], [",".join(str(v) for v in b)]
            if key == "Ref":
                yield arg, []
            else:
                yield from _refs_to_parameters(arg)


def _each_member_in(node: Any) -> list[Any]:
    """Every Fn::EachMemberIn inside a node."""
    if isinstance(node, list):
        return [found for item in node for found in _each_member_in(item)]
    if isinstance(node, dict):
        found = [{k: v} for k, v in node.items() if k == "Fn::EachMemberIn"]
        return found + [f for k, v in node.items() if k != "Fn::EachMemberIn" for f in _each_member_in(v)]
    return []


def _parameter_choices(template: dict[str, Any]) -> dict[str, list[str]]:
    """The values worth trying for each parameter that decides a Condition or a Rule: its allowed
    values, or the literals it is compared with plus one value unlike them (its default when that is
    unlike them, since any unlike value decides alike)."""
    specs = template.get("Parameters", {})
    compared: dict[str, set[str]] = {}
    for node in (template.get("Conditions", {}), template.get("Rules", {})):
        for name, literals in _refs_to_parameters(node):
            if name in specs:
                compared.setdefault(name, set()).update(literals)
    member_of = {
        n
        for node in template.get("Rules", {}).values()
        for n, _ in _refs_to_parameters(_each_member_in(node))
    }
    choices: dict[str, list[str]] = {}
    for name, compared_with in sorted(compared.items()):
        spec = specs[name]
        if "AllowedValues" in spec:
            choices[name] = [str(v) for v in spec["AllowedValues"]]
            continue
        values = set(compared_with)
        default = str(spec["Default"]) if "Default" in spec else None
        if default is not None and default not in values:
            values.add(default)
        elif name not in member_of:  # a Rule's whole allowed list already stands for "any other value"
            kind = str(spec.get("Type", "String"))
            values.add("7" if kind == "Number" else "example-value")
        choices[name] = sorted(values)
    return choices


#: Parameters that decide a Condition or a Rule but are varied one at a time from the defaults (with
#: the endpoint rows below) instead of multiplying every other combination: each decides one thing of
#: its own (the relay's fan-out and so its Lambda endpoint, the created database's port, its log
#: exports), which those rows exercise against every combination of the others.
COVERED_PARAMETERS = ("MaxRelayConcurrency", "DbPort", "DatabaseLogExports")


def _covering_rows(template: dict[str, Any], choices: dict[str, list[str]]) -> list[dict[str, str]]:
    """A covering set for the endpoint parameters and ``COVERED_PARAMETERS``, instead of their
    combinations (3^5 x 8 would multiply the proofs' run by almost 2,000). Each service's reach depends
    on its own endpoint parameter alone (with NAT and route tables, which stay fully enumerated, and
    the fan-out), so rows in which every endpoint parameter takes every value suffice for it: the
    three uniform rows. What the endpoints share (the endpoint security group, the migration's
    references to them) is exercised by three rows that mix the values, each parameter taking each
    value next to different ones. Each covered parameter then takes each of its other values once,
    with every endpoint created, and the fan-out also without a Lambda endpoint (the one case where
    a missing endpoint is no problem without NAT)."""
    specs = template.get("Parameters", {})
    names = [n for n in ENDPOINT_PARAMETERS.values() if n in choices]
    covered = [n for n in COVERED_PARAMETERS if n in choices]
    defaults = {n: str(specs[n].get("Default", choices[n][0])) for n in covered}
    rows: list[dict[str, str]] = []
    if names:
        modes = choices[names[0]]
        rows += [dict.fromkeys(names, mode) for mode in modes]
        rows += [
            {name: modes[(index + shift) % len(modes)] for index, name in enumerate(names)}
            for shift in range(1, len(modes))
        ]
        rows.append({name: modes[(index * 2) % len(modes)] for index, name in enumerate(names)})
    rows = [{**defaults, **row} for row in rows] or [dict(defaults)]
    first = dict(rows[0])
    for name in covered:
        for value in choices[name]:
            if value != defaults[name]:
                rows.append({**first, name: value})
                if name == "MaxRelayConcurrency" and ENDPOINT_PARAMETERS["lambda"] in first:
                    rows.append({**first, name: value, ENDPOINT_PARAMETERS["lambda"]: "none"})
    return rows


#: The parameters that decide which VPC function calls which service and what the migration waits
#: for: the only ones the endpoint rows can meet in a proof, so the only ones crossed with them.
NETWORK_PARAMETERS = (NAT_PARAMETER, "PrivateRouteTableIds", "CreateDatabase", "ArchiveSentMessages")


def parameter_combinations(
    template: dict[str, Any],
    base: dict[str, str],
    *,
    fences: frozenset[str] = FENCE_PARAMETERS,
    shapes: frozenset[str] = SHAPE_PARAMETERS,
) -> list[dict[str, str]]:
    """The combinations the proofs run, over ``base``:

    - every combination of the values that decide a Condition or a Rule (``_parameter_choices``)
      but the ``fences``, held at their base values, with the first covering row (``_covering_rows``:
      every endpoint created, the covered parameters at their defaults);
    - every other covering row with every combination of ``NETWORK_PARAMETERS`` (the rest at their
      base values or defaults);
    - the ``fences`` in a product of their own crossed with every combination of the ``shapes`` and
      the three uniform endpoint rows (the rest at their base values)."""
    choices = _parameter_choices(template)
    rows = _covering_rows(template, choices)
    held = {n: c for n, c in choices.items() if n not in fences and n not in rows[0]}
    network = {n: c for n, c in held.items() if n in NETWORK_PARAMETERS}
    fenced = {n: c for n, c in choices.items() if (n in fences or n in shapes) and n not in rows[0]}
    uniform = rows[: len(choices.get(ENDPOINT_PARAMETERS["sns"], [""]))]  # _covering_rows puts them first
    return (
        _product(base, held, rows[:1]) + _product(base, network, rows[1:]) + _product(base, fenced, uniform)
    )


def _product(
    base: dict[str, str], choices: dict[str, list[str]], rows: list[dict[str, str]]
) -> list[dict[str, str]]:
    names = list(choices)
    return [
        {**base, **dict(zip(names, combination, strict=True)), **row}
        for combination in itertools.product(*(choices[n] for n in names))
        for row in rows
    ]


# --------------------------------------------------------------------------- one deployment


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
            named = set(_referenced(self.properties(logical_id)))
            named |= set(_referenced(self.resolve_ifs(resource.get("Metadata", {}))))
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
                target = _referenced_once(self.properties(logical_id).get("ServiceToken"))
                if target is not None:
                    found.setdefault(target, []).append(logical_id)
        return found

    def custom_resources_of(self, function_id: str) -> list[str]:
        return self._custom_resources.get(function_id, [])

    def log_group_of(self, function_id: str) -> str | None:
        """The stack's log group the function writes to (its ``LoggingConfig.LogGroup``)."""
        target = _referenced_once(self.properties(function_id).get("LoggingConfig", {}).get("LogGroup"))
        return target if target in self.of_type("AWS::Logs::LogGroup") else None

    def role_statements(self, function_id: str) -> list[dict[str, Any]]:
        role = self.properties(function_id).get("Role")
        role_id = _referenced_once(role)
        if role_id is None or role_id not in self.resources:
            return []
        statements = []
        for policy in self.properties(role_id).get("Policies", []):
            document = policy.get("PolicyDocument", {})
            for statement in _as_list(document.get("Statement", [])):
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
            for action in _as_list(statement.get("Action", []))
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


# --------------------------------------------------------------------------- the proofs


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
        named_after = set(_referenced(deployment.properties(log_group).get("LogGroupName"))) & set(
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
    groups = {g for i in database for g in _referenced(deployment.properties(i))}
    for logical_id in deployment.of_type("AWS::EC2::SecurityGroupIngress"):
        if set(_referenced(deployment.properties(logical_id).get("GroupId"))) & groups:
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
            target_id = _referenced_once(target.get("Arn"))
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
        _referenced_once(deployment.properties(q).get("RedrivePolicy", {}).get("deadLetterTargetArn"))
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
    for cluster_id in deployment.of_type("AWS::RDS::DBCluster"):
        if not any(
            m.get("Namespace") == "AWS/RDS" and _dimension(m, "DBClusterIdentifier") == {"Ref": cluster_id}
            for alarm in alarms.values()
            for m in _metrics_of(alarm)
        ):
            problems.append(f"no alarm watches the database cluster {cluster_id}")
    for proxy_id in deployment.of_type("AWS::RDS::DBProxy"):
        if not any(
            m.get("Namespace") == "AWS/RDS" and _dimension(m, "ProxyName") == {"Ref": proxy_id}
            for alarm in alarms.values()
            for m in _metrics_of(alarm)
        ):
            problems.append(f"no alarm watches the database proxy {proxy_id}")
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
        _referenced_once(deployment.properties(s).get("TopicArn"))
        for s in deployment.of_type("AWS::SNS::Subscription")
    }
    problems = []
    unheard: dict[str, list[str]] = {}
    for alarm_id, alarm in sorted(alarms.items()):
        topics = [_referenced_once(a) for a in alarm.get("AlarmActions", [])]
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
        dlq_id = _referenced_once(props.get("RedrivePolicy", {}).get("deadLetterTargetArn"))
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
            deployment.properties(_referenced_once(props.get("Endpoint")) or ""),
            deployment.properties(dlq_id),
        )
        if bool(dlq.get("FifoQueue")) != bool(queue.get("FifoQueue")):
            problems.append(f"{subscription_id}: {dlq_id} must be FIFO exactly when its queue is")
        for key in ("SqsManagedSseEnabled", "KmsMasterKeyId"):
            if not _same(dlq.get(key), queue.get(key)):
                problems.append(f"{subscription_id}: {dlq_id} is not encrypted as its queue is ({key})")
        topic = _referenced_once(props.get("TopicArn"))
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
                target = next(iter(_referenced(integration.get("uri"))), None)
                if target and not any(
                    _referenced_once(p.get("FunctionName")) == target
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
            if s.get("Effect") == "Allow" and "secretsmanager:GetSecretValue" in _as_list(s.get("Action", []))
        ]
        for name, value in deployment.environment(function_id).items():
            if not name.endswith("_SECRET_ARN") or _is_empty(deployment, value):
                continue
            if not any(
                _same(value, g) or (isinstance(g, list) and any(_same(value, x) for x in g)) for g in granted
            ):
                problems.append(f"{function_id} reads {name} but its role may not read that secret")
    return problems


# --------------------------------------------------------------------------- resource policies

#: A principal of the account that the template names nowhere, with every IAM permission it might hold.
OUTSIDER = "arn:aws:iam::123456789012:role/a-role-the-template-does-not-name"
#: The topic delivering to a queue: SNS's service principal, acting for the topic.
SNS_SERVICE = "sns.amazonaws.com"


@dataclass(frozen=True)
class Caller:
    """Who makes a request, as a resource policy sees it: an IAM principal's ARN (a literal or the
    template's expression for it), or an AWS service acting for a resource of the stack."""

    principal_arn: Any = None
    service: str | None = None
    source_arn: Any = None

    def context(self) -> dict[str, list[Any]]:
        """The request context's keys (absent keys are missing, as in AWS)."""
        keys: dict[str, list[Any]] = {"aws:PrincipalIsAWSService": ["true" if self.service else "false"]}
        if self.principal_arn is not None:
            keys["aws:PrincipalArn"] = [self.principal_arn]
        if self.source_arn is not None:
            keys["aws:SourceArn"] = [self.source_arn]
        return keys


def policy_statements(deployment: Deployment, policy_type: str, list_key: str, target: Any) -> list[Any]:
    """The statements of every resource policy of ``policy_type`` that applies to ``target``."""
    statements: list[Any] = []
    for logical_id in deployment.of_type(policy_type):
        props = deployment.properties(logical_id)
        if any(_same(target, t) for t in _as_list(props.get(list_key, []))):
            statements += _as_list(props.get("PolicyDocument", {}).get("Statement", []))
    return statements


def denies(
    deployment: Deployment, statements: list[Any], action: str, caller: Caller, resource: str | None = None
) -> bool:
    """An explicit Deny applies to the caller's request (which no identity policy can overrule);
    ``resource``, when given, is matched with the statements' (else each policy has one resource)."""
    return any(
        _applies(deployment, s, action, caller, resource) for s in statements if s.get("Effect") == "Deny"
    )


def allows(
    deployment: Deployment, statements: list[Any], action: str, caller: Caller, resource: str | None = None
) -> bool:
    return any(
        _applies(deployment, s, action, caller, resource) for s in statements if s.get("Effect") == "Allow"
    )


def _applies(
    deployment: Deployment, statement: dict[str, Any], action: str, caller: Caller, resource: str | None
) -> bool:
    actions = [str(a) for a in _as_list(statement.get("Action", []))]
    if not any(fnmatch.fnmatchcase(action, a) for a in actions):
        return False
    if resource is not None and not any(
        isinstance(r, str) and fnmatch.fnmatchcase(resource, r) for r in _as_list(statement.get("Resource"))
    ):
        return False
    principal = statement.get("Principal")
    if principal != "*":
        named = principal if isinstance(principal, dict) else {}
        if caller.service is not None:
            if caller.service not in _as_list(named.get("Service", [])):
                return False
        elif not any(_matches(caller.principal_arn, p) for p in _as_list(named.get("AWS", []))):
            return False
    context = caller.context()
    for operator, tests in statement.get("Condition", {}).items():
        for key, wanted in tests.items():
            if not _condition_holds(operator, context.get(key), _values(deployment, wanted)):
                return False
    return True


def _condition_holds(operator: str, present: list[Any] | None, wanted: list[Any]) -> bool:
    """IAM's condition operators as far as the template uses them, with IAM's rule for a missing key:
    a positive test fails, a negated one holds, ``...IfExists`` holds."""
    if operator == "Null":
        return (present is None) == (str(wanted[0]).lower() == "true")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    negated = "Not" in base
    if present is None:
        return if_exists or negated
    like = base.endswith("Like") or base.startswith("Arn")
    if base == "Bool":
        matched = any(str(v).lower() == str(w).lower() for v in present for w in wanted)
    else:
        matched = any(_matches(v, w, wildcards=like) for v in present for w in wanted)
    return not matched if negated else matched


def _matches(value: Any, pattern: Any, *, wildcards: bool = True) -> bool:
    if isinstance(value, str) and isinstance(pattern, str):
        return fnmatch.fnmatchcase(value, pattern) if wildcards else value == pattern
    return _same(value, pattern)


def _values(deployment: Deployment, wanted: Any) -> list[Any]:
    """A condition's values, a list parameter's items spread out."""
    values: list[Any] = []
    for value in _as_list(wanted):
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in deployment.parameters:
            values += _as_list(_parameter_value(deployment.source, deployment.parameters, value["Ref"]))
        else:
            values.append(value)
    return values


def _role_arn(deployment: Deployment, function_id: str) -> Any:
    return deployment.properties(function_id).get("Role")


def _list_parameter(deployment: Deployment, name: str) -> list[str]:
    return [v for v in deployment.parameters.get(name, "").split(",") if v]


def envelope_problems(deployment: Deployment) -> list[str]:
    """Envelopes cannot be forged: every topic a function publishes envelopes to (its
    ``ORDER_EVENTS_TOPIC_ARN``) denies sns:Publish to every principal but those functions' roles, and
    every queue denies sqs:SendMessage to every principal but the named operators, while the topic's
    deliveries to its subscribed queues stay allowed."""
    problems = []
    publishers: dict[str, list[str]] = {}
    for function_id in sorted(deployment.functions):
        topic = deployment.environment(function_id).get("ORDER_EVENTS_TOPIC_ARN")
        if topic is not None:
            publishers.setdefault(str(_referenced_once(topic)), []).append(function_id)
    others = {f: _role_arn(deployment, f) for f in deployment.functions}
    for topic_id, writers in sorted(publishers.items()):
        statements = policy_statements(deployment, "AWS::SNS::TopicPolicy", "Topics", {"Ref": topic_id})
        for function_id, role in sorted(others.items()):
            denied = denies(deployment, statements, "sns:Publish", Caller(principal_arn=role))
            if function_id in writers and denied:
                problems.append(f"{topic_id}'s policy denies {function_id}, which publishes envelopes")
            if function_id not in writers and not denied:
                problems.append(f"{function_id}'s role could publish envelopes to {topic_id}")
        for outsider in [OUTSIDER, *_list_parameter(deployment, "OperatorPrincipalArns")]:
            if not denies(deployment, statements, "sns:Publish", Caller(principal_arn=outsider)):
                problems.append(f"{outsider} could publish envelopes to {topic_id} if its IAM policy allowed")
    subscribed = {
        _referenced_once(deployment.properties(s).get("Endpoint")): _referenced_once(
            deployment.properties(s).get("TopicArn")
        )
        for s in deployment.of_type("AWS::SNS::Subscription")
        if deployment.properties(s).get("Protocol") == "sqs"
    }
    operators = _list_parameter(deployment, "OperatorPrincipalArns")
    for queue_id in sorted(deployment.of_type("AWS::SQS::Queue")):
        arn = {"Fn::GetAtt": [queue_id, "Arn"]}
        statements = policy_statements(deployment, "AWS::SQS::QueuePolicy", "Queues", {"Ref": queue_id})
        senders = [(OUTSIDER, OUTSIDER)] + [(f"{f}'s role", r) for f, r in sorted(others.items())]
        for name, principal in senders:
            if not denies(deployment, statements, "sqs:SendMessage", Caller(principal_arn=principal)):
                problems.append(f"{name} could send forged envelopes to {queue_id}")
        for operator in operators:
            if denies(deployment, statements, "sqs:SendMessage", Caller(principal_arn=operator)):
                problems.append(f"{queue_id} denies the operator {operator}, who redrives its dead letters")
        source = subscribed.get(queue_id)
        if source is not None:
            delivery = Caller(service=SNS_SERVICE, source_arn={"Ref": source})
            if denies(deployment, statements, "sqs:SendMessage", delivery) or not allows(
                deployment, statements, "sqs:SendMessage", delivery
            ):
                problems.append(f"{source} cannot deliver to {queue_id}, which it is subscribed to")
        elif not statements:
            problems.append(f"{queue_id} ({arn}) has no policy: any principal of the account may send to it")
    return problems


def secret_key_problems(deployment: Deployment) -> list[str]:
    """Functions that read secrets may decrypt with exactly the secrets' customer managed keys
    (``SecretKmsKeyArns``), only through Secrets Manager; with none given, no function holds any
    KMS grant."""
    problems = []
    keys = {"Ref": "SecretKmsKeyArns"}
    given = bool(_list_parameter(deployment, "SecretKmsKeyArns"))
    for function_id in sorted(deployment.functions):
        reads_secrets = any(
            name.endswith("_SECRET_ARN") and not _is_empty(deployment, value)
            for name, value in deployment.environment(function_id).items()
        )
        kms = [
            s
            for s in deployment.role_statements(function_id)
            if s.get("Effect") == "Allow"
            and any(str(a).startswith("kms:") for a in _as_list(s.get("Action")))
        ]
        for statement in kms:
            via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            if _as_list(statement.get("Action")) != ["kms:Decrypt"] or statement.get("Resource") != keys:
                problems.append(f"{function_id} may use KMS beyond decrypting with SecretKmsKeyArns")
            if not (isinstance(via, dict) and "secretsmanager." in str(via.get("Fn::Sub", ""))):
                problems.append(f"{function_id} may decrypt with the secrets' keys outside Secrets Manager")
        if given and reads_secrets and not kms:
            problems.append(f"{function_id} reads secrets but may not decrypt them with SecretKmsKeyArns")
        if kms and not (given and reads_secrets):
            problems.append(f"{function_id} holds a KMS grant it does not need")
    return problems


def database_user_problems(deployment: Deployment) -> list[str]:
    """Every function but the schema migrator connects as the application user: another secret than
    the migrator's, which its role may not read either."""
    migrators = [f for f in deployment.functions if deployment.custom_resources_of(f)]
    master = [deployment.environment(f).get("DB_SECRET_ARN") for f in migrators]
    problems = []
    for function_id in sorted(deployment.functions):
        if function_id in migrators or not deployment.uses_database(function_id):
            continue
        secret = deployment.environment(function_id).get("DB_SECRET_ARN")
        if any(_same(secret, m) for m in master) or secret in (None, ""):
            problems.append(f"{function_id} connects with the schema migrator's credentials")
        readable = [
            s.get("Resource")
            for s in deployment.role_statements(function_id)
            if "secretsmanager:GetSecretValue" in _as_list(s.get("Action", []))
        ]
        if any(_same(r, m) for r in readable for m in master):
            problems.append(f"{function_id}'s role may read the schema migrator's credentials")
    return problems


#: Sample path parameters for the routes' resource ARNs.
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")
ANONYMOUS = Caller()


def api_routes(deployment: Deployment, api_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the operation, of the API's definition in this deployment."""
    body = deployment.properties(api_id).get("Body", {})
    return {
        (method.upper(), path): operation
        for path, methods in body.get("paths", {}).items()
        for method, operation in methods.items()
        if isinstance(operation, dict)
    }


def route_security(deployment: Deployment, api_id: str, operation: dict[str, Any]) -> dict[str, Any] | None:
    """The security scheme a route demands (its definition), or None for an open route."""
    names = [name for entry in operation.get("security", []) for name in entry]
    if not names:
        return None
    schemes = deployment.properties(api_id).get("Body", {}).get("components", {}).get("securitySchemes", {})
    scheme: dict[str, Any] = schemes.get(names[0], {"missing": names[0]})
    return scheme


def reaches(deployment: Deployment, statements: list[Any], caller: Caller, arn: str) -> bool:
    """The API's resource policy lets the caller invoke the route ``arn`` (an explicit Allow, no Deny)."""
    return allows(deployment, statements, "execute-api:Invoke", caller, arn) and not denies(
        deployment, statements, "execute-api:Invoke", caller, arn
    )


def caller_problems(deployment: Deployment) -> list[str]:
    """Who may reach each route of each API: the route's authorizer, and the API's resource policy
    evaluated for the principals the parameters name, one they do not name, and an anonymous caller."""
    problems = []
    mode = deployment.parameters.get("CallerIdentity", "iam")
    callers = _list_parameter(deployment, "OrderCallerPrincipalArns")
    operators = _list_parameter(deployment, "OperatorPrincipalArns")
    pool = (
        {"Ref": "CognitoUserPoolArn"}
        if deployment.parameters.get("CognitoUserPoolArn")
        else {"Fn::GetAtt": ["OrderUserPool", "Arn"]}
    )
    for api_id in sorted(deployment.of_type("AWS::ApiGateway::RestApi")):
        policy = deployment.properties(api_id).get("Body", {}).get("x-amazon-apigateway-policy", {})
        statements = _as_list(policy.get("Statement", []))
        if not statements:
            problems.append(f"{api_id} has no resource policy: any principal's IAM policy decides alone")
        for (method, path), operation in sorted(api_routes(deployment, api_id).items()):
            route = f"{method} {path}"
            stage = deployment.parameters.get("Stage", "dev")
            arn = f"execute-api:/{stage}/{method}{_PATH_PARAMETER.sub('1', path)}"
            scheme = route_security(deployment, api_id, operation)
            authtype = None if scheme is None else scheme.get("x-amazon-apigateway-authtype")

            if path.startswith("/admin/"):
                named, unnamed = operators, [OUTSIDER, *[c for c in callers if c not in operators]]
                wanted = "awsSigv4"
            elif path.startswith("/orders") and mode == "iam":
                named, unnamed = callers, [OUTSIDER, *[o for o in operators if o not in callers]]
                wanted = "awsSigv4"
            elif path.startswith("/orders"):
                named, unnamed, wanted = [OUTSIDER], [], "cognito_user_pools"
                providers = (scheme or {}).get("x-amazon-apigateway-authorizer", {}).get("providerARNs", [])
                if not any(_same(p, pool) for p in providers):
                    problems.append(f"{route} accepts tokens of {providers}, not of the user pool {pool}")
            else:
                # The callback: open to the provider (its signature decides), IAM callers or none.
                if scheme is not None or not reaches(deployment, statements, ANONYMOUS, arn):
                    problems.append(f"{route} is no longer open to the payment provider")
                continue
            if authtype != wanted:
                problems.append(f"{route} is authorised by {authtype}, not {wanted} (CallerIdentity={mode})")
            for principal in named:
                if not reaches(deployment, statements, Caller(principal_arn=principal), arn):
                    problems.append(f"{route} refuses {principal}, whom the parameters name")
            for principal in unnamed:
                if reaches(deployment, statements, Caller(principal_arn=principal), arn):
                    problems.append(f"{route} lets {principal} through, whom no parameter names")
    return problems


def callback_problems(deployment: Deployment) -> list[str]:
    """The open callback is fenced: a method throttle of its own on every stage, and with
    ``CallbackFirewall`` a web ACL on the stage that rate-limits callbacks by source address and, given
    ``CallbackProviderCidrs``, blocks callbacks from any other address."""
    problems = []
    for stage_id in sorted(deployment.of_type("AWS::ApiGateway::Stage")):
        settings = deployment.properties(stage_id).get("MethodSettings", [])
        own = [
            s
            for s in settings
            if (s.get("ResourcePath"), s.get("HttpMethod")) == ("/~1payments~1notify", "POST")
            and s.get("ThrottlingRateLimit") == {"Ref": "CallbackThrottlingRateLimit"}
            and s.get("ThrottlingBurstLimit") == {"Ref": "CallbackThrottlingBurstLimit"}
        ]
        if not own:
            problems.append(f"{stage_id}: POST /payments/notify has no throttle of its own")
    acls = deployment.of_type("AWS::WAFv2::WebACL")
    wanted = deployment.parameters.get("CallbackFirewall") == "true"
    if not wanted:
        if acls:
            problems.append(f"CallbackFirewall is off but the stack creates {sorted(acls)}")
        return problems
    associated = [
        deployment.properties(a)
        for a in deployment.of_type("AWS::WAFv2::WebACLAssociation")
        if _referenced_once(deployment.properties(a).get("WebACLArn")) in acls
    ]
    stages = set(deployment.of_type("AWS::ApiGateway::Stage"))
    if not any(
        {"PaymentApi"} <= set(_referenced(a.get("ResourceArn")))
        or stages & set(_referenced(a.get("ResourceArn")))
        for a in associated
    ):
        problems.append("no web ACL is associated with the API's stage")
    logged = {
        _referenced_once(deployment.properties(c).get("ResourceArn"))
        for c in deployment.of_type("AWS::WAFv2::LoggingConfiguration")
    }
    problems += [f"{acl}'s decisions are not logged" for acl in sorted(acls) if acl not in logged]
    rules = [r for acl in acls for r in deployment.properties(acl).get("Rules", [])]
    rate = [
        r
        for r in rules
        if "Block" in r.get("Action", {})
        and r.get("Statement", {}).get("RateBasedStatement", {}).get("Limit")
        == {"Ref": "CallbackFirewallRateLimit"}
        and _matches_callback(r["Statement"]["RateBasedStatement"].get("ScopeDownStatement", {}))
    ]
    if not rate:
        problems.append("the web ACL has no rate-based rule blocking a flood of callbacks")
    cidrs = _list_parameter(deployment, "CallbackProviderCidrs")
    sets = deployment.of_type("AWS::WAFv2::IPSet")
    fenced = [
        r
        for r in rules
        if "Block" in r.get("Action", {})
        and _matches_callback(r.get("Statement", {}))
        and any(
            _referenced_once(n.get("Statement", {}).get("IPSetReferenceStatement", {}).get("Arn")) in sets
            and deployment.properties(
                str(_referenced_once(n["Statement"]["IPSetReferenceStatement"]["Arn"]))
            ).get("Addresses")
            == {"Ref": "CallbackProviderCidrs"}
            for n in _statements_within(r.get("Statement", {}))
            if "Statement" in n
        )
    ]
    if cidrs and not fenced:
        problems.append("callbacks from addresses outside CallbackProviderCidrs are not blocked")
    if not cidrs and (fenced or sets):
        problems.append("with no CallbackProviderCidrs given, an address list still fences the callback")
    return problems


def _statements_within(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """A WAF statement's direct parts (an AND's statements, a NOT's statement), itself included."""
    found = [statement]
    for nested in ("AndStatement", "OrStatement"):
        found += statement.get(nested, {}).get("Statements", [])
    return found + [s.get("NotStatement", {}) for s in list(found) if "NotStatement" in s]


def _matches_callback(statement: dict[str, Any]) -> bool:
    """The statement (or one of an AND's parts) matches requests to the callback's path."""
    for part in _statements_within(statement):
        match = part.get("ByteMatchStatement", {})
        if "UriPath" in match.get("FieldToMatch", {}) and str(match.get("SearchString", "")).endswith(
            "/payments/notify"
        ):
            return True
    return False


def _is_empty(deployment: Deployment, value: Any) -> bool:
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in deployment.parameters:
        return deployment.parameters[value["Ref"]] == ""
    return bool(value == "")


def _same(a: Any, b: Any) -> bool:
    return bool(_plain(a) == _plain(b))


def _plain(value: Any) -> Any:
    """``Fn::Sub ["${x}", {x: V}]`` (how SAM's policy templates wrap an ARN) is just V."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], list):
        text, variables = value["Fn::Sub"]
        match = re.fullmatch(r"\$\{([^}]+)\}", text)
        if match and match.group(1) in variables:
            return _plain(variables[match.group(1)])
    return value


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


class _Memo:
    """Rules and Conditions evaluated once per distinct value of the parameters each one reads: the
    combinations repeat them many times over."""

    def __init__(self, source: dict[str, Any], transformed: dict[str, Any]) -> None:
        self.source = source
        self.transformed = transformed
        definitions: dict[str, Any] = transformed.get("Conditions", {})
        self.rules = {
            name: sorted({n for n, _ in _refs_to_parameters(rule)})
            for name, rule in source.get("Rules", {}).items()
        }
        direct = {name: {n for n, _ in _refs_to_parameters(d)} for name, d in definitions.items()}
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


# --------------------------------------------------------------------------- reference helpers


def _through_another_service(statement: dict[str, Any]) -> bool:
    """A grant used only by another service on the function's behalf (``kms:ViaService``: Secrets
    Manager decrypts with the key), so the function itself never calls that service."""
    return any("kms:ViaService" in tests for tests in statement.get("Condition", {}).values())


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _referenced_once(node: Any) -> str | None:
    names = list(_referenced(node))
    return names[0] if names else None


def _referenced(node: Any) -> Iterable[str]:
    """Logical ids a node refers to through Ref, Fn::GetAtt and Fn::Sub (parameters and pseudo
    parameters included; callers keep the resources)."""
    if isinstance(node, list):
        for item in node:
            yield from _referenced(item)
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
                yield from _referenced(variables)
            else:
                yield from _referenced(arg)
