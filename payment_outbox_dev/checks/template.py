"""Reads template.yaml: the one CloudFormation loader, and the resources, functions and environments that
run locally."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """A safe YAML loader that keeps CloudFormation short tags (``!Ref X``, ``!GetAtt A.B``, ``!Sub``…) as
    their long form (``{"Ref": "X"}``, ``{"Fn::GetAtt": ["A", "B"]}``): plain data, nothing constructed."""


def _short_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path) -> dict[str, Any]:
    """template.yaml as data — the one CloudFormation loader of the tooling and the tests."""
    with path.open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506  # nosec B506 - a SafeLoader
    return document


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    #: API Gateway authenticates the caller (AWS_IAM or a Cognito authorizer): as the route's event
    #: says, or its API's default authorizer, or — for a route whose authorizer a parameter chooses,
    #: such as the order routes by CallerIdentity — the security of its API's definition.
    authorized: bool = False


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: str
    handler: str
    environment: dict[str, Any] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)


def functions(template: dict[str, Any]) -> list[FunctionSpec]:
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    specs = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        env = {**globals_env, **props.get("Environment", {}).get("Variables", {})}
        specs.append(
            FunctionSpec(logical_id, props["CodeUri"], props["Handler"], env, props.get("Events", {}))
        )
    return specs


def api_routes(template: dict[str, Any]) -> list[Route]:
    routes = []
    for spec in functions(template):
        for event in spec.events.values():
            if event.get("Type") == "Api":
                props = event["Properties"]
                method, path = props["Method"].upper(), props["Path"]
                api = _api_of(template, props.get("RestApiId"))
                authorizer = (props.get("Auth") or {}).get("Authorizer") or (
                    (api.get("Auth") or {}).get("DefaultAuthorizer")
                )
                authorized = (authorizer is not None and authorizer != "NONE") or bool(
                    _definition_security(api, method, path)
                )
                routes.append(Route(method, path, spec.logical_id, authorized))
    return routes


def _api_of(template: dict[str, Any], api: Any) -> dict[str, Any]:
    """The properties of the API a route names (``RestApiId: !Ref Api``); empty for the implicit one."""
    name = api.get("Ref") if isinstance(api, dict) else None
    resource = template.get("Resources", {}).get(name) if isinstance(name, str) else None
    properties: dict[str, Any] = (resource or {}).get("Properties") or {}
    return properties


def _definition_security(api: dict[str, Any], method: str, path: str) -> list[Any]:
    """The security schemes the API's own definition demands of a route, in any branch of an
    ``Fn::If`` (both branches of the order routes' authorizer authenticate)."""
    operation = (api.get("DefinitionBody") or {}).get("paths", {}).get(path, {}).get(method.lower(), {})
    security = operation.get("security", []) if isinstance(operation, dict) else []
    if isinstance(security, dict) and "Fn::If" in security:
        _, when_true, when_false = security["Fn::If"]
        return [*when_true, *when_false]
    return list(security)


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v.get("Type") == resource_type}


@dataclass(frozen=True)
class SqsEventSource:
    """An SQS event source mapping: ``function`` polls the queue ``queue`` (a logical id)."""

    function: str
    queue: str
    batch_size: int = 10
    #: ``FunctionResponseTypes: [ReportBatchItemFailures]``: only the records the function names fail.
    reports_item_failures: bool = False


@dataclass(frozen=True)
class ScheduleSource:
    """A ``Schedule`` event: EventBridge invokes ``function`` on ``expression``."""

    function: str
    #: The event's name under the function's ``Events``.
    name: str
    #: ``rate(1 minute)`` or ``cron(...)``.
    expression: str
    #: The event's ``Enabled`` (a disabled schedule never fires, locally either).
    enabled: bool = True


