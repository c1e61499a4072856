#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers, starting or installing one if needed.
#   AMQP_URI set       -> it must answer; nothing is started.
#   else local broker  -> used as is (management UI enabled when possible).
#   else installed     -> started.
#   else root + apt    -> installed with apt-get, then started.
#   else               -> exit 1 with exactly what to do.
# Sourced or run after ops/scripts/bootstrap.sh (needs the venv's kombu).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${VENV:-.venv}/bin/python
DEFAULT_URI="amqp://guest:guest@127.0.0.1:5672/"

answers() { "$PY" ops/scripts/probe.py amqp "$1" 2>/dev/null; }

if [ -n "${AMQP_URI:-}" ]; then
    if answers "$AMQP_URI"; then exit 0; fi
    echo "AMQP_URI is set but the broker does not answer:" >&2
    "$PY" ops/scripts/probe.py amqp "$AMQP_URI" || true
    echo "Fix the URI or start that broker; unset AMQP_URI to use a local RabbitMQ." >&2
    exit 1
fi

start_local() {
    echo "==> starting the local RabbitMQ broker"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl start rabbitmq-server
    elif command -v service >/dev/null 2>&1 && [ -x /etc/init.d/rabbitmq-server ]; then
        service rabbitmq-server start || rabbitmq-server -detached
    else
        rabbitmq-server -detached
    fi
    for _ in $(seq 1 60); do
        answers "$DEFAULT_URI" && return 0
        sleep 1
    done
    echo "RabbitMQ was started but does not answer on 127.0.0.1:5672 after 60 s;" \
         "see /var/log/rabbitmq/." >&2
    return 1
}

if ! answers "$DEFAULT_URI"; then
    if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> installing rabbitmq-server with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
        else
            cat >&2 <<'MSG'
No RabbitMQ broker answers on 127.0.0.1:5672 and none is installed.
Do one of:
  - sudo apt-get install rabbitmq-server    (then run this command again)
  - docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:3-management
  - export AMQP_URI=amqp://user:pass@host:5672/vhost   (an existing broker)
MSG
            exit 1
        fi
    fi
    PATH="$PATH:/usr/sbin" start_local
fi

# The management UI (and its HTTP API, which the tests use for vhosts).
if ! "$PY" ops/scripts/probe.py http http://127.0.0.1:15672/ >/dev/null 2>&1; then
    if command -v rabbitmq-plugins >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-plugins ]; then
        echo "==> enabling the RabbitMQ management plugin"
        if PATH="$PATH:/usr/sbin" rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1; then
            for _ in $(seq 1 30); do
                "$PY" ops/scripts/probe.py http http://127.0.0.1:15672/ 2>/dev/null && break
                sleep 1
            done
        else
            echo "warning: could not enable rabbitmq_management (run as root:" \
                 "rabbitmq-plugins enable rabbitmq_management)" >&2
        fi
    fi
fi
