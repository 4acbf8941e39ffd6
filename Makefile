# agentlog — the two commands: `make demo` (run the main job) and `make test` (what CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install up down status serve stop lint unit test-faults soak bench bench-quick

demo: install up ## Install everything, start the stack and the platform, run an example task
	$(BIN)/agentlog demo

test: install lint up ## Install everything, lint, start the stack, run every test against it, bench smoke
	$(BIN)/python -m pytest
	$(BIN)/python -m bench --quick

install: $(STAMP) ## Python virtualenv with agentlog and its dev tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: ## Start Kafka, Elasticsearch, PostgreSQL and Redis (installs them on first use)
	deploy/local/stack.sh up

down: stop ## Stop the platform and the services we started
	deploy/local/stack.sh down

status: ## Where each service listens and whether it runs
	deploy/local/stack.sh status

serve: install up ## Run the platform in the foreground
	$(BIN)/agentlog serve

stop: ## Stop a platform started in the background by `make demo`
	@if [ -x $(BIN)/agentlog ]; then $(BIN)/agentlog stop; fi

bench: install up ## The benchmark suite (< 20 min): results in bench/results/, table in docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: install up ## Benchmark smoke (< 3 min) as CI runs it: fails on errors, never on timings
	$(BIN)/python -m bench --quick

unit: install ## Unit tests only (no services needed)
	$(BIN)/python -m pytest tests/unit

test-faults: install up ## Only the fault and load tests (docs/reliability.md); `make test` runs them too
	$(BIN)/python -m pytest -rA tests/faults tests/load

soak: install up ## The 10-minute soak (CI runs the same test for 2 minutes inside `make test`)
	AGENTLOG_SOAK_SECONDS=$${AGENTLOG_SOAK_SECONDS:-600} $(BIN)/python -m pytest -rA -s tests/load

lint: install ## ruff, mypy, and the schemas against the released set and the AsyncAPI document
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy streams processors schemas api projections audit bench
	$(BIN)/agentlog schemas check --released
	$(BIN)/agentlog asyncapi --check
