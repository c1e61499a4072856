#!/usr/bin/env bash
# `make run`: start the whole platform on this machine; Ctrl-C stops it.
# A process that dies is restarted; the others keep running.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VENV=${VENV:-.venv}

ops/scripts/bootstrap.sh
ops/scripts/ensure-broker.sh
# Prometheus (Debian's package, when root); without it the platform runs alone.
ops/scripts/ensure-prometheus-tools.sh || echo "(continuing without Prometheus)" >&2

export DATA_DIR=${DATA_DIR:-$PWD/var}
# AMQP_TLS=on: a broker of the platform's own on AMQP_TLS_PORT (5671) that
# speaks mutual TLS only; every process logs in with its own certificate
# (made on first start under $DATA_DIR/pki by a development CA) as its own
# user, with the permissions of shared/access.py (docs/SECURITY.md).
BROKER_PID=
case "${AMQP_TLS:-off}" in
    1|on|true|yes)
        if [ -z "${AMQP_URI:-}" ]; then
            export AMQP_CERT_DIR=${AMQP_CERT_DIR:-$DATA_DIR/pki}
            "$VENV/bin/python" -m ops.pki "$AMQP_CERT_DIR"
            port=${AMQP_TLS_PORT:-5671}
            if ! "$VENV/bin/python" ops/scripts/probe.py tcp-free "127.0.0.1:$port" 2>/dev/null; then
                echo "Port $port is taken; set AMQP_TLS_PORT to a free one." >&2
                exit 1
            fi
            echo "==> starting the platform's TLS broker on port $port (data in $DATA_DIR/broker)"
            "$VENV/bin/python" -m ops.private_broker --tls-dir "$AMQP_CERT_DIR" \
                --data "$DATA_DIR/broker" --port "$port" &
            BROKER_PID=$!
            export AMQP_URI="amqps://127.0.0.1:$port/"
            for _ in $(seq 1 120); do
                "$VENV/bin/python" ops/scripts/probe.py tcp-free "127.0.0.1:$port" 2>/dev/null || break
                sleep 0.5
            done
        fi
        ;;
esac
export AMQP_URI=${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/}
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
export GATEWAY_PORT=${GATEWAY_PORT:-8000}
# The sandbox payment provider (a real HTTP server, started below) and the
# secret its signed webhooks share with the gateway. Development values only.
export SANDBOX_PORT=${SANDBOX_PORT:-8100}
export SANDBOX_API_KEY=${SANDBOX_API_KEY:-sk_sandbox_dev}
export SANDBOX_WEBHOOK_SECRET=${SANDBOX_WEBHOOK_SECRET:-whsec_sandbox_dev}
export SANDBOX_WEBHOOK_URL=${SANDBOX_WEBHOOK_URL:-http://$GATEWAY_HOST:$GATEWAY_PORT/v1/webhooks/payments/sandbox}
export PAYMENTS_PROVIDER_URL=${PAYMENTS_PROVIDER_URL:-http://127.0.0.1:$SANDBOX_PORT}
export PAYMENTS_PROVIDER_API_KEY=${PAYMENTS_PROVIDER_API_KEY:-$SANDBOX_API_KEY}
export PAYMENTS_WEBHOOK_SECRET_SANDBOX=${PAYMENTS_WEBHOOK_SECRET_SANDBOX:-$SANDBOX_WEBHOOK_SECRET}
# Each service's metrics on a port of its own (shared/metrics.py), scraped
# by the Prometheus started below on PROMETHEUS_PORT (ops/scripts/prometheus.py).
export AUTH_METRICS_PORT=${AUTH_METRICS_PORT:-9101}
export ANALYTICS_METRICS_PORT=${ANALYTICS_METRICS_PORT:-9102}
export ACCOUNTS_METRICS_PORT=${ACCOUNTS_METRICS_PORT:-9103}
export TRANSACTIONS_METRICS_PORT=${TRANSACTIONS_METRICS_PORT:-9104}
export PAYMENTS_METRICS_PORT=${PAYMENTS_METRICS_PORT:-9105}
export RISK_METRICS_PORT=${RISK_METRICS_PORT:-9106}
export NOTIFICATIONS_METRICS_PORT=${NOTIFICATIONS_METRICS_PORT:-9107}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
# The gateway's /metrics is open here (development, no METRICS_TOKEN); set
# METRICS_TOKEN or METRICS_TOKEN_FILE to try it behind its token, which the
# local Prometheus then sends (ops/scripts/prometheus.py).
# Spans of every process kept locally (shared/tracing.py), unless they go to
# an OpenTelemetry collector: `python -m shared.traces <transfer id>`.
# TRACES_DIR= (set, empty) turns tracing off.
if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ]; then
    export TRACES_DIR=${TRACES_DIR-$DATA_DIR/traces}
fi
# Classic saga queues locally: a broker with Debian's default open-files
# limit (1,024) stops accepting connections at a few hundred quorum queues,
# and one platform declares about 190 (docs/OPERATIONS.md). Deployments get
# quorum queues, the code's default.
export SAGA_QUEUE_TYPE=${SAGA_QUEUE_TYPE:-classic}
# The notifications sandbox: a real SMTP server (mail lands in a Maildir
# under $DATA_DIR/mail) and SMS/push HTTP endpoints.
export SMTP_PORT=${SMTP_PORT:-8025}
export NOTIFICATIONS_SANDBOX_PORT=${NOTIFICATIONS_SANDBOX_PORT:-8110}
export NOTIFICATIONS_SMS_URL=${NOTIFICATIONS_SMS_URL:-http://127.0.0.1:$NOTIFICATIONS_SANDBOX_PORT/sms}
export NOTIFICATIONS_PUSH_URL=${NOTIFICATIONS_PUSH_URL:-http://127.0.0.1:$NOTIFICATIONS_SANDBOX_PORT/push}
export PATH="$PWD/$VENV/bin:$PATH"
export PYTHONUNBUFFERED=1

if ! python ops/scripts/probe.py tcp-free "$GATEWAY_HOST:$GATEWAY_PORT" 2>/dev/null; then
    echo "Port $GATEWAY_PORT on $GATEWAY_HOST is taken; stop what uses it or set GATEWAY_PORT." >&2
    exit 1
fi

echo "==> applying database migrations (data in $DATA_DIR)"
python -m shared.migrate

echo "==> declaring the saga's exchanges, queues and bindings"
python -m shared.topology declare

# Readable, coloured log lines when a person watches; JSON otherwise
# (the processes write to supervisord's pipes, so they cannot tell).
if [ -t 1 ]; then export LOG_FORMAT=${LOG_FORMAT:-text}; fi
# supervisord restarts a process that dies (ops/scripts/supervise.py).
echo "==> starting services and gateway (Ctrl-C stops everything)"
if [ -z "$BROKER_PID" ]; then
    exec python ops/scripts/supervise.py Procfile
fi
# The TLS broker is this script's: stopped after everything else.
trap 'kill -TERM "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID"' EXIT
python ops/scripts/supervise.py Procfile
