"""Capacity, simulated: what an SNS outage leaves behind and how long the backlog takes to drain,
with one relay and with fan-out — a small discrete-event simulation fed with what ``make bench``
measured in the same run, and with the relay's own rule for attempts during an outage (found by
running the relay against an SNS that is down, not assumed).

The model, event by event:
- orders arrive at a steady rate, ``messages_per_order`` messages each; while SNS is down the
  after-commit publish fails (charging an attempt if the code does), and every row becomes due
  about 1.5 s after its commit (its retry time);
- EventBridge starts a relay run every ``schedule_period`` seconds; while SNS is down a run's first
  claims are refused (``refused_claims_per_run`` of ``claim_size`` rows, the oldest due first) and
  the run ends. If the code charges an attempt for a refusal, those rows' attempts go up and they
  wait their backoff (the retry policy's mean delay); at ``max_attempts`` they are FAILED. If it
  does not, they keep their attempts and back off by their age (when the policy does so) — unless
  older than ``max_message_age_seconds`` (when set), which fails them;
- once SNS is back, a run drains claims of ``claim_size`` rows until ``safety_margin`` before its
  timeout, in due order, at one relay's rate (``relay_rate``, from the rate measured in this run
  scaled to the Lambda's CPU share, and never above its latency bound), all relays together within
  the SNS publish quota left after live traffic (which the after-commit path keeps publishing);
- with fan-out, a run that has drained for ``fan_out_after`` seconds and still finds more due rows
  than it can drain before its deadline starts up to ``max_relays - 1`` more runs, which begin after
  a cold start and stop by its deadline.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.prices import LAMBDA_FULL_VCPU_MB

#: The oldest due row's age that counts as caught up (the curve's second panel).
AGE_THRESHOLD_SECONDS = 10.0
#: The quiet-time scenario: few orders, a long outage (issue 16's chaos case, unscaled).
QUIET_ORDERS_PER_SECOND = 0.5
QUIET_OUTAGE_SECONDS = 1_800.0


@dataclass(frozen=True)
class OutageRule:
    """How the relay charges attempts while SNS refuses whole requests (read from the code)."""

    #: A whole-request refusal (5xx, throttling, connection) counts toward max_attempts.
    refusal_charges_attempt: bool = True
    #: The failed after-commit publish counts as an attempt.
    after_commit_failure_charges_attempt: bool = True
    max_attempts: int = 5
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 300.0
    #: Rows older than this are given up when refused (None: no age limit in the code).
    max_message_age_seconds: float | None = None
    #: An uncharged refusal still backs off, by the message's age (the policy's ``outage_delay``).
    outage_backs_off_by_age: bool = False

    def mean_backoff(self, attempts: int, age: float) -> float:
        """The retry policy's mean wait after a refusal ("equal jitter": 3/4 of the ceiling): by the
        attempts charged, or, for an uncharged outage that backs off by age, by the message's age."""
        if not self.refusal_charges_attempt:
            if not self.outage_backs_off_by_age:
                return 0.0
            ceiling = min(self.backoff_max_seconds, max(self.backoff_base_seconds, age))
        else:
            ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** max(attempts - 1, 0))
        return 0.75 * ceiling


