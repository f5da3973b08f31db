# payment-outbox: every command installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint migrate build validate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## The main job: the whole flow on SQLite and an in-process AWS emulator (DATABASE_URL=... for MySQL).
demo: install
	$(BIN)/python -m payment_outbox.local.demo

## The tests: unit, integration (MariaDB/MySQL at TEST_DATABASE_URL, default root@127.0.0.1:3306) and e2e.
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	for handler in functions/*/app.py; do $(BIN)/mypy --strict "$$handler" || exit 1; done
	$(BIN)/cfn-lint template.yaml

## Bring the database at DATABASE_URL (or DB_HOST/DB_NAME/DB_SECRET_ARN) to the newest schema.
migrate: install
	$(BIN)/python -m payment_outbox.migrations

## Needs the AWS SAM CLI (pip install aws-sam-cli); no container is used.
build:
	sam build

validate:
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} sam validate --lint

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
