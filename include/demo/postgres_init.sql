-- Demo schema for the zero_downtime_backfill DAG (PostgreSQL).
-- Expand phase already applied: users_new exists beside users_legacy.
-- Row count comes from the psql variable demo_rows (default 1,000,000):
--   psql -v demo_rows=100000 -f postgres_init.sql
\if :{?demo_rows}
\else
\set demo_rows 1000000
\endif
-- A demo starts from a clean slate: the run-state tables of earlier demo runs go too.
DROP TABLE IF EXISTS zdt_backfill_runs;
DROP TABLE IF EXISTS zdt_backfill_events;
DROP TABLE IF EXISTS zdt_backfill_checkpoints;
DROP TABLE IF EXISTS zdt_routing_flags;
DROP TABLE IF EXISTS zdt_heartbeat;
DROP TABLE IF EXISTS users_new;
DROP TABLE IF EXISTS users_legacy;
CREATE TABLE users_legacy (
    id          bigint PRIMARY KEY,
    email       text NOT NULL,
    legacy_data text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_legacy_updated_at_idx ON users_legacy (updated_at);
INSERT INTO users_legacy (id, email, legacy_data, updated_at)
SELECT g,
       '  User' || g || '@Example.COM ',
       repeat(md5(g::text), 2),
       now() - interval '2 days'
FROM generate_series(1, :demo_rows) AS g;
CREATE TABLE users_new (
    id               bigint PRIMARY KEY,
    email_normalized text,
    data_hash        text
);
ANALYZE users_legacy;
