#!/usr/bin/env bash
# Entrypoint of demo-pg-replica (postgres:15 image).
#
# On an empty data volume: waits for the primary, makes sure the physical replication slot
# exists, clones the primary with `pg_basebackup -R` (which writes standby.signal and
# primary_conninfo), then hands over to the image's own docker-entrypoint.sh. That script finds
# an existing data directory, skips initdb and starts postgres as a hot standby.
# On later starts the data directory is already there and only the hand-over happens.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PRIMARY_HOST="${PRIMARY_HOST:-demo-pg}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
REPLICATION_SLOT="${REPLICATION_SLOT:-demo_pg_replica}"
WAIT_SECONDS="${PRIMARY_WAIT_SECONDS:-600}"
export PGPASSWORD="${REPLICATION_PASSWORD:-replicator}"

# Run a command as the postgres OS user when the container runs as root (the default).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        gosu postgres "$@"
    else
        "$@"
    fi
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "demo-pg-replica: waiting for primary ${PRIMARY_HOST}:${PRIMARY_PORT}"
    waited=0
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER"; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            echo "demo-pg-replica: primary not ready after ${WAIT_SECONDS}s" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done

    # Idempotent: keeps an existing slot (e.g. after the replica volume alone was removed).
    psql "host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER dbname=postgres" \
        -v ON_ERROR_STOP=1 --no-psqlrc -qAt -v slot="$REPLICATION_SLOT" <<'EOSQL'
SELECT pg_create_physical_replication_slot(:'slot')
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot');
EOSQL

    # Leftovers of an interrupted clone would make pg_basebackup refuse the directory.
    mkdir -p "$PGDATA"
    find "$PGDATA" -mindepth 1 -delete
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$PGDATA"
    fi
    chmod 0700 "$PGDATA"

    echo "demo-pg-replica: cloning ${PRIMARY_HOST} with pg_basebackup"
    as_postgres pg_basebackup \
        --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" --username="$REPLICATION_USER" \
        --pgdata="$PGDATA" --wal-method=stream --slot="$REPLICATION_SLOT" \
        --write-recovery-conf --checkpoint=fast --progress
    echo "demo-pg-replica: clone done, starting as hot standby"
fi

exec docker-entrypoint.sh "$@"
