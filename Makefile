# payment-outbox: every command installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint migrate build validate clean sam-cli

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(LOCAL_STAMP)

## What the demo needs and nothing more: the runtime and the [local] extra (moto, PyYAML), each package
## named as pip fetches and installs it. `make install` (every developer tool) covers it too.
LOCAL_STAMP := $(VENV)/.installed-local

$(LOCAL_STAMP): pyproject.toml
	@echo "demo: installing the runtime and the [local] extra into $(VENV) (once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e ".[local]"
	touch $(LOCAL_STAMP)

## The main job: the whole flow on SQLite and an in-process AWS emulator (DATABASE_URL=... for MySQL).
demo: $(LOCAL_STAMP)
	$(BIN)/python -m payment_outbox_dev.demo.embedded

## The whole system live on one machine, no Docker, no AWS account: API on :3000, AWS emulator on
## :5000, relay schedule, queue pollers (docs/local-stack.md). Options: make local ARGS="--verbose".
.PHONY: local
local: install
	$(BIN)/payment-outbox local $(ARGS)

## The tests: unit, integration (MariaDB/MySQL at TEST_DATABASE_URL, default root@127.0.0.1:3306) and e2e,
## including schemathesis fuzzing the local stack (SCHEMATHESIS_MAX_EXAMPLES per operation, default 25).
## Without a server that answers, it says so in one line and stops (README: the database the tests need).
test: install sam-cli
	$(BIN)/python -m payment_outbox_dev.checks.database_server
	$(BIN)/pytest

## Benchmarks against MariaDB (BENCH_SERVER_URL, default root@127.0.0.1:3306), the latency SNS and moto
## on loopback: writes docs/benchmarks.json and renders docs/benchmarks.md, docs/capacity.md and
## docs/capacity-drain.svg from it (the run's wall time is in docs/benchmarks.md); exits non-zero when a
## section fails or a target is missed. Options: make bench ARGS="--quick". Render again from the JSON
## alone: .venv/bin/python -m bench.render.
.PHONY: bench
bench: install
	$(BIN)/python -m bench $(ARGS)

## The chaos run: 1,000 seeded orders through the real handlers with random faults at every boundary,
## then healed and drained; prints a report and fails if any order was lost or applied twice
## (docs/reliability.md). Options: make chaos ARGS="--orders 200 --seed 3 --database-url mysql+pymysql://..."
.PHONY: chaos
chaos: install
	$(BIN)/payment-outbox chaos $(ARGS)

## docs/openapi.json from the handlers' routes and models (make test fails when it is out of date).
.PHONY: openapi
openapi: install
	$(BIN)/python -m payment_outbox_dev.local.openapi

## The backlog tests at sizes too slow for every make test: 1,000,000 due rows drained by four relays on
## MariaDB, and 2,000 rows (1,000 orders) through SNS, SQS, both consumers and DynamoDB on moto
## (docs/reliability.md). Options: make backlog FAULT_BACKLOG_ROWS=... FAULT_BACKLOG_MOTO_ROWS=...
.PHONY: backlog
backlog: install
	FAULT_BACKLOG_ROWS=$(or $(FAULT_BACKLOG_ROWS),1000000) FAULT_BACKLOG_MOTO_ROWS=$(or $(FAULT_BACKLOG_MOTO_ROWS),2000) \
		$(BIN)/pytest -q tests/integration/test_fault_matrix.py -k "backlog_drains"

## The kill chaos run: seeded orders and signed callbacks over HTTP against a live local stack on
## MariaDB/MySQL (a database of its own, dropped after), random workers and sometimes the whole stack
## SIGKILLed and restarted; fails if any paid order was lost, doubled or dead-lettered (docs/reliability.md).
## Options: make chaos-kill ARGS="--orders 1000 --kills 20 --seed 7 --server-url mysql+pymysql://..."
.PHONY: chaos-kill
chaos-kill: install
	$(BIN)/payment-outbox chaos --kill $(ARGS)

