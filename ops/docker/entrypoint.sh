#!/bin/sh
# Entrypoint of the fintech image: the first argument picks the process.
# The commands are the ones of docs/RUNTIME-CONTRACT.md; `exec` replaces this
# shell so SIGTERM from Docker/Kubernetes reaches nameko/gunicorn directly.
#
#   entrypoint.sh service <name>       nameko service (auth, accounts, ...)
#   entrypoint.sh gateway [args...]    gunicorn, bound to 0.0.0.0 by default
#   entrypoint.sh migrate [names...]   Alembic migrations (all services if none)
#   entrypoint.sh healthcheck <name>   exit 0 if healthy (a service, or gateway)
#   entrypoint.sh <command> [args...]  anything else, e.g. `nameko shell`
#
# Secrets as files (Docker/Kubernetes secrets), so that no password sits in
# the environment of the orchestrator:
#   DATABASE_PASSWORD_FILE  its content, URL-encoded, replaces `{password}` in
#                           DATABASE_URL and every <SERVICE>_DATABASE_URL
#   AMQP_PASSWORD_FILE      same for `{password}` in AMQP_URI
set -eu

# Run from the project root (/app in the image) whatever the working directory.
script_dir=$(cd "$(dirname "$0")" && pwd)
cd "$script_dir/../.."

usage() {
    # The header comment of this file is the help text.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' \
        "$script_dir/$(basename "$0")"
}

die() {
    printf 'entrypoint: %s\n' "$*" >&2
    exit 64
}

# Print the content of secret file $1, URL-encoded for the userinfo of a URL.
# Python runs only when the password has characters that need encoding.
read_url_password() {
    [ -r "$1" ] || die "cannot read password file $1"
    # $(...) strips trailing newlines, as `echo secret > file` leaves one.
    _password=$(cat "$1")
    [ -n "$_password" ] || die "password file $1 is empty"
    case $_password in
        *[!A-Za-z0-9._~-]*)
            printf '%s' "$_password" | python3 -c \
                'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""), end="")'
            ;;
        *)
            printf '%s' "$_password"
            ;;
    esac
}

# Replace every `{password}` in the value of variable $1 by $2 and export it.
# $1 is a variable name matched by a strict pattern, so the eval is safe.
fill_password() {
    eval "_rest=\${$1-}"
    case $_rest in *"{password}"*) ;; *) return 0 ;; esac
    _done=
    while :; do
        case $_rest in
            *"{password}"*)
                _done=$_done${_rest%%"{password}"*}$2
                _rest=${_rest#*"{password}"}
                ;;
            *) break ;;
        esac
    done
    export "$1=$_done$_rest"
}

if [ -n "${DATABASE_PASSWORD_FILE:-}" ]; then
    _encoded=$(read_url_password "$DATABASE_PASSWORD_FILE")
    # DATABASE_URL and the per-service overrides (AUTH_DATABASE_URL, ...).
    for _name in $(env | sed -n 's/^\([A-Z0-9_]*DATABASE_URL\)=.*/\1/p'); do
        fill_password "$_name" "$_encoded"
    done
fi
if [ -n "${AMQP_PASSWORD_FILE:-}" ] && [ -n "${AMQP_URI:-}" ]; then
    _encoded=$(read_url_password "$AMQP_PASSWORD_FILE")
    fill_password AMQP_URI "$_encoded"
fi
unset _encoded _name _password _rest _done

process=${1:-help}
if [ "$#" -gt 0 ]; then shift; fi

case $process in
    service)
        [ "$#" -eq 1 ] || die "usage: entrypoint.sh service <name>"
        case $1 in
            '' | *[!a-z0-9_]*) die "invalid service name: $1" ;;
        esac
        # Name the class (auth -> AuthService): the module also imports the
        # ServiceBase it derives from, which nameko would otherwise pick up.
        _first=$(printf '%s' "$1" | cut -c1 | tr '[:lower:]' '[:upper:]')
        _class="${_first}$(printf '%s' "$1" | cut -c2-)Service"
        exec nameko run --config config.yml "services.$1.service:${_class}"
        ;;
    gateway)
        # The contract's default (127.0.0.1) is for a laptop; in a container
        # the gateway must listen on every interface to be reachable.
        export GATEWAY_HOST="${GATEWAY_HOST:-0.0.0.0}"
        exec gunicorn -c gateway/gunicorn.conf.py "$@" gateway.wsgi:app
        ;;
    migrate)
        exec python -m shared.migrate "$@"
        ;;
    healthcheck)
        [ "$#" -eq 1 ] || die "usage: entrypoint.sh healthcheck <name>"
        if [ "$1" = gateway ]; then
            # No curl in the slim image: probe /health/live with the stdlib.
            exec python -c '
import os, sys, urllib.request
url = "http://127.0.0.1:%s/health/live" % os.environ.get("GATEWAY_PORT", "8000")
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print("gateway unhealthy: %s" % exc, file=sys.stderr)
    sys.exit(1)
'
        fi
        exec python -m shared.healthcheck "$1"
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        exec "$process" "$@"
        ;;
esac
