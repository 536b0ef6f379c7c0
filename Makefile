# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install stagewise, run the quickstarts end to end
#   make test   create .venv, install stagewise and dev tools, lint, check layers, run all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the project's dependencies change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint install clean services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch pinned, first and again beside the extras: the CPU wheel on these machines. Without
# the pin in the second command, pip upgrades torch to a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]" "torch==2.13.0"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/quickstart/run.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/data/run.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/three-stage/run.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/quickstart/training/run.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/traffic/run.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/llm-selection/run.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests examples docs
	$(BIN)/ruff format --check src tests examples docs
	$(BIN)/lint-imports

# Tests of the SQL sources (and later the metadata DB) use the local PostgreSQL for real.
export STAGEWISE_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

services:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start 2>/dev/null || \
		echo "PostgreSQL is not running and could not be started: its tests fail under CI=true, else skip"

test: lint services
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
