#!/usr/bin/env bash
# One-shot job of the demo-mysql-replica-setup service (mysql:8.4 image, client only).
#
# 1. creates the replication user on the primary (not binlogged, the replica does not need it);
# 2. points the replica at the primary with GTID auto-positioning and starts replication;
# 3. makes the replica super_read_only (persisted), like a real read replica (read_only is
#    already on from the command line; root bypasses read_only, not super_read_only);
# 4. waits until the replica has applied every transaction the primary had executed when the
#    job started (the seed included), and fails if the applier stops or time runs out.
#
# Safe to re-run: the user is created IF NOT EXISTS and CHANGE REPLICATION SOURCE TO with
# SOURCE_AUTO_POSITION=1 resumes from the replica's own gtid_executed.
set -euo pipefail

PRIMARY_HOST="${PRIMARY_HOST:-demo-mysql}"
REPLICA_HOST="${REPLICA_HOST:-demo-mysql-replica}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
ROOT_PASSWORD="${MYSQL_ROOT_PASSWORD:-}"
REPLICATION_USER="${REPLICATION_USER:-repl}"
REPLICATION_PASSWORD="${REPLICATION_PASSWORD:-repl}"
SYNC_TIMEOUT="${REPLICA_SYNC_TIMEOUT:-900}"

# mysql_on HOST [mysql args...]: root session on HOST, tab-separated output without headers.
mysql_on() {
    local host="$1"
    shift
    local auth=(--user=root)
    if [ -n "$ROOT_PASSWORD" ]; then
        auth+=("--password=$ROOT_PASSWORD")
    fi
    mysql --protocol=TCP --host="$host" --port="$MYSQL_PORT" "${auth[@]}" \
        --batch --raw --skip-column-names "$@"
}

wait_for() {
    local host="$1" waited=0
    until mysql_on "$host" -e 'SELECT 1' >/dev/null 2>&1; do
        if [ "$waited" -ge 300 ]; then
            echo "mysql-replica-setup: ${host} not reachable after 300s" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
}

wait_for "$PRIMARY_HOST"
wait_for "$REPLICA_HOST"

echo "mysql-replica-setup: creating replication user ${REPLICATION_USER} on ${PRIMARY_HOST}"
mysql_on "$PRIMARY_HOST" <<EOSQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '${REPLICATION_USER}'@'%' IDENTIFIED BY '${REPLICATION_PASSWORD}';
GRANT REPLICATION SLAVE ON *.* TO '${REPLICATION_USER}'@'%';
EOSQL

# Everything the primary has executed so far, the seed included. Multi-source sets are printed
# over several lines; GTID set syntax does not need the newlines.
primary_gtids="$(mysql_on "$PRIMARY_HOST" -e 'SELECT @@GLOBAL.gtid_executed' | tr -d '\n')"
echo "mysql-replica-setup: primary gtid_executed = ${primary_gtids}"

echo "mysql-replica-setup: starting replication ${PRIMARY_HOST} -> ${REPLICA_HOST}"
# GET_SOURCE_PUBLIC_KEY=1: the replication user authenticates with caching_sha2_password over a
# non-TLS connection, which needs the source's RSA public key.
mysql_on "$REPLICA_HOST" <<EOSQL
SET GLOBAL super_read_only = OFF;
STOP REPLICA;
CHANGE REPLICATION SOURCE TO
    SOURCE_HOST = '${PRIMARY_HOST}',
    SOURCE_PORT = ${MYSQL_PORT},
    SOURCE_USER = '${REPLICATION_USER}',
    SOURCE_PASSWORD = '${REPLICATION_PASSWORD}',
    SOURCE_AUTO_POSITION = 1,
    GET_SOURCE_PUBLIC_KEY = 1,
    SOURCE_CONNECT_RETRY = 5;
START REPLICA;
SET PERSIST super_read_only = ON;
EOSQL

echo "mysql-replica-setup: waiting up to ${SYNC_TIMEOUT}s for ${REPLICA_HOST} to catch up"
waited=0
while :; do
    caught_up="$(mysql_on "$REPLICA_HOST" -e \
        "SELECT GTID_SUBSET('${primary_gtids}', @@GLOBAL.gtid_executed)")"
    if [ "$caught_up" = 1 ]; then
        echo "mysql-replica-setup: replica has applied the primary's transactions"
        break
    fi
    applier="$(mysql_on "$REPLICA_HOST" -e \
        'SELECT SERVICE_STATE FROM performance_schema.replication_applier_status')"
    if [ "$applier" != ON ] || [ "$waited" -ge "$SYNC_TIMEOUT" ]; then
        echo "mysql-replica-setup: replica not in sync (applier=${applier}, waited=${waited}s)" >&2
        mysql_on "$REPLICA_HOST" --vertical -e 'SHOW REPLICA STATUS' >&2 || true
        exit 1
    fi
    sleep 2
    waited=$((waited + 2))
done

mysql_on "$REPLICA_HOST" --vertical -e 'SHOW REPLICA STATUS' | grep -E \
    'Source_Host|Replica_IO_Running|Replica_SQL_Running|Seconds_Behind_Source|Auto_Position' || true
