"""``payment-outbox preflight``: before ``sam deploy``, say in plain words what would hang, fail or stay
silent with *your* parameter values (samconfig.toml's environment plus ``--parameter-overrides``).

It runs offline the proofs ``make test`` runs for every parameter combination (deploy order, network
reach, alarm coverage, the operator's IAM path, secret grants), and adds what only your values show:
parameters left empty or as placeholders, Rules that would refuse the deploy, TLS to an RDS endpoint
without its CA bundle. With ``--aws`` it also asks the account, read-only and with your credentials,
what it alone can tell (``payment_outbox_dev.checks.account``): VPC DNS, endpoints, routes, zones,
security groups, the Lambda concurrency quota, the engine version, the secrets, the SMS sandbox and
the API Gateway logging role.
"""

from __future__ import annotations

import argparse
import shlex
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payment_outbox_dev.arguments import CommandError, root_of
from payment_outbox_dev.checks import template_proofs as proofs
from payment_outbox_dev.checks.account import Clients, account_findings
from payment_outbox_dev.checks.template import load_template

PLACEHOLDER = "REPLACE_ME"

#: Each proof's problems, and what they mean for the deploy or for the deployed system.
CONSEQUENCES = {
    "deploy order": "would hang or fail during the deploy",
    "network reach": "would hang (the schema migrator's answer) or time out at run time",
    "alarms": "would stay silent",
    "subscriptions": "would drop a message SNS cannot deliver to its queue while its outbox row says SENT",
    "operator path": "would answer operators 500",
    "grants": "would be denied at run time",
    "envelopes": "would let a principal forge envelopes (points are money), or stop their delivery",
    "secret keys": "would be denied at run time, or grant more than the secrets need",
    "database users": "would connect with the schema migrator's credentials",
    "callers": "would let the wrong callers through, or refuse the right ones",
    "callback": "would leave the open callback unfenced",
}


