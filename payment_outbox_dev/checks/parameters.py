"""The template's parameters as CloudFormation reads them — values with their defaults, Conditions and
Rules evaluated for given values — and the combinations the template proofs enumerate (with the
parameters that decide them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
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
    "sqs": "VpcEndpointSqs",
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


def parameter_value(template: dict[str, Any], parameters: dict[str, str], name: str) -> Any:
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
        return parameter_value(template, parameters, arg)
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


def refs_to_parameters(node: Any) -> Iterator[tuple[str, list[str]]]:
    """(parameter, literal values it is compared with) for every Ref in Conditions/Rules."""
    if isinstance(node, list):
        for item in node:
            yield from refs_to_parameters(item)
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
                yield from refs_to_parameters(arg)


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
        for name, literals in refs_to_parameters(node):
            if name in specs:
                compared.setdefault(name, set()).update(literals)
    member_of = {
        n for node in template.get("Rules", {}).values() for n, _ in refs_to_parameters(_each_member_in(node))
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
#: exports), which those rows exercise against every combination of ``NETWORK_PARAMETERS``.
COVERED_PARAMETERS = ("MaxRelayConcurrency", "DbPort", "DatabaseLogExports")


def _covering_rows(template: dict[str, Any], choices: dict[str, list[str]]) -> list[dict[str, str]]:
    """A covering set for the endpoint parameters and ``COVERED_PARAMETERS``, instead of their combinations
    (3^5 x 8 would multiply the proofs' run by almost 2,000). Each service's reach depends on its own
    endpoint parameter alone (with NAT, route tables, the database mode and the archive, which
    ``parameter_combinations`` crosses with every row, and the fan-out), so rows in which every endpoint
    parameter takes every value suffice for it: the three uniform rows. What the endpoints share (the
    endpoint security group, the migration's references to them) is exercised by three rows that mix the
    values, each parameter taking each value next to different ones. Each covered parameter then takes
    each of its other values once, with every endpoint created, and the fan-out also without a Lambda
    endpoint (the one case where a missing endpoint is no problem without NAT)."""
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
