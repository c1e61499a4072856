#!/bin/sh
# PostgreSQL init script: one database per service, each owned by the
# service's own role (database per service, no cross-service SQL), and a
# read-only backup role. The official postgres image runs it once, on an
# empty data directory, as $POSTGRES_USER (the bootstrap superuser, which no
# service ever gets); the Kubernetes migrate Job (init container) and the
# Swarm `databases` service run it again before every migration, with PGHOST
# set, so a new service's database and role appear on an existing volume and
# a changed password secret is applied (tests/integration/test_database_roles.py
# runs this very file against a real server).
#
# For each database D of FINTECH_DATABASES (space-separated; default: one
# per service), the role D (same name as its database, e.g. fintech_auth):
#   - LOGIN, not superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS;
#     password: the content of the file ${FINTECH_ROLE_PASSWORD_PREFIX}D
#   - owns D (so it creates its own tables: migrations run as this role)
#   - CONNECT and TEMP on D are revoked from PUBLIC: no other role (but the
#     backup role, which gets CONNECT) can connect to D
# and the role $FINTECH_BACKUP_ROLE (default fintech_backup; password file
# ${FINTECH_ROLE_PASSWORD_PREFIX}<role>): LOGIN, member of pg_read_all_data
# (SELECT on every table, no write), CONNECT on every D.
# Databases that exist already change owner to their role (ALTER DATABASE);
# their tables keep the owner they had (docs/OPERATIONS.md: upgrading from
# the shared role).
#
# By hand:
#   docker exec -e FINTECH_DATABASES=fintech_payments <postgres container> \
#     sh /docker-entrypoint-initdb.d/create-databases.sh
#
# k8s/base/postgres/create-databases.sh is a copy of this file (kustomize
# cannot load files outside its tree); `make validate-deploy` checks
# that the two stay identical.
set -eu

databases=${FINTECH_DATABASES:-fintech_auth fintech_accounts fintech_transactions fintech_risk fintech_analytics fintech_payments fintech_notifications}
backup_role=${FINTECH_BACKUP_ROLE:-fintech_backup}
admin=${POSTGRES_USER:-postgres}
prefix=${FINTECH_ROLE_PASSWORD_PREFIX:?set FINTECH_ROLE_PASSWORD_PREFIX (the password files are <prefix><role>)}

fail() {
    echo "create-databases: $*" >&2
    exit 1
}

valid_name() {
    case $1 in
        '' | *[!a-z0-9_]*) fail "invalid name: $1" ;;
    esac
}

# Print the password of role $1 (its file, without the trailing newline).
role_password() {
    [ -r "$prefix$1" ] || fail "cannot read the password file of role $1: $prefix$1"
    _password=$(cat "$prefix$1")
    [ -n "$_password" ] || fail "the password file of role $1 is empty: $prefix$1"
    printf '%s' "$_password"
}

# Ensure role $1 exists with the password of its file and no privilege.
# The password reaches psql through the environment (\getenv), never argv.
ensure_role() {
    FINTECH_ROLE_PASSWORD=$(role_password "$1")
    export FINTECH_ROLE_PASSWORD
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$admin" --dbname postgres \
        --set role="$1" <<'SQL'
\getenv password FINTECH_ROLE_PASSWORD
SELECT format('CREATE ROLE %I', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
\gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"role" WITH PASSWORD :'password';
SQL
    unset FINTECH_ROLE_PASSWORD
}

valid_name "$backup_role"
for database in $databases; do
    valid_name "$database"
done

echo "create-databases: ensuring backup role $backup_role (read-only)"
ensure_role "$backup_role"
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$admin" --dbname postgres \
    --set role="$backup_role" <<'SQL'
GRANT pg_read_all_data TO :"role";
SQL

for database in $databases; do
    echo "create-databases: ensuring database $database (owner: role $database)"
    ensure_role "$database"
    # CREATE DATABASE cannot run inside a function or DO block; \gexec runs
    # the generated statement only when the database does not exist yet.
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$admin" --dbname postgres \
        --set db="$database" --set backup="$backup_role" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
ALTER DATABASE :"db" OWNER TO :"db";
-- Only the owner (the service's role) and the backup role may connect.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"backup";
SQL
done
