# One entry point for people, pre-commit and CI: `make run`, `make test`, `make check`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
AZURITE := node_modules/.bin/azurite

.PHONY: run test check lint format typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt requirements-train.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Enrich the embedded example tickets with the embedded default mapping.
run: $(RUNTIME_STAMP)
	$(PY) -m triage enrich examples/tickets.csv

## Install everything the tests need (venv, Azurite) and run the whole suite.
test: $(DEV_STAMP) $(AZURITE)
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEV_STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: $(DEV_STAMP)
	$(PY) -m mypy

## What CI runs: lint, type-check, then the same `make test`.
check: lint typecheck test

bench: $(DEV_STAMP)
	$(PY) -m bench.bench_webhook
	$(PY) -m bench.bench_cold_start
	$(PY) -m bench.bench_summary
	$(PY) -m bench.bench_classify

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
