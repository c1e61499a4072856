#!/bin/sh
# Entrypoint of the fintech image: the first argument picks the process.
# The commands are the ones of docs/RUNTIME-CONTRACT.md; `exec` replaces this
# shell so SIGTERM from Docker/Kubernetes reaches nameko/gunicorn directly.
#
#   entrypoint.sh service <name>       nameko service (auth, accounts,
#                                      transactions, risk, analytics, payments,
#                                      notifications)
#   entrypoint.sh gateway [args...]    gunicorn, bound to 0.0.0.0 by default
#   entrypoint.sh sandbox [args...]    the payment provider sandbox (HTTP, port
#                                      SANDBOX_PORT, 8100), bound to 0.0.0.0;
#                                      both sandboxes are in the image's
#                                      `sandbox` target only (Dockerfile)
#   entrypoint.sh notifications-sandbox [args...]
#                                      the notification providers sandbox (SMTP
#                                      on SMTP_PORT, 8025; SMS/push HTTP on
#                                      NOTIFICATIONS_SANDBOX_PORT, 8110), bound
#                                      to 0.0.0.0
#   entrypoint.sh migrate [names...]   Alembic migrations (all services if none),
#                                      then, with no names, the saga's topology
#                                      (python -m shared.topology declare)
#   entrypoint.sh topology [args...]   python -m shared.topology (declare,
#                                      declare --check, migrate [--drain])
#   entrypoint.sh backup [--to DIR]    python -m ops.backup backup (BACKUP_DIR)
#   entrypoint.sh healthcheck <name> [live|ready]
#                                      exit 0 if healthy (a service, gateway,
#                                      sandbox or notifications-sandbox)
#   entrypoint.sh <command> [args...]  anything else, e.g. `nameko shell`
#
# Secrets as files (Docker/Kubernetes secrets), so that no secret sits in
# the environment of the orchestrator (docker inspect, kubectl get):
#   DATABASE_PASSWORD_FILE  its content, URL-encoded, replaces `{password}` in
#                           DATABASE_URL and every <SERVICE>_DATABASE_URL
#                           (a service process: the password of its own role)
#   <SERVICE>_DATABASE_PASSWORD_FILE
#                           the password of one service's own role, for a
#                           process that reaches several databases (migrate):
#                           its content, URL-encoded, replaces `{password}` in
#                           <SERVICE>_DATABASE_URL; if that is unset, it is
#                           first set to DATABASE_URL with `{service}` replaced
#                           by the service's name in lower case (AUTH -> auth).
#                           Applied before DATABASE_PASSWORD_FILE; never exported
#                           as <SERVICE>_DATABASE_PASSWORD.
#   AMQP_PASSWORD_FILE      same for `{password}` in AMQP_URI
#   RABBITMQ_MANAGEMENT_PASSWORD_FILE
#                           same for `{password}` in RABBITMQ_MANAGEMENT_URL (the
#                           backup's password user of the management API; AMQP
#                           itself takes a client certificate, no password)
#   <NAME>_FILE             for the platform's own variables (NAME starting
#                           with AUTH_, ACCOUNTS_, TRANSACTIONS_, RISK_, ANALYTICS_,
#                           PAYMENTS_, NOTIFICATIONS_, SANDBOX_, SMTP_, GATEWAY_ or
#                           RATE_LIMIT_, or NAME = AMQP_URI or DATABASE_URL): the
#                           file's content is exported as NAME and <NAME>_FILE is
#                           unset, e.g. PAYMENTS_PROVIDER_API_KEY_FILE,
#                           PAYMENTS_WEBHOOK_SECRET_SANDBOX_FILE, SANDBOX_API_KEY_FILE,
#                           NOTIFICATIONS_SMS_API_KEY_FILE, SMTP_PASSWORD_FILE.
#                           Setting both NAME and <NAME>_FILE is an error; an empty
#                           <NAME>_FILE is ignored. Other *_FILE variables are paths
#                           for other software (SSL_CERT_FILE, ...) and are left alone.
# A trailing newline in a secret file is dropped; the file must not be empty
# nor larger than 64 KiB.
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

