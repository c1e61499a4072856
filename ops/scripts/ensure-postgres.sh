#!/usr/bin/env bash
# Make sure PostgreSQL answers for the tests; print the admin URL to use.
#   TEST_DATABASE_URL set -> it must answer.
#   else postgresql://postgres@127.0.0.1:5432/postgres answers -> use it.
#   else installed cluster -> started; else root + apt -> installed.
# The URL (a role allowed to CREATE DATABASE) is printed on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${VENV:-.venv}/bin/python
answers() { "$PY" ops/scripts/probe.py postgres "$1" 2>/dev/null; }

if [ -n "${TEST_DATABASE_URL:-}" ]; then
    if answers "$TEST_DATABASE_URL"; then echo "$TEST_DATABASE_URL"; exit 0; fi
    "$PY" ops/scripts/probe.py postgres "$TEST_DATABASE_URL" || true
    echo "TEST_DATABASE_URL is set but PostgreSQL does not answer there." >&2
    exit 1
fi

for url in postgresql://postgres@127.0.0.1:5432/postgres \
           postgresql://postgres:postgres@127.0.0.1:5432/postgres; do
    if answers "$url"; then echo "$url"; exit 0; fi
done

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing postgresql with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        cat >&2 <<'MSG'
The tests need PostgreSQL and none answers on 127.0.0.1:5432. Do one of:
  - sudo apt-get install postgresql      (then run this command again)
  - docker run -d -p 5432:5432 -e POSTGRES_PASSWORD=postgres postgres:15
  - export TEST_DATABASE_URL=postgresql://user:pass@host:5432/postgres
    (a role that may CREATE DATABASE)
MSG
        exit 1
    fi
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "==> starting PostgreSQL $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 2>&1 || \
    pg_ctlcluster "$version" main start >&2
for _ in $(seq 1 30); do
    answers postgresql://postgres@127.0.0.1:5432/postgres && break
    # A fresh Debian cluster asks for a password on TCP: give the admin role one.
    if [ "$(id -u)" = 0 ] && su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" \
        >/dev/null 2>&1 && answers postgresql://postgres:postgres@127.0.0.1:5432/postgres; then
        echo postgresql://postgres:postgres@127.0.0.1:5432/postgres; exit 0
    fi
    sleep 1
done
if answers postgresql://postgres@127.0.0.1:5432/postgres; then
    echo postgresql://postgres@127.0.0.1:5432/postgres; exit 0
fi
echo "PostgreSQL was started but does not accept connections on 127.0.0.1:5432." >&2
exit 1
