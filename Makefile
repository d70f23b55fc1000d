# `make demo` and `make test` bootstrap everything from a fresh clone (Python 3.11+ and
# Node.js present). Stamps make reruns cheap: the venv is rebuilt only when the dependency
# lists change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint typecheck unit matrix bench chromium clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The runtime set plus the workstation's `local` extra (CLI, emulator, local runner) come
# from requirements-local.txt, hash-locked at the very versions functions/requirements.txt
# deploys, so the tests run on exactly the deployed versions; the dev tools are held to
# those versions too.
$(RUNTIME_STAMP): pyproject.toml functions/requirements.txt requirements-local.txt | $(BIN)/python
	$(PIP) install --require-hashes -r requirements-local.txt
	$(PIP) install --no-deps -e .
	grep -E '^[A-Za-z0-9]' requirements-local.txt | cut -d' ' -f1 > $(VENV)/runtime-pins.txt
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(PIP) install -e '.[local,dev]' -c $(VENV)/runtime-pins.txt
	touch $@

# After changing [project.dependencies] or an extra: re-resolve and re-hash
# functions/requirements.txt, requirements-local.txt and infra/requirements.txt
# (needs PyPI; uv is installed into a throwaway venv, not the project's).
lock: | $(BIN)/python
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip --disable-pip-version-check --quiet install uv==0.13.8
	$(BIN)/python scripts/lock_requirements.py $(VENV)-lock/bin/uv

# The Firestore emulator runs on the machine's Node.js.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The gallery is tested in a real headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the gallery browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The example holds three deliberately bad lines, so its job ends PARTIAL (exit code 3):
# that is the expected demo outcome, not a failure of `make demo`.
demo: $(RUNTIME_STAMP)
	$(BIN)/bananabatch local run examples/prompts.jsonl --yes || [ $$? -eq 3 ]

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit -q

test: $(DEV_STAMP) $(NODE_STAMP) chromium lint typecheck
	$(BIN)/pytest

# The fault matrix alone (every tests/e2e/test_fault_matrix*.py), one line per scenario and
# stack (part of `make test` too).
matrix: $(DEV_STAMP) $(NODE_STAMP)
	$(BIN)/pytest tests/e2e/test_fault_matrix*.py tests/e2e/test_intake_hostile_input.py -v -p no:cacheprovider

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf .bananabatch .pytest_cache .mypy_cache .ruff_cache tests/artifacts bench-out
