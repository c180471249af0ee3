# One entry point for people, pre-commit and CI: `make run`, `make test`, `make check`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
AZURITE := node_modules/.bin/azurite
# checkov has many pins of its own: it lives in a venv of its own (requirements-infra.txt), inside
# .venv/ so that git, ruff and mypy ignore it as they ignore .venv.
INFRA_VENV ?= .venv/infra
INFRA_STAMP := $(INFRA_VENV)/.installed
INFRA_DIR ?= infra

.PHONY: run test check lint format typecheck infra-check bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt requirements-train.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)

$(INFRA_STAMP): requirements-infra.txt
	rm -rf $(INFRA_VENV)
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install -q -r requirements-infra.txt
	touch $@

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

## Static analysis of infra/ (Bicep) with checkov: fails on a failed check, and on a Bicep file
## checkov cannot parse (it would otherwise skip that file silently). Suppressions with reasons
## are `//checkov:skip=` comments in the Bicep; docs/deploy.md lists them.
infra-check: $(INFRA_STAMP)
	@out=$$($(INFRA_VENV)/bin/checkov --directory $(INFRA_DIR) --framework bicep --skip-download \
		--compact --quiet 2>&1); rc=$$?; echo "$$out"; \
	if ! echo "$$out" | grep -q "bicep scan results"; then \
		echo "infra-check: checkov scanned no Bicep" >&2; exit 1; fi; \
	if echo "$$out" | grep -q "Parsing errors"; then \
		echo "infra-check: checkov could not parse a Bicep file" >&2; exit 1; fi; \
	exit $$rc

## What CI runs: lint, type-check, the infrastructure check, then the same `make test`.
check: lint typecheck infra-check test

bench: $(DEV_STAMP)
	$(PY) -m bench.bench_webhook
	$(PY) -m bench.bench_cold_start
	$(PY) -m bench.bench_summary
	$(PY) -m bench.bench_classify

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
