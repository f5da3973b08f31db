"""The chaos runner's command line and its progress: one `payment-outbox chaos` for both fault sources,
every option with its help and its default from the run's own constants, and a run that says how far
it got while it runs. (The runs themselves: tests/integration/test_chaos.py and test_kill_chaos.py.)"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from payment_outbox_dev import cli
from payment_outbox_dev.chaos.inprocess import ChaosConfig
from payment_outbox_dev.chaos.kill import KillConfig
from payment_outbox_dev.chaos.report import PROGRESS_EVERY_SECONDS, Progress
from payment_outbox_dev.chaos.runner import config_of

pytestmark = pytest.mark.unit


def _parse(*argv: str) -> object:
    return config_of(cli.build_parser().parse_args(["chaos", *argv]))


def test_chaos_help_names_the_command_both_sources_and_every_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When `payment-outbox chaos --help` is asked
    with pytest.raises(SystemExit) as exit_:
        cli.main(["chaos", "--help"])
    text = capsys.readouterr().out

    # Then it exits 0 with a usage line of its own command, listing --kill and each source's options
    assert exit_.value.code == 0
    assert text.startswith("usage: payment-outbox chaos")
    for option in (
        "--kill",
        "--orders",
        "--seed",
        "--fault-rate",
        "--overlap-rate",
        "--kills",
        "--stack-kill-rate",
    ):
        assert option in text
    # And the defaults it states are the runs' own
    flat = " ".join(text.split())
    assert f"default {ChaosConfig.orders}; {KillConfig.orders} with --kill" in flat
    assert f"default {ChaosConfig.fault_rate:g}" in flat
    assert f"default {KillConfig.kills}" in flat


def test_no_option_is_the_in_process_run_with_its_defaults() -> None:
    assert _parse() == ChaosConfig()


def test_options_reach_the_in_process_run() -> None:
    config = _parse("--orders", "60", "--seed", "3", "--parameter-overrides", "OrderedDelivery=true")
    assert config == ChaosConfig(orders=60, seed=3, parameters={"OrderedDelivery": "true"})


def test_kill_is_the_sigkill_run_with_its_own_defaults() -> None:
    assert _parse("--kill") == KillConfig()


def test_kill_options_reach_the_sigkill_run_and_the_database_url_names_its_server() -> None:
    config = _parse("--kill", "--kills", "9", "--time-scale", "1/15", "--database-url", "mysql+pymysql://h/")
    assert config == KillConfig(kills=9, time_scale=1 / 15, server_url="mysql+pymysql://h/")


def test_the_project_folder_given_before_the_command_is_kept(tmp_path: Path) -> None:
    config = config_of(cli.build_parser().parse_args(["--root", str(tmp_path), "chaos"]))
    assert isinstance(config, ChaosConfig)
    assert config.root == tmp_path


def test_a_bad_value_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["chaos", "--kill", "--time-scale", "fast"])
    assert exit_.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


# --- progress -----------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_says_each_phase_and_the_orders_paid_at_most_every_few_seconds() -> None:
    # Given a run of 50 orders reporting to a stream
    stream, clock = io.StringIO(), _Clock()
    progress = Progress("chaos run", 50, stream, clock=clock)

    # When it starts a phase, pays orders quickly, then slowly, then the last
    progress.phase("paying 50 orders")
    for done in range(1, 10):
        progress.done(done)
    clock.now += PROGRESS_EVERY_SECONDS
    progress.done(10)
    progress.done(11)
    clock.now += 1
    progress.done(50)

    # Then the phase, one line per interval and the last count are said, each with the time so far
    assert stream.getvalue().splitlines() == [
        "chaos run: paying 50 orders (0 s)",
        f"chaos run: 10/50 orders paid ({PROGRESS_EVERY_SECONDS:.0f} s)",
        f"chaos run: 50/50 orders paid ({PROGRESS_EVERY_SECONDS + 1:.0f} s)",
    ]


def test_an_sns_outage_is_off_by_default_and_its_length_reaches_the_sigkill_run() -> None:
    # Given the kill run without and with --sns-outage-minutes / Then the outage is off, then 30 minutes long
    assert _parse("--kill") == KillConfig(sns_outage_minutes=0)
    assert _parse("--kill", "--sns-outage-minutes", "30") == KillConfig(sns_outage_minutes=30)
