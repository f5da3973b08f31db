"""AWS's published prices and default quotas: the named inputs of the cost and capacity figures.

One dated table, as the price pages stated them for us-east-1 (arm64 Lambda, on-demand DynamoDB,
standard SNS topics and SQS queues, REST APIs), the free tier left aside. Prices and quotas change and
differ by Region and account: check them (and Service Quotas) before relying on a figure built on
them. ``make bench`` copies this table into docs/benchmarks.json, and every cost and quota figure in
docs/capacity.md is computed from that copy.
"""

from __future__ import annotations

from typing import Any

#: When the list prices below were entered here (from AWS's published price pages).
PRICES_AS_OF = "December 2026"
REGION = "us-east-1"

PRICES: dict[str, float] = {
    # Lambda, arm64: per GB-second of duration and per request.
    "lambda_usd_per_gb_second": 0.0000133334,
    "lambda_usd_per_million_requests": 0.20,
    # API Gateway REST API, first 333 million requests a month.
    "api_gateway_usd_per_million_requests": 3.50,
    # SNS standard topic: per million published messages (each 64 KB chunk counts as one); delivery
    # to SQS queues is not charged.
    "sns_usd_per_million_publishes": 0.50,
    # SQS standard queue: per million requests (SendMessage by SNS, ReceiveMessage, DeleteMessageBatch).
    "sqs_usd_per_million_requests": 0.40,
    # DynamoDB on demand: per million write and read request units.
    "dynamodb_usd_per_million_write_units": 0.625,
    "dynamodb_usd_per_million_read_units": 0.125,
    # VPC interface endpoint: per endpoint and Availability Zone, per hour (data processed aside).
    "interface_endpoint_usd_per_az_hour": 0.01,
    # RDS Proxy in front of Aurora Serverless v2: per ACU-hour, with a minimum of ACUs billed.
    "rds_proxy_usd_per_acu_hour": 0.015,
    "rds_proxy_minimum_acus": 8,
    "hours_per_month": 730,
}

QUOTAS: dict[str, float] = {
    # SNS publish, standard topics, messages per second (us-east-1; 9,000 in us-west-2 and eu-west-1,
    # 1,500 in other Regions).
    "sns_publish_messages_per_second": 30_000,
    "sns_publish_messages_per_second_small_regions": 1_500,
    # API Gateway, requests per second per account and Region.
    "api_gateway_requests_per_second": 10_000,
    # Lambda concurrent executions per account and Region, shared by all functions.
    "lambda_concurrent_executions": 1_000,
    # DynamoDB on demand, per table.
    "dynamodb_write_units_per_second_per_table": 40_000,
    "dynamodb_read_units_per_second_per_table": 40_000,
    # SMS sending rate assumed (varies by country and origination identity).
    "sms_per_second": 20,
}

#: SNS's request limits (the latency SNS enforces them too).
SNS_LIMITS: dict[str, float] = {"publish_batch_max_entries": 10, "request_max_kib": 256}

#: Lambda gives a function one full vCPU at this memory size, and CPU in proportion below it.
LAMBDA_FULL_VCPU_MB = 1769


def as_inputs() -> dict[str, Any]:
    return {
        "prices_as_of": PRICES_AS_OF,
        "region": REGION,
        "prices": dict(PRICES),
        "quotas": dict(QUOTAS),
        "sns_limits": dict(SNS_LIMITS),
        "lambda_full_vcpu_mb": LAMBDA_FULL_VCPU_MB,
    }
