"""Cost per million paid orders and the steady rate at which each stage meets its AWS quota, computed
from the figures measured in the same run, the template (memory sizes, batch sizes, endpoints) and the
named prices and quotas of bench/prices.py. Pure arithmetic: every input is in the section's figures.
"""

from __future__ import annotations

from typing import Any

from bench.prices import PRICES, QUOTAS
from bench.stats import Section

API_FUNCTION = "PaymentApiFunction"
CONSUMER_FUNCTIONS = {"points": "PointsConsumerFunction", "sms": "SmsConsumerFunction"}
#: Subnets (Availability Zones) the interface endpoints are placed in: the template asks for at least
#: two subnets; an assumption of this estimate, named here.
AVAILABILITY_ZONES = 2


def flow_per_order() -> dict[str, int]:
    """What one paid order is, from the code: its outbox messages, by topic, and its API requests
    (create, then the provider's callback)."""
    import uuid

    from bench.data import paid_order
    from payment_outbox.clock import SystemClock
    from payment_outbox.domain.envelope import TOPIC_SMS
    from payment_outbox.domain.outbox import order_paid_envelopes

    now = SystemClock().now()
    envelopes = order_paid_envelopes(paid_order(1, now), now=now, new_id=lambda: uuid.uuid4().hex)
    return {
        "messages": len(envelopes),
        "sms": sum(1 for e in envelopes if e.topic == TOPIC_SMS),
        "api_requests": 2,
    }


