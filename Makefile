# The two commands that matter: `make run` starts the platform, `make test`
# runs every test. Both work on a fresh Debian machine (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format venv migrate bench validate-deploy clean

run:
	@ops/scripts/run-platform.sh

test:
	@ops/scripts/test.sh

venv:
	@ops/scripts/bootstrap.sh

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

format: venv
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

migrate: venv
	@$(PY) -m shared.migrate

bench: venv
	@echo "transfers against a monolith: .venv/bin/python ops/bench/transfers.py (see its docstring)"
	@echo "a million transfers behind it: .venv/bin/python ops/bench/growth.py (see its docstring)"
	@$(PY) ops/bench/gateway_accounts.py

validate-deploy: venv
	@$(PY) -m ops.deploycheck

clean:
	rm -rf var/ build/ *.egg-info

# Every service database and the broker's definitions (docs/DISASTER-RECOVERY.md).
.PHONY: backup restore
backup: venv
	@$(PY) -m ops.backup backup

restore: venv
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=<backup dir>" >&2; exit 2; }
	@$(PY) -m ops.backup restore "$(BACKUP)"

# Faults under a bank workload on a private broker, then the books (docs/CHAOS.md).
.PHONY: chaos
chaos: venv
	@$(PY) -m ops.chaos

# A longer schemathesis run of /openapi.json against a platform of its own
# (tests/e2e/test_openapi_fuzz.py, which `make test` runs with a few examples
# per operation, the same every run). New cases each run; FUZZ_SEED=<seed>
# repeats one, FUZZ_EXAMPLES=<n> sends more.
.PHONY: fuzz
FUZZ_EXAMPLES ?= 100
fuzz_seed := $(or $(FUZZ_SEED),$(shell date +%s))
fuzz: venv
	@ops/scripts/ensure-broker.sh
	@echo "==> schemathesis: $(FUZZ_EXAMPLES) examples per operation, FUZZ_SEED=$(fuzz_seed)"
	@TEST_DATABASE_URL=$$(ops/scripts/ensure-postgres.sh) \
		TEST_AMQP_URI=$${TEST_AMQP_URI:-$${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/}} \
		FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(fuzz_seed) \
		$(PY) -m pytest tests/e2e/test_openapi_fuzz.py
