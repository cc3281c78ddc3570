#!/usr/bin/env bash
# demo-pg (primary) init hook, mounted as /docker-entrypoint-initdb.d/00-replication.sh.
#
# The postgres image runs it once, on an empty data directory, before the seed
# (10-postgres_init.sql). The image sources *.sh files that are not executable and executes the
# others, so this file works both ways: no `exit`, no `set -u`.
#
# It creates the role that demo-pg-replica uses for pg_basebackup and streaming, and lets that
# role open replication connections from the compose network (the image's default pg_hba.conf
# line "host all all all" does not cover replication connections).
set -e

repl_user="${REPLICATION_USER:-replicator}"
repl_password="${REPLICATION_PASSWORD:-replicator}"

psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set=repl_user="$repl_user" --set=repl_password="$repl_password" <<'EOSQL'
CREATE ROLE :"repl_user" WITH LOGIN REPLICATION PASSWORD :'repl_password';
EOSQL

echo "host replication ${repl_user} all scram-sha-256" >> "${PGDATA:-/var/lib/postgresql/data}/pg_hba.conf"
echo "demo-pg: replication role ${repl_user} created and allowed in pg_hba.conf"
