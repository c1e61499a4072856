#!/bin/sh
# PostgreSQL init script: one database per service (database per service,
# no cross-service SQL). The official postgres image runs it once, on an empty
# data directory, as $POSTGRES_USER, who becomes the owner of each database.
#
# FINTECH_DATABASES lists the databases (space-separated; default: one per
# service). The script is idempotent, and also runs against a server that
# already has data: the Kubernetes migrate Job (init container) and the Swarm
# `databases` service run it before every migration, with PGHOST set, so a
# new service's database appears on an existing volume. By hand:
#   docker exec -e FINTECH_DATABASES=fintech_payments <postgres container> \
#     sh /docker-entrypoint-initdb.d/create-databases.sh
#
# k8s/base/postgres/create-databases.sh is a copy of this file (kustomize
# cannot load files outside its tree); `make validate-deploy` checks
# that the two stay identical.
set -eu

databases=${FINTECH_DATABASES:-fintech_auth fintech_accounts fintech_transactions fintech_risk fintech_analytics fintech_payments fintech_notifications}
owner=${POSTGRES_USER:-postgres}

for database in $databases; do
    case $database in
        '' | *[!a-z0-9_]*)
            echo "create-databases: invalid database name: $database" >&2
            exit 1
            ;;
    esac
    echo "create-databases: ensuring database $database (owner $owner)"
    # CREATE DATABASE cannot run inside a function or DO block; \gexec runs
    # the generated statement only when the database does not exist yet.
    psql -v ON_ERROR_STOP=1 --username "$owner" --dbname postgres \
        --set db="$database" --set owner="$owner" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
-- Only the owner (the services' role) may connect; not every role of the cluster.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SQL
done