@dataclass(frozen=True)
class Inputs:
    orders_per_second: float = 1_000.0
    messages_per_order: int = 2
    outage_seconds: float = 600.0
    #: EventBridge rate(1 minute), the relay's Timeout, and its safety margin (SAFETY_MARGIN_MS).
    schedule_period: float = 60.0
    run_timeout: float = 60.0
    safety_margin: float = 3.0
    #: Where the schedule's ticks fall relative to the recovery (0: a run starts as SNS recovers).
    schedule_phase: float = 30.0
    #: Measured in the same run: one relay's rate on one core here, the CPU it used per message,
    #: the SNS round trip, requests in flight.
    measured_relay_messages_per_second: float = 3_000.0
    cpu_ms_per_message: float = 0.3
    round_trip_ms: float = 20.0
    in_flight: int = 10
    batch_entries: int = 10
    #: The Lambda's memory and the size at which it gets a full vCPU.
    lambda_memory_mb: int = 1280
    full_vcpu_mb: int = LAMBDA_FULL_VCPU_MB
    claim_size: int = 200
    refused_claims_per_run: int = 2
    cold_start_seconds: float = 2.0
    fan_out_after: float = 2.0
    sns_quota: float = 30_000.0
    max_relays: int = 1
    rule: OutageRule = field(default_factory=OutageRule)

    @property
    def arrivals(self) -> float:
        return self.orders_per_second * self.messages_per_order

    @property
    def latency_bound(self) -> float:
        return self.in_flight * self.batch_entries / (self.round_trip_ms / 1000)

    @property
    def cores_used_here(self) -> float:
        """The share of a core the relay used while it was measured."""
        return self.measured_relay_messages_per_second * self.cpu_ms_per_message / 1000

    @property
    def relay_rate(self) -> float:
        """One relay's messages/s on Lambda: the measured rate, scaled down when the Lambda's CPU
        share is less than what the relay used here, and never above its latency bound."""
        share = min(1.0, self.lambda_memory_mb / self.full_vcpu_mb)
        scale = min(1.0, share / self.cores_used_here) if self.cores_used_here > 0 else 1.0
        return min(self.latency_bound, self.measured_relay_messages_per_second * scale)


@dataclass
class Result:
    inputs: Inputs
    #: (seconds since the outage began, rows waiting (due or backing off), oldest due row's age in seconds)
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    drained_at: float | None = None
    age_under_10s_at: float | None = None
    relays_started: int = 0
    most_relays_at_once: int = 0
    failed_rows: float = 0.0
    backlog_at_recovery: float = 0.0

    def minutes_after_recovery(self, moment: float | None) -> float | None:
        return None if moment is None else (moment - self.inputs.outage_seconds) / 60

    def summary(self) -> dict[str, Any]:
        return {
            "max_relays": self.inputs.max_relays,
            "relay_messages_per_second": self.inputs.relay_rate,
            "backlog_at_recovery": self.backlog_at_recovery,
            "failed_rows": self.failed_rows,
            "drained_minutes_after_recovery": self.minutes_after_recovery(self.drained_at),
            "oldest_due_under_10s_minutes_after_recovery": self.minutes_after_recovery(self.age_under_10s_at),
            "relays_started": self.relays_started,
            "most_relays_at_once": self.most_relays_at_once,
        }


