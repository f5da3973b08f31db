"""`payment-outbox preflight` says, before `sam deploy`, what would hang, fail or stay silent with the
user's own parameter values (samconfig.toml plus --parameter-overrides)."""

from __future__ import annotations

import pytest

from payment_outbox_dev import cli
from payment_outbox_dev.checks.preflight import parse_overrides
from tests.support import ROOT

pytestmark = pytest.mark.unit


GOOD = [
    "VpcId=vpc-0123",
    "SubnetIds=subnet-a,subnet-b",
    "SecurityGroupIds=sg-0123",
    "PrivateRouteTableIds=rtb-a,rtb-b",
    "WebhookSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook",
    "OpsAlarmEmail=ops@example.com",
    "OrderCallerPrincipalArns=arn:aws:iam::123456789012:role/order-service",
    "OperatorPrincipalArns=arn:aws:iam::123456789012:role/ops",
]


def _preflight(capsys: pytest.CaptureFixture[str], *overrides: str, env: str = "prod") -> tuple[int, str]:
    code = cli.main(
        [
            "preflight",
            "--config-env",
            env,
            "--config-file",
            str(ROOT / "samconfig.toml"),
            "--template-file",
            str(ROOT / "template.yaml"),
            "--parameter-overrides",
            *overrides,
        ]
    )
    return code, capsys.readouterr().out


def test_the_shipped_samconfig_is_refused_until_its_placeholders_are_filled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given samconfig.toml as shipped, when preflight runs for prod
    code, out = _preflight(capsys)
    # Then it fails, naming every placeholder
    assert code == 1
    for name in ("VpcId", "SubnetIds", "SecurityGroupIds", "WebhookSecretArn", "OpsAlarmEmail"):
        assert f"{name}=REPLACE_ME" in out, out


@pytest.mark.parametrize("env", ["default", "prod"])
def test_each_environment_passes_once_filled_in(capsys: pytest.CaptureFixture[str], env: str) -> None:
    code, out = _preflight(capsys, *GOOD, env=env)
    assert code == 0, out
    assert "The template holds for these values" in out
    # And it never claims what it cannot see offline
    assert "Nothing would" not in out and "run with --aws" in out


def test_subnets_without_nat_or_gateway_endpoints_are_reported_as_a_hanging_deploy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given no NAT and no route tables for the gateway endpoints
    code, out = _preflight(
        capsys, *GOOD, "PrivateRouteTableIds=", "SubnetsHaveNat=false", "VpcEndpointS3=none"
    )
    # Then the Rule's refusal is shown, and why: the migrator's answer could not reach S3
    assert code == 1
    assert "set PrivateRouteTableIds" in out
    assert "SchemaMigratorFunction runs in the VPC and calls s3" in out and "would hang" in out
    assert "OutboxJanitorFunction runs in the VPC and calls s3" in out


def test_an_empty_alarm_email_is_reported_as_silence(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _preflight(capsys, *GOOD, "OpsAlarmEmail=")
    assert code == 1
    assert "would stay silent" in out and "nobody is subscribed" in out


def test_an_rds_endpoint_without_its_ca_bundle_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    rds = [
        "CreateDatabase=false",
        "DbHost=orders.cluster-abc.us-east-1.rds.amazonaws.com",
        "DbSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        "DbAppUserSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:db-app",
    ]
    code, out = _preflight(capsys, *GOOD, *rds)
    assert code == 1 and "DbCaBundleSecretArn" in out
    ca = "DbCaBundleSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-ca"
    code, out = _preflight(capsys, *GOOD, *rds, ca)
    assert code == 0, out


def test_overrides_are_read_as_sam_reads_them() -> None:
    assert parse_overrides(['Stage=prod OpsAlarmEmail="ops team@example.com"', "SubnetIds=a,b"]) == {
        "Stage": "prod",
        "OpsAlarmEmail": "ops team@example.com",
        "SubnetIds": "a,b",
    }
    assert parse_overrides(["ParameterKey=Stage,ParameterValue=dev"]) == {"Stage": "dev"}
    with pytest.raises(ValueError, match="Key=Value"):
        parse_overrides(["Stage"])


def test_the_cli_runs_preflight_from_the_project_folder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from payment_outbox_dev.cli import main as cli

    monkeypatch.chdir(ROOT / "docs")  # any folder inside the project
    code = cli(["preflight", "--config-env", "prod", "--parameter-overrides", *GOOD])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "config env 'prod'" in out
