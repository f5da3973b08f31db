"""`payment-outbox` explains itself: every subcommand answers --help under its own name with help for
every option, the defaults it states come from the constants the code runs with, --version tells the
installed version, and what a user gives that cannot be used is one line and exit code 2, never a
traceback."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import pytest

from payment_outbox_dev import cli
from payment_outbox_dev.arguments import show_fraction
from payment_outbox_dev.local.stack import StackConfig
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE
from tests.support import ROOT

pytestmark = pytest.mark.unit

SETTINGS_VARIABLES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_SECRET_ARN")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_subcommands())


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_commands_are_the_documented_ones() -> None:
    assert set(COMMANDS) == {
        "local",
        "up",
        "invoke",
        "sign",
        "demo",
        "chaos",
        "migrate",
        "preflight",
        "trace",
        "failures",
        "dlq",
        "token",
        "credentials",
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help_under_its_own_name_with_help_for_every_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When `payment-outbox COMMAND --help` is asked
    text = _help(capsys, command)

    # Then the usage line names the command, and every option it takes is listed with a help text
    name = "local" if command == "up" else command
    assert text.startswith(f"usage: payment-outbox {name}")
    for action in _subcommands()[command]._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_the_top_level_help_lists_every_command_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    assert "--version" in text
    for command in COMMANDS:
        assert command in text


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"payment-outbox {version('payment-outbox')}"


def test_local_help_states_the_defaults_the_stack_runs_with(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "local")
    # The time scale as the code has it (the help once said 1/30 while the stack ran at 1/15)
    assert f"(default {show_fraction(DEFAULT_TIME_SCALE)}: 180 s of visibility become" in text
    assert f"become {180 * DEFAULT_TIME_SCALE:g} s" in text
    for value in (StackConfig.api_port, StackConfig.emulator_port, StackConfig.workers, StackConfig.host):
        assert f"(default {value})" in text
    # And the arguments parse to those same defaults
    args = cli.build_parser().parse_args(["local"])
    assert (args.time_scale, args.api_port, args.workers) == (
        DEFAULT_TIME_SCALE,
        StackConfig.api_port,
        StackConfig.workers,
    )


# --- one line and exit code 2 ---------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_migrate_without_settings_is_one_line_naming_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    line = _one_line_error(capsys, ["migrate"])
    assert line.startswith("payment-outbox migrate: no database configured:")
    assert "DATABASE_URL" in line


def test_invoke_with_a_missing_event_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.json"
    line = _one_line_error(capsys, ["--root", str(ROOT), "invoke", "payment_api", "--event", str(missing)])
    assert line == f"payment-outbox invoke: cannot read the event {missing}: No such file or directory"


def test_invoke_with_an_event_that_is_not_json_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    event.write_text("{not json")
    line = _one_line_error(capsys, ["--root", str(ROOT), "invoke", "payment_api", "--event", str(event)])
    assert line.startswith(f"payment-outbox invoke: the event {event} is not JSON")


def test_a_command_run_outside_the_project_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, ["invoke", "payment_api"])
    assert line == (
        "payment-outbox invoke: template.yaml not found: run payment-outbox from the project folder"
        " (or pass --root)"
    )


def test_local_options_reach_the_stack_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stack that records the configuration it is started with
    from payment_outbox_dev.local import stack

    started: list[StackConfig] = []

    class Recording:
        def __init__(self, config: StackConfig) -> None:
            started.append(config)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(stack, "LocalStack", Recording)

    # When `local` is run with options
    argv = ["--root", str(ROOT), "local", "--workers", "3", "--api-port", "3100", "--time-scale", "1/10"]
    argv += ["--allow-host", "stack.lan", "--parameter-overrides", "OutboxMaxAttempts=3", "--expose"]
    assert cli.main(argv) == 0

    # Then each reaches its field, and the rest are the stack's defaults
    (config,) = started
    assert (config.workers, config.api_port, config.time_scale) == (3, 3100, 0.1)
    assert (config.allowed_hosts, config.parameters, config.expose) == (
        ("stack.lan",),
        {"OutboxMaxAttempts": "3"},
        True,
    )
    assert (config.root, config.host, config.emulator_port) == (
        ROOT,
        StackConfig.host,
        StackConfig.emulator_port,
    )