class _Backlog:
    """Due and waiting rows as cohorts (committed together, due together, same attempts), in due
    order; claims take the oldest due first, as the relay's claim does (ORDER BY next_retry_at)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, float, int, int, float]] = []  # due, committed, attempts, seq, count
        self._seq = 0
        self.rows = 0.0

    def add(self, due: float, committed: float, attempts: int, count: float) -> None:
        if count <= 0:
            return
        self._seq += 1
        heapq.heappush(self._heap, (due, committed, attempts, self._seq, count))
        self.rows += count

    def due_rows(self, now: float) -> float:
        return sum(c[4] for c in self._heap if c[0] <= now)

    def written_rows(self, now: float) -> float:
        """Rows committed by ``now`` and not yet published or failed, due or backing off."""
        return sum(c[4] for c in self._heap if c[1] <= now)

    def oldest_due(self, now: float) -> float | None:
        return self._heap[0][0] if self._heap and self._heap[0][0] <= now else None

    def take(self, now: float, rows: float) -> list[tuple[float, int, float]]:
        """Claim up to ``rows`` due rows: (committed, attempts, count) cohorts."""
        taken: list[tuple[float, int, float]] = []
        while rows > 1e-9 and self._heap and self._heap[0][0] <= now:
            due, committed, attempts, _seq, count = heapq.heappop(self._heap)
            part = min(count, rows)
            taken.append((committed, attempts, part))
            rows -= part
            self.rows -= part
            if count - part > 1e-9:
                self._seq += 1
                heapq.heappush(self._heap, (due, committed, attempts, self._seq, count - part))
        return taken


def simulate(inputs: Inputs, *, horizon: float = 3_600.0, sample_every: float = 5.0) -> Result:
    result = Result(inputs)
    rule = inputs.rule
    recovery = inputs.outage_seconds
    backlog = _Backlog()
    first_attempts = 1 if rule.after_commit_failure_charges_attempt else 0
    for second in range(math.ceil(recovery)):
        count = inputs.arrivals * min(1.0, recovery - second)
        backlog.add(second + 1.5, second, first_attempts, count)
    # Rows are written as time passes: only rows committed by ``now`` exist.
    events: list[tuple[float, int, str, dict[str, Any]]] = []
    order = 0

    def push(moment: float, kind: str, **data: Any) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (moment, order, kind, data))

    tick = (recovery - inputs.schedule_period + inputs.schedule_phase) % inputs.schedule_period
    while tick < horizon:
        push(tick, "tick")
        tick += inputs.schedule_period
    moment = 0.0
    while moment <= horizon:
        push(moment, "sample")
        moment += sample_every

    active = 0

    def per_relay_rate() -> float:
        shared_quota = max(0.0, inputs.sns_quota - inputs.arrivals) / max(1, active)
        return min(inputs.relay_rate, shared_quota)

    def refused_run(now: float) -> None:
        """SNS is down: the run's first claims are refused; the rows are charged or not."""
        claimed = backlog.take(now, inputs.refused_claims_per_run * inputs.claim_size)
        for committed, attempts, count in claimed:
            too_old = (
                rule.max_message_age_seconds is not None and now - committed > rule.max_message_age_seconds
            )
            charged = attempts + 1 if rule.refusal_charges_attempt else attempts
            if too_old or (rule.refusal_charges_attempt and charged >= rule.max_attempts):
                result.failed_rows += count
            else:
                backlog.add(now + rule.mean_backoff(charged, now - committed), committed, charged, count)

    def claim(now: float, run: dict[str, Any]) -> None:
        """Start the run's next claim, or end the run."""
        nonlocal active
        if now >= run["deadline"] or backlog.oldest_due(now) is None:
            active -= 1
            return
        taken = backlog.take(now, inputs.claim_size)
        rows = sum(c[2] for c in taken)
        push(now + rows / per_relay_rate(), "claim", run=run)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > horizon:
            break
        if kind == "sample":
            waiting = backlog.written_rows(now)
            oldest = backlog.oldest_due(now)
            age = 0.0 if oldest is None else max(0.0, now - oldest)
            result.curve.append((now, waiting, age))
            if now >= recovery and result.drained_at is None and waiting <= 0:
                result.drained_at = now
            if now >= recovery and result.age_under_10s_at is None and age < AGE_THRESHOLD_SECONDS:
                result.age_under_10s_at = now
            continue
        if kind == "tick":
            if now < recovery:
                refused_run(now)
                continue
            if result.backlog_at_recovery == 0.0:
                result.backlog_at_recovery = backlog.rows
            run = {"started": now, "deadline": now + inputs.run_timeout - inputs.safety_margin, "root": True}
            active += 1
            result.most_relays_at_once = max(result.most_relays_at_once, active)
            claim(now, run)
            continue
        if kind == "start":
            run = data["run"]
            active += 1
            result.most_relays_at_once = max(result.most_relays_at_once, active)
            claim(now, run)
            continue
        run = data["run"]  # a claim finished
        if (
            run.get("root")
            and not run.get("decided")
            and now - run["started"] >= inputs.fan_out_after
            and inputs.max_relays > 1
        ):
            run["decided"] = True
            seconds_left = run["deadline"] - now
            per_run = per_relay_rate() * seconds_left
            wanted = min(inputs.max_relays, math.ceil(backlog.due_rows(now) / per_run)) if per_run > 0 else 1
            for _ in range(wanted - 1):
                push(now + inputs.cold_start_seconds, "start", run={"deadline": run["deadline"]})
            result.relays_started += max(0, wanted - 1)
        claim(now, run)
    if result.backlog_at_recovery == 0.0:
        result.backlog_at_recovery = backlog.rows
    return result


