"""What the workers' forkserver imports once, so each worker forked from it starts warm."""

from __future__ import annotations

import boto3  # noqa: F401
import botocore.session  # noqa: F401
import pymysql  # type: ignore[import-untyped]  # noqa: F401
import sqlalchemy  # noqa: F401
from aws_lambda_powertools import Logger, Metrics, Tracer  # noqa: F401
from aws_lambda_powertools.utilities.batch import BatchProcessor  # noqa: F401
from aws_lambda_powertools.utilities.idempotency import idempotent_function  # noqa: F401

import payment_outbox.settings  # noqa: F401
from payment_outbox_dev.checks import template  # noqa: F401
from payment_outbox_dev.local import harness  # noqa: F401