# Exit 0 if GET $2 answers 200 within 5 s (no curl in the slim image: the
# stdlib does it); $1 names the process in the error message.
http_probe() {
    exec python -c '
import sys, urllib.request
name, url = sys.argv[1:3]
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print("%s unhealthy: %s" % (name, exc), file=sys.stderr)
    sys.exit(1)
' "$1" "$2"
}

# Print the content of secret file $1 (for variable $2), without its
# trailing newlines: $(...) strips them, as `echo secret > file` leaves one.
read_secret() {
    [ -r "$1" ] || die "$2: cannot read secret file $1"
    # A variable over 128 KiB makes every exec fail (E2BIG): say why instead.
    [ "$(wc -c <"$1")" -le 65536 ] || die "$2: secret file $1 is larger than 64 KiB"
    _secret=$(cat "$1")
    [ -n "$_secret" ] || die "$2: secret file $1 is empty"
    printf '%s' "$_secret"
}

# Print the content of secret file $1, URL-encoded for the userinfo of a URL.
# Python runs only when the password has characters that need encoding.
read_url_password() {
    _password=$(read_secret "$1" "$2")
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

# Replace every $2 (a literal token such as `{password}`) in the value of
# variable $1 by $3 and export it. $1 is a variable name matched by a strict
# pattern, so the eval is safe.
replace_token() {
    eval "_rest=\${$1-}"
    case $_rest in *"$2"*) ;; *) return 0 ;; esac
    _done=
    while :; do
        case $_rest in
            *"$2"*)
                _done=$_done${_rest%%"$2"*}$3
                _rest=${_rest#*"$2"}
                ;;
            *) break ;;
        esac
    done
    export "$1=$_done$_rest"
}

# Replace every `{password}` in the value of variable $1 by $2 and export it.
fill_password() {
    replace_token "$1" "{password}" "$2"
}

# <NAME>_FILE first, so that e.g. DATABASE_URL_FILE may hold a URL with
# `{password}` in it. The names come from `env` and must match a strict
# pattern (a multi-line value could fake a line; a faked name is not set, so
# it is skipped): that makes the evals safe. Values are never evaluated.
for _name in $(env | sed -n 's/^\([A-Z][A-Z0-9_]*\)_FILE=.*/\1/p' | sort -u); do
    case $_name in
        # A role's password fills a URL below; it is never exported as such.
        *_DATABASE_PASSWORD) continue ;;
        AMQP_URI | DATABASE_URL) ;;
        AUTH_* | ACCOUNTS_* | TRANSACTIONS_* | RISK_* | ANALYTICS_* | PAYMENTS_* | NOTIFICATIONS_*) ;;
        SANDBOX_* | SMTP_* | GATEWAY_* | RATE_LIMIT_*) ;;
        *) continue ;;
    esac
    eval "_path=\${${_name}_FILE-}"
    [ -n "$_path" ] || continue
    eval "_current=\${${_name}-}"
    [ -z "$_current" ] || die "both $_name and ${_name}_FILE are set; set only one"
    _value=$(read_secret "$_path" "${_name}_FILE")
    export "$_name=$_value"
    unset "${_name}_FILE"
done

# Each service's own role (migrate): <SERVICE>_DATABASE_PASSWORD_FILE.
for _name in $(env | sed -n 's/^\([A-Z][A-Z0-9_]*\)_DATABASE_PASSWORD_FILE=.*/\1/p' | sort -u); do
    eval "_path=\${${_name}_DATABASE_PASSWORD_FILE-}"
    [ -n "$_path" ] || continue
    _encoded=$(read_url_password "$_path" "${_name}_DATABASE_PASSWORD_FILE")
    eval "_current=\${${_name}_DATABASE_URL-}"
    if [ -z "$_current" ]; then
        [ -n "${DATABASE_URL:-}" ] ||
            die "${_name}_DATABASE_PASSWORD_FILE is set, but neither ${_name}_DATABASE_URL nor DATABASE_URL"
        export "${_name}_DATABASE_URL=$DATABASE_URL"
        replace_token "${_name}_DATABASE_URL" "{service}" \
            "$(printf '%s' "$_name" | tr '[:upper:]' '[:lower:]')"
    fi
    fill_password "${_name}_DATABASE_URL" "$_encoded"
    unset "${_name}_DATABASE_PASSWORD_FILE"
