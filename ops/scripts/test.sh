#!/usr/bin/env bash
# `make test`: lint, offline validation of the deployment files, then every
# test against the real RabbitMQ and PostgreSQL.
# Each run makes its own vhosts and databases (tests/conftest.py), so runs
# on one machine cannot collide. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VENV=${VENV:-.venv}

ops/scripts/bootstrap.sh
ops/scripts/ensure-broker.sh
ops/scripts/ensure-prometheus-tools.sh
ops/scripts/ensure-chromium.sh || true  # without chromium the /docs browser test skips
TEST_DATABASE_URL=$(ops/scripts/ensure-postgres.sh)
export TEST_DATABASE_URL
export TEST_AMQP_URI=${TEST_AMQP_URI:-${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/}}

echo "==> lint (ruff)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

echo "==> deployment files (hadolint, compose/stack config, kustomize, schemas)"
"$VENV/bin/python" -m ops.deploycheck

echo "==> tests (unit, integration, end to end)"
exec "$VENV/bin/python" -m pytest "$@"