## Load: locust drives create + signed callback against local stacks on MariaDB/MySQL (LOAD_SERVER_URL,
## default root@127.0.0.1:3306) for a bounded time, one stack per worker count of --workers; writes
## docs/load.json (paid orders/s, latency percentiles, the inputs, the machine and its load average) and
## renders docs/load.md's figures from it; exits non-zero when a request failed or a run paid no order.
## Options: make load ARGS="--workers 2 --users 16 --seconds 60 --out /tmp/load". Render again from the
## JSON alone: .venv/bin/python -m payment_outbox_dev.chaos.load_figures.
.PHONY: load
load: install
	$(BIN)/python -m payment_outbox_dev.chaos.load $(ARGS)

## Before `sam deploy`: what would hang, fail or stay silent with your parameter values (docs/deploy.md).
## Options: make preflight ARGS="--config-env prod --parameter-overrides Key=Value ..."
.PHONY: preflight
preflight: install
	$(BIN)/payment-outbox preflight $(ARGS)

## checkov (IaC security scan) lives in its own venv, like the SAM CLI: it pins its own boto3, which
## must not move the application's. Skipped checks and their reasons: .checkov.yaml.
CHECKOV_VENV := .venv-checkov
CHECKOV      := $(CHECKOV_VENV)/bin/checkov

## Static checks: ruff (lint and format), mypy (strict), the architecture's import contracts
## (import-linter), no module-level import circle and no module over 500 lines (runtime and tooling),
## the runtime's imports against its dependencies (deptry), cfn-lint and checkov on the
## template, bandit, and the layer's pinned requirements still match pyproject.toml.
lint: install $(CHECKOV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q tests/unit/test_tooling_layout.py
	$(BIN)/deptry layers/common
	$(BIN)/mypy
	for handler in functions/*/app.py; do $(BIN)/mypy --strict "$$handler" || exit 1; done
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python -m payment_outbox_dev.checks.migration_safety
	$(CHECKOV) --config-file .checkov.yaml
	$(BIN)/bandit --quiet --recursive layers functions payment_outbox_dev
	$(MAKE) --no-print-directory requirements-check

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==3.3.30"

## The layer's requirements: every runtime dependency of pyproject.toml pinned with its hashes, resolved
## for the functions' runtime (python3.13, arm64). The ONE command that writes them: `make requirements`.
## boto3 and botocore are pinned as a pair: the X-Ray SDK needs botocore, so pip always puts one in the
## layer, where it shadows the runtime's; shipping both pinned keeps them matched.
LAYER_REQUIREMENTS := layers/common/requirements.txt
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.13 \
	--python-platform aarch64-manylinux_2_28 --custom-compile-command "make requirements"

.PHONY: requirements requirements-check
requirements: install
	$(UV_COMPILE) --output-file $(LAYER_REQUIREMENTS)

## Fails when pyproject.toml changed without `make requirements` (the pins are kept as preferences).
requirements-check: install
	@tmp=$$(mktemp -d) && cp $(LAYER_REQUIREMENTS) $$tmp/requirements.txt && \
	$(UV_COMPILE) --output-file $$tmp/requirements.txt && \
	diff -u $(LAYER_REQUIREMENTS) $$tmp/requirements.txt; status=$$?; rm -rf $$tmp; \
	if [ $$status -ne 0 ]; then echo "$(LAYER_REQUIREMENTS) is out of date: run make requirements"; fi; \
	exit $$status

## Bring the database at DATABASE_URL (or DB_HOST/DB_NAME/DB_SECRET_ARN) to the newest schema.
migrate: install
	$(BIN)/payment-outbox migrate

## The AWS SAM CLI lives in its own venv: its pins must not move the application's dependencies.
SAM_VENV := .venv-sam
SAM      := $(SAM_VENV)/bin/sam
export SAM_CLI_TELEMETRY := 0

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli

sam-cli: $(SAM)

## sam build without a container: it needs python3.13 on PATH (with pyenv: PYENV_VERSION=3.13.0).
build: $(SAM)
	$(SAM) build

validate: $(SAM)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM) validate --lint

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