done
if [ -n "${DATABASE_PASSWORD_FILE:-}" ]; then
    _encoded=$(read_url_password "$DATABASE_PASSWORD_FILE" DATABASE_PASSWORD_FILE)
    # DATABASE_URL and the per-service overrides (AUTH_DATABASE_URL, ...).
    for _name in $(env | sed -n 's/^\([A-Z0-9_]*DATABASE_URL\)=.*/\1/p'); do
        fill_password "$_name" "$_encoded"
    done
fi
if [ -n "${AMQP_PASSWORD_FILE:-}" ] && [ -n "${AMQP_URI:-}" ]; then
    _encoded=$(read_url_password "$AMQP_PASSWORD_FILE" AMQP_PASSWORD_FILE)
    fill_password AMQP_URI "$_encoded"
fi
if [ -n "${RABBITMQ_MANAGEMENT_PASSWORD_FILE:-}" ] && [ -n "${RABBITMQ_MANAGEMENT_URL:-}" ]; then
    _encoded=$(read_url_password "$RABBITMQ_MANAGEMENT_PASSWORD_FILE" RABBITMQ_MANAGEMENT_PASSWORD_FILE)
    fill_password RABBITMQ_MANAGEMENT_URL "$_encoded"
fi
unset RABBITMQ_MANAGEMENT_PASSWORD_FILE
unset _encoded _name _password _rest _done _path _current _value _secret

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
        python -m shared.migrate "$@"
        # Every exchange, queue and binding of the saga, before services
        # start; not when migrating chosen databases only.
        [ "$#" -gt 0 ] || exec python -m shared.topology declare
        ;;
    topology)
        [ "$#" -gt 0 ] || set -- declare
        exec python -m shared.topology "$@"
        ;;
    backup)
        # Every database and the broker's definitions (docs/DISASTER-RECOVERY.md).
        exec python -m ops.backup backup "$@"
        ;;
    sandbox)
        # The payment provider sandbox (sandboxes/payments.py): for
        # development and staging only, production talks to a real provider;
        # only the image's `sandbox` target has it (Dockerfile).
        # Like the gateway, it must listen on every interface in a container.
        export SANDBOX_HOST="${SANDBOX_HOST:-0.0.0.0}"
        exec python -m sandboxes.payments "$@"
        ;;
    notifications-sandbox)
        # The notification providers sandbox (sandboxes/notifications.py):
        # an SMTP server storing mail in a Maildir (NOTIFICATIONS_SANDBOX_MAIL_DIR,
        # default DATA_DIR/mail) and the SMS/push HTTP APIs. Development and
        # staging only (the `sandbox` target); every interface in a container.
        export NOTIFICATIONS_SANDBOX_HOST="${NOTIFICATIONS_SANDBOX_HOST:-0.0.0.0}"
        exec python -m sandboxes.notifications "$@"
        ;;
    healthcheck)
        [ "$#" -ge 1 ] && [ "$#" -le 2 ] || die "usage: entrypoint.sh healthcheck <name> [live|ready]"
        case $1 in
            gateway) http_probe gateway "http://127.0.0.1:${GATEWAY_PORT:-8000}/health/live" ;;
            sandbox) http_probe sandbox "http://127.0.0.1:${SANDBOX_PORT:-8100}/health" ;;
            # Its HTTP server starts once the SMTP server listens.
            notifications-sandbox)
                http_probe notifications-sandbox \
                    "http://127.0.0.1:${NOTIFICATIONS_SANDBOX_PORT:-8110}/health"
                ;;
        esac
        # A service: this container's own process (SERVICE_HEALTH_PORT),
        # `live` for liveness, `ready` (the default) for start-up/readiness.
        exec python -m shared.healthcheck "$@"
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        exec "$process" "$@"
        ;;
esac