def scenarios(base: Inputs, relays: tuple[int, ...] = (1, 4, 10)) -> list[Result]:
    """One relay, and fan-out with the template's default bound and with a larger one."""
    return [simulate(replace(base, max_relays=n)) for n in relays]


def inputs_as_dict(inputs: Inputs) -> dict[str, Any]:
    values = asdict(inputs)
    values["relay_messages_per_second"] = inputs.relay_rate
    values["latency_bound_messages_per_second"] = inputs.latency_bound
    values["cores_used_while_measured"] = inputs.cores_used_here
    values["arrivals_messages_per_second"] = inputs.arrivals
    values["outage_minutes"] = inputs.outage_seconds / 60
    return values


# --- fed by the run ---------------------------------------------------------------------------------


def probe_outage_rule(database_url: str, sns: Any) -> tuple[OutageRule, dict[str, Any]]:
    """The relay's rule for attempts during an outage, found by running it: due rows, the scheduled
    relay and the after-commit publish against the latency SNS answering every call with a 5xx, and
    the rows' attempts read back. Limits (max attempts, backoff, max age) from the settings."""
    from sqlalchemy import text

    from bench.data import due_messages, insert_messages, reset_outbox
    from payment_outbox.adapters.db.engine import make_engine
    from payment_outbox.composition.relay import build_scheduled_relay
    from payment_outbox.settings import OutboxSettings

    settings = OutboxSettings()
    engine = make_engine(database_url)

    def attempts() -> list[int]:
        with engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(text("SELECT retry_count FROM message_record"))]

    import logging

    relay_log = logging.getLogger("payment_outbox")
    level = relay_log.level
    relay_log.setLevel(logging.ERROR)  # each refused publish logs a warning: expected here
    sns.control(mode="outage")
    try:
        reset_outbox(engine)
        insert_messages(engine, due_messages(4))
        build_scheduled_relay().relay.relay_due_messages(lambda: 60_000)
        scheduled = attempts()
        reset_outbox(engine)
        from bench.fallback_bench import after_commit_relay

        rows = due_messages(2, first_order=900_000)
        insert_messages(engine, rows)
        after_commit_relay().publish_after_commit(rows)
        after_commit = attempts()
    finally:
        sns.control(mode="ok")
        relay_log.setLevel(level)
        reset_outbox(engine)
        engine.dispose()
    policy = settings.retry_policy()
    max_age = getattr(policy, "max_age_seconds", None)
    rule = OutageRule(
        refusal_charges_attempt=max(scheduled) > 0,
        after_commit_failure_charges_attempt=max(after_commit) > 0,
        max_attempts=policy.max_attempts,
        backoff_base_seconds=policy.base_delay_seconds,
        backoff_max_seconds=policy.max_delay_seconds,
        max_message_age_seconds=float(max_age) if max_age is not None else None,
        outage_backs_off_by_age=hasattr(policy, "outage_delay"),
    )
    evidence = {
        "attempts_after_refused_run": scheduled,
        "attempts_after_failed_after_commit_publish": after_commit,
    }
    return rule, evidence


#: A fanned-out relay's cold start when the cold-start section did not run in the same report.
ASSUMED_COLD_START_SECONDS = 2.0


def relay_cold_start(cold: dict[str, Any] | None, memory_mb: int) -> tuple[float, str]:
    """A started relay's cold start in seconds, and where it comes from: the relay's import measured by
    the cold-start section's figures (on one core here), stretched to the Lambda's CPU share."""
    measured = (cold or {}).get("functions", {}).get("OutboxRelayFunction")
    if not measured:
        return ASSUMED_COLD_START_SECONDS, "assumed: the cold-start section did not run"
    seconds = measured["import_ms_median"] / 1000 * max(1.0, LAMBDA_FULL_VCPU_MB / memory_mb)
    return seconds, "the relay's import measured in this run, on the Lambda's CPU share"


