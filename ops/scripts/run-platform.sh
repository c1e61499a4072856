#!/usr/bin/env bash
# `make run`: start the whole platform on this machine; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VENV=${VENV:-.venv}

ops/scripts/bootstrap.sh
ops/scripts/ensure-broker.sh

export AMQP_URI=${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/}
export DATA_DIR=${DATA_DIR:-$PWD/var}
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
export GATEWAY_PORT=${GATEWAY_PORT:-8000}
export PATH="$PWD/$VENV/bin:$PATH"
export PYTHONUNBUFFERED=1

if ! python ops/scripts/probe.py tcp-free "$GATEWAY_HOST:$GATEWAY_PORT" 2>/dev/null; then
    echo "Port $GATEWAY_PORT on $GATEWAY_HOST is taken; stop what uses it or set GATEWAY_PORT." >&2
    exit 1
fi

echo "==> applying database migrations (data in $DATA_DIR)"
python -m shared.migrate

echo "==> starting services and gateway (Ctrl-C stops everything)"
exec honcho --no-prefix start -f Procfile
