"""``payment-outbox chaos``: one runner, two fault sources, one report.

    payment-outbox chaos [--orders 1000] [--seed 7] ...      faults injected in one process (make chaos)
    payment-outbox chaos --kill [--kills 6] ...              SIGKILLs against a live stack (make chaos-kill)

The fault source decides how things go wrong: ``inprocess`` injects faults at every boto3 boundary of
the real handlers on moto (seeded, reproducible); ``kill`` SIGKILLs the workers and the whole stack of
a live ``payment-outbox local`` on MySQL/MariaDB. Either way the run ends in the same checks and the
same report (``payment_outbox_dev.chaos.report``), says how far it got while it runs (on stderr), and
exits non-zero when an invariant does not hold.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TextIO

from payment_outbox_dev.arguments import Option, parameter, positive_fraction, show_fraction
from payment_outbox_dev.chaos.inprocess import ChaosConfig, run_chaos
from payment_outbox_dev.chaos.kill import KillConfig, run_kill_chaos
from payment_outbox_dev.chaos.report import ChaosReport, Progress

IN_PROCESS_OPTIONS = (
    Option("--fault-rate", float, ChaosConfig.fault_rate, "chance that a call at a faulted boundary fails"),
    Option(
        "--wave-size", int, ChaosConfig.wave_size, "orders paid between two relay runs and consumer passes"
    ),
    Option(
        "--overlap-rate",
        float,
        ChaosConfig.overlap_rate,
        "chance of a relay looping in a thread during a wave; 0 makes a seed replay exactly",
    ),
)
KILL_OPTIONS = (
    Option("--kills", int, KillConfig.kills, "SIGKILLs at least, of workers or the whole stack"),
    Option("--clients", int, KillConfig.clients, "client threads sending orders and callbacks"),
    Option("--workers", int, KillConfig.workers, "worker processes per function, each a Lambda container"),
    Option("--time-scale", positive_fraction, KillConfig.time_scale, "the stack's time scale", show_fraction),
    Option(
        "--stack-kill-rate", float, KillConfig.stack_kill_rate, "chance that a kill takes the whole stack"
    ),
    Option("--heal-seconds", float, KillConfig.heal_seconds, "upper bound of the healing phase"),
    Option(
        "--sns-outage-minutes",
        float,
        KillConfig.sns_outage_minutes,
        "an SNS outage from the first order on, this many minutes of schedule (time-scaled): every "
        "publish to the topic answered 503",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of both fault sources, each with its help and its default."""
    parser.add_argument(
        "--kill",
        action="store_true",
        help="SIGKILL workers and the whole stack of a live local stack on MySQL/MariaDB "
        "instead of injecting faults in one process",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=None,
        help=f"paid orders to drive (default {ChaosConfig.orders}; {KillConfig.orders} with --kill)",
    )
    Option("--seed", int, ChaosConfig.seed, "fixes the orders and the fault or kill plan").add_to(parser)
    Option(
        "--duplicate-rate",
        float,
        ChaosConfig.duplicate_rate,
        "chance of a duplicate callback (and, in process, of a duplicate SQS delivery)",
    ).add_to(parser)
    parser.add_argument(
        "--database-url",
        "--server-url",
        default=None,
        help="in process: the database (default SQLite in a temporary folder); with --kill: the "
        "MySQL/MariaDB server the run creates and drops a database on (default $CHAOS_SERVER_URL or "
        f"{KillConfig.server_url})",
    )
    parser.add_argument(
        "--root",
        type=Path,
        # Suppressed: `payment-outbox --root X chaos` keeps X (a subcommand's default would replace it).
        default=argparse.SUPPRESS,
        help="project folder holding template.yaml (default: the current folder or the nearest above)",
    )

    inprocess = parser.add_argument_group("in-process faults (the default)")
    for option in IN_PROCESS_OPTIONS:
        option.add_to(inprocess)
    inprocess.add_argument(
        "--parameter-overrides",
        nargs="+",
        type=parameter,
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, e.g. OrderedDelivery=true (FIFO topic and queues)",
    )
    kill = parser.add_argument_group("SIGKILL (--kill)")
    for option in KILL_OPTIONS:
        option.add_to(kill)
    kill.add_argument("--stack-log", type=Path, default=None, help="keep the stack's narration in this file")


def config_of(args: argparse.Namespace) -> ChaosConfig | KillConfig:
    """The run the arguments describe: its fault source is the configuration's type."""
    root = getattr(args, "root", None)
    common = {"seed": args.seed, "duplicate_rate": args.duplicate_rate, "root": root}
    if args.kill:
        return KillConfig(
            orders=KillConfig.orders if args.orders is None else args.orders,
            server_url=args.database_url or KillConfig.server_url,
            stack_log=args.stack_log,
            **common,
            **{option.field: getattr(args, option.field) for option in KILL_OPTIONS},
        )
    return ChaosConfig(
        orders=ChaosConfig.orders if args.orders is None else args.orders,
        database_url=args.database_url,
        parameters=dict(args.parameter_overrides),
        **common,
        **{option.field: getattr(args, option.field) for option in IN_PROCESS_OPTIONS},
    )


def run(config: ChaosConfig | KillConfig, progress_stream: TextIO | None = sys.stderr) -> ChaosReport:
    """One run, from its fault source to its report; what it is doing said on ``progress_stream``."""
    if isinstance(config, KillConfig):
        return run_kill_chaos(config, Progress("kill chaos run", config.orders, progress_stream))
    return run_chaos(config, Progress("chaos run", config.orders, progress_stream))


def main(args: argparse.Namespace) -> int:
    if args.kill:
        # A SIGTERM (a CI time limit, `timeout`) still kills the stack, stops the emulator and drops
        # the run's database.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(config_of(args))
    print(report.render(), flush=True)
    return 0 if report.ok else 1