@dataclass
class Report:
    blocking: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The Region the account was asked about (--aws), if it was.
    asked: str | None = None

    def add(self, heading: str, problems: Iterable[str]) -> None:
        found = list(dict.fromkeys(problems))
        if found:
            self.blocking.setdefault(heading, []).extend(found)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def render(self, environment: str) -> str:
        lines = [f"payment-outbox preflight: config env {environment!r}"]
        if self.ok:
            lines.append(
                "The template holds for these values: deploy order, network paths, alarms, operator path "
                "and secret grants."
            )
            lines.append(
                f"The account ({self.asked}) raised nothing that would fail: VPC DNS, endpoints, routes, "
                "zones, security groups, concurrency quota, engine version, secrets, SMS and API Gateway "
                "logging."
                if self.asked
                else "What only the account can tell (VPC DNS and existing endpoints, routes, quotas, "
                "secrets, the SMS sandbox) is not checked offline: run with --aws."
            )
        for heading, problems in self.blocking.items():
            lines.append("")
            lines.append(f"{heading}:")
            lines.extend(f"  - {p}" for p in problems)
        if self.notes:
            lines.append("")
            lines.append("Notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)


def overrides_from_samconfig(path: Path, environment: str) -> dict[str, str]:
    """The parameter_overrides of ``[<environment>.deploy.parameters]`` (or ``.global``)."""
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        config = tomllib.load(handle)
    section = config.get(environment, {})
    for command in ("deploy", "global"):
        raw = section.get(command, {}).get("parameters", {}).get("parameter_overrides")
        if raw is not None:
            return parse_overrides(raw if isinstance(raw, list) else [raw])
    return {}


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``Key=Value`` pairs as SAM takes them (space-separated, values may be quoted), or CloudFormation's
    ``ParameterKey=K,ParameterValue=V``."""
    values: dict[str, str] = {}
    for item in items:
        for token in shlex.split(item):
            if token.startswith("ParameterKey="):
                key_part, _, value_part = token.partition(",ParameterValue=")
                values[key_part.removeprefix("ParameterKey=")] = value_part
                continue
            key, separator, value = token.partition("=")
            if not separator:
                raise ValueError(f"not a Key=Value parameter override: {token!r}")
            values[key] = value
    return values


def samconfig_setting(path: Path, environment: str, name: str) -> str | None:
    """A setting (``region``, ``stack_name``) of ``[<environment>.deploy.parameters]``, else of its
    ``.global``, else of the default environment's, as SAM reads them."""
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        config = tomllib.load(handle)
    for section in (config.get(environment, {}), config.get("default", {})):
        for command in ("deploy", "global"):
            value = section.get(command, {}).get("parameters", {}).get(name)
            if value:
                return str(value)
    return None


def check(
    template_path: Path,
    given: dict[str, str],
    clients: Clients | None = None,
    region: str | None = None,
    stack: str | None = None,
) -> Report:
    report = Report()
    source = load_template(template_path)
    specs: dict[str, Any] = source.get("Parameters", {})
    unknown = sorted(set(given) - set(specs))
    report.add("Unknown parameters (CloudFormation would refuse the deploy)", unknown)
    missing = [name for name, spec in specs.items() if "Default" not in spec and name not in given]
    report.add(
        "Parameters without a value (sam deploy would stop)",
        [f"{name}: {' '.join(str(specs[name].get('Description', '')).split())}" for name in missing],
    )
    placeholders = [name for name, value in given.items() if PLACEHOLDER in value]
    report.add(
        "Parameters still holding the placeholder (sam deploy would fail)",
        [f"{name}={given[name]}" for name in placeholders],
    )
    # Placeholders and missing values get stand-ins, so the proofs can still say the rest.
    stand_ins = {name: _stand_in(specs[name]) for name in missing}
    values = proofs.parameter_values(source, {**stand_ins, **{k: v for k, v in given.items() if k in specs}})
    report.add("CloudFormation would refuse the deploy (template Rules)", proofs.refusals(source, values))
    transformed = proofs.transform_offline(source, {})
    deployment = proofs.Deployment(source, transformed, values)
    for kind, problems in proofs.all_problems(deployment).items():
        report.add(f"The {kind} proof: these {CONSEQUENCES[kind]}", problems)
    report.add("Database TLS: every connection would fail", _tls_problems(values))
    report.notes.extend(_notes(values))
    if clients is not None:
        if missing or placeholders:
            report.notes.append("The account was not asked: fill in every parameter first")
        else:
            _ask_account(report, clients, values, region or proofs.REGION, stack)
    return report


def _ask_account(
    report: Report, clients: Clients, values: dict[str, str], region: str, stack: str | None
) -> None:
    report.asked = region
    findings = account_findings(clients, values, region, stack)
    for finding in findings:
        if finding.blocking:
            report.add(f"The account ({region}), {finding.check}: these would fail", [finding.text])
        else:
            report.notes.append(f"{finding.check}: {finding.text}")


def _stand_in(spec: dict[str, Any]) -> str:
    kind = str(spec.get("Type", "String"))
    if kind.startswith("List<") or kind == "CommaDelimitedList":
        return "stand-in-a,stand-in-b"
    return "stand-in"


def _tls_problems(values: dict[str, str]) -> list[str]:
    host = values.get("DbHost", "")
    if (
        values.get("CreateDatabase") == "false"
        and values.get("DbRequireTls") == "true"
        and host.endswith(".rds.amazonaws.com")
        and not values.get("DbCaBundleSecretArn")
    ):
        return [
            f"DbHost {host} is an RDS/Aurora endpoint, whose certificate is signed by the RDS CA that no "
            "system store holds: put the Region's RDS CA bundle (PEM) in a secret and set DbCaBundleSecretArn"
        ]
    return []


def _notes(values: dict[str, str]) -> list[str]:
    notes = []
    if values.get("CreateDatabase") == "true" and values.get("DatabaseDeletionProtection") == "true":
        notes.append(
            "DatabaseDeletionProtection=true: if the stack's first create fails, its rollback cannot delete "
            "the cluster; turn the cluster's protection off by hand, then delete the stack"
        )
    if values.get("OpsAlarmEmail") == "none":
        notes.append("OpsAlarmEmail=none: alarms reach only what you subscribe to the OpsTopicArn output")
    if (
        values.get("Stage") == "prod"
        and values.get("CreateDatabase") == "true"
        and (values.get("DatabaseFailoverReplica") != "true")
    ):
        notes.append(
            "prod with one database instance: a writer failure means minutes of downtime; "
            "DatabaseFailoverReplica=true adds a standby"
        )
    return notes


DESCRIPTION = "Say what would hang, fail or stay silent with these parameters, before sam deploy."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-env", default="default", help="samconfig.toml environment (default default)"
    )
    parser.add_argument(
        "--config-file",
        type=Path,
        default=None,
        help="the samconfig file (default samconfig.toml of the project)",
    )
    parser.add_argument(
        "--template-file", type=Path, default=None, help="the template (default template.yaml of the project)"
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="Key=Value",
        help="override samconfig's values, as with sam deploy",
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="also ask the account, read-only with your credentials, what it alone can tell",
    )
    parser.add_argument("--region", help="with --aws: the Region (default: samconfig's, else your profile's)")
    parser.add_argument("--profile", help="with --aws: the AWS CLI profile whose credentials to use")


def run(args: argparse.Namespace) -> int:
    """``payment-outbox preflight``: 0 when the deployment holds, 1 with its problems."""
    root = root_of(args) if args.config_file is None or args.template_file is None else Path.cwd()
    config_file = args.config_file or root / "samconfig.toml"
    template_file = args.template_file or root / "template.yaml"
    try:
        given = {
            **overrides_from_samconfig(config_file, args.config_env),
            **parse_overrides(args.parameter_overrides),
        }
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(str(exc)) from None
    clients, region = None, None
    if args.aws:
        import boto3

        region = args.region or samconfig_setting(config_file, args.config_env, "region")
        session = boto3.Session(profile_name=args.profile, region_name=region)
        if session.get_credentials() is None or session.region_name is None:
            raise CommandError("--aws: no AWS credentials or Region (--profile, --region)")
        clients, region = Clients.of(session), session.region_name
    stack = samconfig_setting(config_file, args.config_env, "stack_name")
    try:
        report = check(template_file, given, clients, region, stack)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(report.render(args.config_env))
    return 0 if report.ok else 1