@dataclass(frozen=True)
class AlarmSpec:
    """A CloudWatch alarm on one metric (the parts a local evaluation needs)."""

    logical_id: str
    #: The metric: the dimensions that pick it, its namespace and its name.
    dimensions: dict[str, str]
    namespace: str
    metric: str
    statistic: str
    period_seconds: int
    threshold: float
    comparison: str

    def breached(self, value: float) -> bool:
        comparisons = {
            "GreaterThanOrEqualToThreshold": value >= self.threshold,
            "GreaterThanThreshold": value > self.threshold,
            "LessThanThreshold": value < self.threshold,
            "LessThanOrEqualToThreshold": value <= self.threshold,
        }
        return comparisons.get(self.comparison, False)


def _logical_id_of(value: Any) -> str | None:
    """The logical id a ``!GetAtt X.Arn`` or ``!Ref X`` names, or None for a literal."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    return None


def sqs_event_sources(template: dict[str, Any]) -> list[SqsEventSource]:
    """Every function's SQS event sources, in template order."""
    sources = []
    for spec in functions(template):
        for event in spec.events.values():
            if event.get("Type") != "SQS":
                continue
            props = event.get("Properties", {})
            queue = _logical_id_of(props.get("Queue"))
            if queue is None:
                raise ValueError(f"{spec.logical_id}: an SQS event source must name a queue of the template")
            sources.append(
                SqsEventSource(
                    function=spec.logical_id,
                    queue=queue,
                    batch_size=int(props.get("BatchSize", 10)),
                    reports_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
            )
    return sources


def schedules(template: dict[str, Any]) -> list[ScheduleSource]:
    """Every function's ``Schedule`` (and ``ScheduleV2``) events."""
    found = []
    for spec in functions(template):
        for name, event in spec.events.items():
            if event.get("Type") not in ("Schedule", "ScheduleV2"):
                continue
            props = event.get("Properties", {})
            expression = props.get("Schedule") or props.get("ScheduleExpression") or ""
            enabled = bool(props.get("Enabled", True))
            found.append(ScheduleSource(spec.logical_id, name, str(expression), enabled))
    return found


def alarms(template: dict[str, Any]) -> list[AlarmSpec]:
    """Single-metric CloudWatch alarms (metric-math alarms are left out)."""
    found = []
    for logical_id, resource in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        props = resource.get("Properties", {})
        if "MetricName" not in props:
            continue
        found.append(
            AlarmSpec(
                logical_id=logical_id,
                namespace=str(props.get("Namespace", "")),
                metric=str(props["MetricName"]),
                dimensions={
                    str(d["Name"]): str(d["Value"])
                    for d in props.get("Dimensions", [])
                    if isinstance(d.get("Value"), str)
                },
                statistic=str(props.get("Statistic", "Sum")),
                period_seconds=int(props.get("Period", 60)),
                threshold=float(_parameter_default(template, props.get("Threshold", 0))),
                comparison=str(props.get("ComparisonOperator", "GreaterThanOrEqualToThreshold")),
            )
        )
    return found


def _parameter_default(template: dict[str, Any], value: Any) -> Any:
    """A literal as it is; ``!Ref Parameter`` as that parameter's default (what a local run uses)."""
    if isinstance(value, dict) and "Ref" in value:
        return template.get("Parameters", {}).get(value["Ref"], {}).get("Default", 0)
    return value


def find_function(template: dict[str, Any], name: str) -> FunctionSpec:
    """The function ``name`` designates: its logical id (``PaymentApiFunction``), or a short form of it
    in any case and separator style (``PaymentApi``, ``payment_api``, ``payment-api``), or the folder
    of its code (``functions/payment_api``)."""

    def normal(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    wanted = normal(name)
    specs = functions(template)
    for spec in specs:
        folder = spec.code_uri.rstrip("/").rsplit("/", 1)[-1]
        short = spec.logical_id.removesuffix("Function")
        if wanted in {normal(spec.logical_id), normal(short), normal(folder)}:
            return spec
    known = ", ".join(spec.logical_id for spec in specs)
    raise LookupError(f"no function {name!r} in the template; its functions: {known}")
