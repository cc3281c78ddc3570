#!/usr/bin/env bash
# The seed's dry-run command, with its exact interface:
#
#   BACKFILL_DRY_RUN=true BATCH_SIZE=1000 TARGET_TABLE=users_legacy \
#     ./scripts/backfill_executor.sh --mode=validate --output=explain_plan.json
#
# It runs `zdt-backfill dry-run`: pre-flight, EXPLAIN of each partition's first batch statement
# (full scans flagged; on MySQL also without FORCE INDEX), partition and batch boundaries and an
# estimated duration, written as JSON to --output. It writes nothing to the database. It only
# dry-runs: real runs go through the DAG (zero_downtime_backfill), which gates, checkpoints and
# validates them.
#
# Environment:
#   BACKFILL_DRY_RUN   must be "true" (anything else is refused, exit 2)
#   TARGET_TABLE       the seed's table to backfill: the *source* table (default: the conf's, else users_legacy)
#   BATCH_SIZE         rows per batch (default: the conf's, else the profile's)
#   PROFILE            dev | staging | prod (default: the conf's, else prod)
#   BACKFILL_CONF      the DAG run's conf, a JSON file or inline JSON, for target_table, columns, key...
#                      (default: the demo's users_legacy -> users_new, lower(trim(email)) / md5(legacy_data))
#   BACKFILL_URL       the database, postgresql://... or mysql://... (default: $ZDT_BACKFILL_URL)
# Flags:
#   --mode=validate    the only mode (required)
#   --output=FILE      where the JSON goes (default: explain_plan.json)
#   --batches=N        batch boundaries listed per partition (default 3)
#   -h, --help         this text
# Exit codes: 0 done, 1 pre-flight failed or database error, 2 refused or bad arguments.
set -euo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
refuse() { echo "backfill_executor.sh: $*" >&2; exit 2; }

mode="" output="explain_plan.json" batches=""
for arg in "$@"; do
  case "$arg" in
    --mode=*) mode="${arg#--mode=}" ;;
    --output=*) output="${arg#--output=}" ;;
    --batches=*) batches="${arg#--batches=}" ;;
    -h|--help) usage; exit 0 ;;
    *) refuse "unknown argument: $arg (see --help)" ;;
  esac
done

[ "$mode" = "validate" ] || refuse "--mode=${mode:-<none>} refused: this script only dry-runs (--mode=validate with BACKFILL_DRY_RUN=true); real runs go through the DAG"
[ "${BACKFILL_DRY_RUN:-}" = "true" ] || refuse "BACKFILL_DRY_RUN=${BACKFILL_DRY_RUN:-<unset>} refused: this script only dry-runs (set BACKFILL_DRY_RUN=true); real runs go through the DAG"
[ -n "$output" ] || refuse "--output is empty"

url="${BACKFILL_URL:-${ZDT_BACKFILL_URL:-}}"
[ -n "$url" ] || refuse "set BACKFILL_URL (or ZDT_BACKFILL_URL) to postgresql://... or mysql://..."

DEFAULT_CONF='{"source_table": "users_legacy", "target_table": "users_new", "key": "id",
 "columns": {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"}}'
conf="${BACKFILL_CONF:-$DEFAULT_CONF}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$root/.venv/bin/python" ]; then
  py=("$root/.venv/bin/python")
else
  py=(python3)
fi
export PYTHONPATH="$root/include${PYTHONPATH:+:$PYTHONPATH}"

cmd=("${py[@]}" -m zdt_backfill dry-run --conf "$conf" --output "$output")
[ -n "${TARGET_TABLE:-}" ] && cmd+=(--source-table "$TARGET_TABLE")
[ -n "${BATCH_SIZE:-}" ] && cmd+=(--batch-size "$BATCH_SIZE")
[ -n "${PROFILE:-}" ] && cmd+=(--profile "$PROFILE")
[ -n "$batches" ] && cmd+=(--batches "$batches")
# The URL goes by the environment, which keeps the password off the command line.
ZDT_BACKFILL_URL="$url" exec "${cmd[@]}"