def template_facts() -> dict[str, Any]:
    from bench.env import ROOT
    from payment_outbox_dev.checks.template import load_template

    template = load_template(ROOT / "template.yaml")
    resources = template["Resources"]
    default_memory = int(template["Globals"]["Function"]["MemorySize"])
    memory = {
        name: int(r["Properties"].get("MemorySize") or default_memory)
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    batch = {}
    for name in CONSUMER_FUNCTIONS.values():
        events = resources[name]["Properties"].get("Events", {})
        sizes = [int(e["Properties"].get("BatchSize", 10)) for e in events.values() if e["Type"] == "SQS"]
        batch[name] = sizes[0] if sizes else 10
    interface = sorted(
        _service(r["Properties"]["ServiceName"])
        for r in resources.values()
        if r["Type"] == "AWS::EC2::VPCEndpoint" and r["Properties"].get("VpcEndpointType") == "Interface"
    )
    return {"memory_mb": memory, "sqs_batch_size": batch, "interface_endpoints": interface}


def _service(name: Any) -> str:
    """``!Sub com.amazonaws.${AWS::Region}.sns`` → ``sns``."""
    text = name.get("Fn::Sub") if isinstance(name, dict) else name
    return str(text).rsplit(".", 1)[-1]


def cost_section(sections: dict[str, dict[str, Any]]) -> Section:
    callback = sections.get("latency_callback")
    consumers = sections.get("consumer_cost")
    capacity = sections.get("capacity_simulation")
    if callback is None or consumers is None or callback["figures"].get("create_order_ms") is None:
        raise RuntimeError("the cost needs the callback (with create) and consumer sections of the same run")
    flow = flow_per_order()
    facts = template_facts()
    memory = facts["memory_mb"]
    api_ms = callback["figures"]["create_order_ms"]["p50"] + callback["figures"]["real_handler_ms"]["p50"]
    rows: list[dict[str, Any]] = []

    def add(item: str, per_order: float, unit: str, usd_per_unit: float) -> None:
        rows.append(
            {
                "item": item,
                "per_order": per_order,
                "unit": unit,
                "usd_per_million_orders": per_order * usd_per_unit * 1_000_000,
            }
        )

    gb_second = PRICES["lambda_usd_per_gb_second"]
    add(
        "PaymentApi λ: create + callback, p50 durations",
        api_ms / 1000 * memory[API_FUNCTION] / 1024,
        "GB-seconds",
        gb_second,
    )
    lambda_requests = float(flow["api_requests"])
    concurrency_seconds = api_ms / 1000
    write_units: dict[str, float] = {}
    read_units: dict[str, float] = {}
    sqs_requests = 0.0
    for name, function in CONSUMER_FUNCTIONS.items():
        c = consumers["figures"][name]
        add(
            f"{function} λ: one record (moto-bound duration)",
            c["ms_per_record_median"] / 1000 * memory[function] / 1024,
            "GB-seconds",
            gb_second,
        )
        batch = facts["sqs_batch_size"][function]
        lambda_requests += 1 / batch
        concurrency_seconds += c["ms_per_record_median"] / 1000
        sqs_requests += (
            1 + 2 / batch
        )  # SNS's SendMessage; a ReceiveMessage and a DeleteMessageBatch per batch
        for table_name, units in c["write_units_by_table_per_record"].items():
            write_units[table_name] = write_units.get(table_name, 0.0) + units
        for table_name, units in c["read_units_by_table_per_record"].items():
            read_units[table_name] = read_units.get(table_name, 0.0) + units
    add(
        "Lambda requests (full SQS batches)",
        lambda_requests,
        "requests",
        PRICES["lambda_usd_per_million_requests"] / 1e6,
    )
    add(
        "API Gateway (REST)",
        flow["api_requests"],
        "requests",
        PRICES["api_gateway_usd_per_million_requests"] / 1e6,
    )
    add("SNS publishes", flow["messages"], "messages", PRICES["sns_usd_per_million_publishes"] / 1e6)
    add("SQS requests (full batches)", sqs_requests, "requests", PRICES["sqs_usd_per_million_requests"] / 1e6)
    add(
        "DynamoDB writes",
        sum(write_units.values()),
        "write units",
        PRICES["dynamodb_usd_per_million_write_units"] / 1e6,
    )
    add(
        "DynamoDB reads",
        sum(read_units.values()),
        "read units",
        PRICES["dynamodb_usd_per_million_read_units"] / 1e6,
    )

    hours = PRICES["hours_per_month"]
    endpoints = facts["interface_endpoints"]
    fixed = [
        {
            "item": f"VPC interface endpoints ({', '.join(endpoints)}) in each of the subnets' zones "
            "(VpcEndpointSns, VpcEndpointSecretsManager, VpcEndpointLambda=create)",
            "count": len(endpoints) * AVAILABILITY_ZONES,
            "usd_per_month": len(endpoints)
            * AVAILABILITY_ZONES
            * hours
            * PRICES["interface_endpoint_usd_per_az_hour"],
        },
        {
            "item": "RDS Proxy at its minimum of ACUs billed (CreateDatabase=true)",
            "count": PRICES["rds_proxy_minimum_acus"],
            "usd_per_month": PRICES["rds_proxy_minimum_acus"] * hours * PRICES["rds_proxy_usd_per_acu_hour"],
        },
    ]

    quota_rates = [
        _rate("SNS publish (us-east-1)", QUOTAS["sns_publish_messages_per_second"], flow["messages"]),
        _rate(
            "SNS publish (smaller Regions)",
            QUOTAS["sns_publish_messages_per_second_small_regions"],
            flow["messages"],
        ),
        _rate("API Gateway requests", QUOTAS["api_gateway_requests_per_second"], flow["api_requests"]),
        _rate(
            "Lambda concurrency (concurrency-seconds)",
            QUOTAS["lambda_concurrent_executions"],
            concurrency_seconds,
        ),
        *[
            _rate(
                f"DynamoDB writes, table {table_name}",
                QUOTAS["dynamodb_write_units_per_second_per_table"],
                units,
            )
            for table_name, units in sorted(write_units.items())
        ],
        _rate("SMS sending", QUOTAS["sms_per_second"], flow["sms"]),
    ]
    if capacity is not None and not capacity.get("failed"):
        relay_rate = capacity["figures"]["inputs"]["relay_messages_per_second"]
        quota_rates.append(
            {
                "stage": "one relay, while the after-commit publish fails (its drain rate, not a quota)",
                "quota": relay_rate,
                "per_order": flow["messages"],
                "orders_per_second": relay_rate / flow["messages"],
            }
        )
    quota_rates.sort(key=lambda r: r["orders_per_second"])

    section = Section("cost", "Cost per million paid orders")
    section.figures = {
        "flow_per_order": flow,
        "template": facts,
        "availability_zones_assumed": AVAILABILITY_ZONES,
        "payment_api_ms_per_order": api_ms,
        "concurrency_seconds_per_order": concurrency_seconds,
        "per_million_orders": rows,
        "usd_per_million_orders": sum(r["usd_per_million_orders"] for r in rows),
        "fixed_monthly": fixed,
        "quota_rates": quota_rates,
    }
    return section


def _rate(stage: str, quota: float, per_order: float) -> dict[str, Any]:
    return {
        "stage": stage,
        "quota": quota,
        "per_order": per_order,
        "orders_per_second": quota / per_order if per_order else float("inf"),
    }