def capacity_section(
    sns: Any,
    database_url: str,
    relay: dict[str, Any] | None,
    cold: dict[str, Any] | None,
    *,
    relays: tuple[int, ...] = (1, 4, 10),
) -> Any:
    """The simulation fed with this run's relay figures and the relay's rule, read by running it."""
    from bench.stats import Section, Target
    from payment_outbox.services.relay import FAN_OUT_AFTER_SECONDS, SAFETY_MARGIN_MS
    from payment_outbox.settings import OutboxSettings, RelaySettings

    if relay is None:
        raise RuntimeError("the capacity simulation needs the relay throughput section of the same run")
    rule, evidence = probe_outage_rule(database_url, sns)
    in_flight = RelaySettings().relay_max_in_flight
    memory = _template_memory("OutboxRelayFunction")
    cold_start, cold_from = relay_cold_start(cold, memory)
    base = Inputs(
        measured_relay_messages_per_second=relay["messages_per_second_median"]["real"],
        cpu_ms_per_message=relay["cpu_ms_per_message_median"]["real"],
        round_trip_ms=relay["sns_round_trip_ms"]["p50"],
        in_flight=in_flight,
        lambda_memory_mb=memory,
        claim_size=OutboxSettings().outbox_batch_size,
        refused_claims_per_run=1 if in_flight == 1 else 2,
        safety_margin=SAFETY_MARGIN_MS / 1000,
        fan_out_after=FAN_OUT_AFTER_SECONDS,
        cold_start_seconds=cold_start,
        rule=rule,
    )
    results = scenarios(base, relays)
    default_relays = int(_template()["Parameters"]["MaxRelayConcurrency"]["Default"])
    # A quiet time: few orders and a long outage, where the rule for attempts decides what FAILED.
    quiet = simulate(
        replace(
            base,
            orders_per_second=QUIET_ORDERS_PER_SECOND,
            outage_seconds=QUIET_OUTAGE_SECONDS,
            max_relays=default_relays,
        )
    )
    section = Section("capacity_simulation", "Capacity, simulated: the backlog of an SNS outage")
    summaries = [r.summary() for r in results]
    section.figures = {
        "inputs": inputs_as_dict(base),
        "rule_evidence": evidence,
        "cold_start_from": cold_from,
        "scenarios": summaries,
        "quiet": quiet.summary()
        | {"orders_per_second": QUIET_ORDERS_PER_SECOND, "outage_minutes": QUIET_OUTAGE_SECONDS / 60},
        "age_threshold_seconds": AGE_THRESHOLD_SECONDS,
        "curves": {
            str(r.inputs.max_relays): [[t, due, age] for t, due, age in r.curve[::3]] for r in results
        },
    }
    by_relays = {s["max_relays"]: s for s in summaries}
    section.figures["template_max_relay_concurrency"] = default_relays
    fan = by_relays.get(default_relays, summaries[-1])
    drained = fan["drained_minutes_after_recovery"]
    section.targets = [
        Target(
            "Simulated: the outage's backlog drained with fan-out at the default bound, "
            "minutes after recovery",
            drained if drained is not None else math.inf,
            "<=",
            10.0,
        ),
    ]
    return section


def _template() -> dict[str, Any]:
    from bench.env import ROOT
    from payment_outbox_dev.checks.template import load_template

    template: dict[str, Any] = load_template(ROOT / "template.yaml")
    return template


def _template_memory(logical_id: str) -> int:
    template = _template()
    properties = template["Resources"][logical_id]["Properties"]
    return int(properties.get("MemorySize") or template["Globals"]["Function"]["MemorySize"])
