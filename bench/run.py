"""`make bench`: the engine against the baselines PEERS.md uses, on PostgreSQL, MariaDB and MySQL.

For each engine (a local primary + streaming replica from scripts/localdb.py, under
.local/bench), seed BENCH_ROWS rows (default 1,000,000) of users_legacy and copy them into
users_new with ``lower(trim(email))`` and ``md5(legacy_data)`` (Oracle MySQL 9.7, which has no
MD5(): ``left(sha2(legacy_data, 256), 32)``, :data:`common.ORACLE_MYSQL_COLUMNS`). The engines
are ``postgres``, ``mariadb`` (10.11) and ``mysql`` (Oracle MySQL 9.7), BENCH_ENGINES selects:

- ``monolithic``: one ``INSERT ... SELECT`` (the upper bound; never run this in production);
- ``keyset_1000``: keyset ``INSERT ... SELECT`` per 1,000-key range, commit each, no locks,
  no checkpoint (PEERS' baseline);
- ``seed_row_loop``: the seed's loop (fetch 500 keys, insert row by row, commit), on the first
  BENCH_LOOP_ROWS rows only (default 50,000; it is slow);
- ``engine_batch_1000``: this engine at the prod batch size, one partition, no throttle (like
  for like with ``keyset_1000``): keyset chunk, shared-locked read, insert-if-absent, checkpoint
  in the same transaction;
- ``engine_dev_p1`` / ``engine_dev_p2`` (BENCH_PARTITIONS): the engine as the dev profile runs it
  (batches of up to 50,000 rows aiming at 0.5 s, no throttle), 1 and 2 partitions at once, one
  thread each as mapped tasks; ``engine_rows_per_s`` is the best of them (issue 9: "with the best
  partition count for the machine"), and its batch p50/p99 are ``batch_seconds_p50/p99``;
- ``validate``: the engine's checksum validation of the copy, then again with one row changed
  (time to name the differing key; PEERS: reladiff ~4.2 s for 1,000,000 rows).

``monolithic``, ``engine_dev_p*``, ``keyset_1000`` and ``engine_batch_1000`` run in BENCH_ROUNDS
alternating rounds (default 3) and keep their fastest round (``rounds_seconds`` lists all): other
jobs on a shared machine only add time, and alternation spreads a burst over the approaches
instead of one. Batch percentiles pool every round's batches. The seed's loop and pt-archiver
run once; the engine's ratios to them use its slowest round.
Ratios are within one run on one machine: quote them, not the absolute numbers.
Writes bench/results/latest.json and latest.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

import localdb  # noqa: E402
from zdt_backfill.config import RunConfig  # noqa: E402
from zdt_backfill.copying.chunker import Partition  # noqa: E402
from zdt_backfill.db import Database  # noqa: E402
from zdt_backfill.verify.checksum import validate  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import charts  # noqa: E402
import common  # noqa: E402
import oltp  # noqa: E402
import orchestration  # noqa: E402
import peers  # noqa: E402
import stats  # noqa: E402
import trigger_cost  # noqa: E402
from common import OLTP_RATE, OLTP_SECONDS, SKIP, monolithic, reset_target, seed_rowwise, timed  # noqa: E402

ROWS = common.ROWS
LOOP_ROWS = common.LOOP_ROWS
ROUNDS = common.ROUNDS
OUT = Path(os.environ.get("BENCH_OUT") or ROOT / "bench" / "results")  # a small trial run: BENCH_OUT=/tmp/...


def keyset_1000(db: Database) -> None:
    with db.session() as c:
        for lo in range(0, ROWS, 1000):
            db.execute(c, f"INSERT INTO users_new (id, email_normalized, data_hash) SELECT {common.select_list(db)}"
                          " FROM users_legacy WHERE id > %s AND id <= %s", (lo, lo + 1000))
            c.commit()


def engine_dev(db: Database, batch_times: list[float], **params) -> None:
    """The engine as the dev profile runs it (batches of up to 50,000 rows aiming at 0.5 s,
    unthrottled) with ``params`` over it (``partitions``; ``batch_size`` 1,000 and one partition
    is like for like with keyset_1000), the partitions copied at once, one thread each, as mapped
    tasks run; pre-flight (the quantile plan) is inside the timing. Appends each batch's seconds."""
    cfg = common.engine_config(db, "dev", f"bench-{time.time()}", max_replica_lag_seconds=0, **params)
    batch_times.extend(common.engine_copy(db, cfg).batch_seconds)


def batch_stats(times: list[float]) -> dict:
    return {"batches": len(times), "batch_p50_ms": round(pct(times, 50) * 1000, 2),
            "batch_p99_ms": round(pct(times, 99) * 1000, 2), "batch_max_ms": round(max(times, default=0) * 1000, 2)}


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile, interpolated between observed values (``inclusive``: never above
    the slowest batch; the default ``exclusive`` method extrapolates past it on 20-odd batches)."""
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) >= 2
            else (values[0] if values else 0.0))


def bench_engine(name: str, pair: localdb.Pair, database: str) -> dict:
    db = Database.from_url(common.url(pair.primary))
    print(f"[{name}] seeding {ROWS:,} rows", flush=True)
    common.seed(db, ROWS)
    localdb.wait_replica_caught_up(pair, timeout=600)
    res: dict = {"rows": ROWS}

    def run(label: str, fn, rows: int = ROWS) -> None:
        """Time one round of ``fn``; ``res[label]`` keeps the fastest round (noise only adds
        time), its slowest (``slowest_rows_per_second``) and every round's seconds."""
        reset_target(db)
        localdb.wait_replica_caught_up(pair, timeout=600)
        s = timed(fn)
        rounds = res.get(label, {}).get("rounds_seconds", []) + [round(s, 3)]
        res[label] = {**res.get(label, {}), "seconds": min(rounds), "rows_per_second": round(rows / min(rounds)),
                      "slowest_rows_per_second": round(rows / max(rounds)), "rounds_seconds": rounds}
        print(f"[{name}] {label:20s} {s:8.2f}s {rows / s:12,.0f} rows/s", flush=True)

    # The copies the throughput table compares run in alternating rounds (monolithic, p1, p2,
    # keyset, batch 1,000, monolithic, ...): a burst of load from another job lands on one round,
    # not on one approach. Batch percentiles pool every round's batches.
    # the seed's loop (slow) and pt-archiver (peers, below) run once: the engine's ratios to them
    # use its slowest round. The loop copies LOOP_ROWS rows only, so it goes first: validation
    # below checks the last round's engine copy.
    run("seed_row_loop", lambda: seed_rowwise(db, LOOP_ROWS), LOOP_ROWS)
    batches: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        run("monolithic", lambda: monolithic(db))
        for n in common.PARTITIONS:
            run(f"engine_dev_p{n}", lambda n=n: engine_dev(db, batches.setdefault(f"engine_dev_p{n}", []), partitions=n))
            res[f"engine_dev_p{n}"]["partitions"] = n
        run("keyset_1000", lambda: keyset_1000(db))
        run("engine_batch_1000", lambda: engine_dev(db, batches.setdefault("engine_batch_1000", []), batch_size=1000,
                                                    partitions=1))
    for label, times in batches.items():
        res[label].update({**batch_stats(times), "batches_per_round": len(times) // ROUNDS})
    cfg = RunConfig.from_params({"conn_id": "bench", "source_table": "users_legacy", "target_table": "users_new",
                                 "key": "id", "columns": common.columns(db), "dual_write": "assumed", "profile": "dev",
                                 # the re-check's wait for dual-writes in flight (2 s by default) is a
                                 # deliberate pause, not search time: left out of the timing
                                 "validation_recheck_seconds": 0}, run_id="bench-validate")
    parts = [Partition(0, 1, ROWS // 2), Partition(1, ROWS // 2 + 1, ROWS)]
    equal: list = []
    t = timed(lambda: equal.append(validate(cfg, db, parts)))
    if equal[0].missing or equal[0].different or equal[0].extra:  # the copy under test must be exact
        raise RuntimeError(f"[{name}] the engine's copy differs from the source before the change: {equal[0].sample_keys}")
    with db.session() as c:
        db.execute(c, "UPDATE users_new SET data_hash = 'changed' WHERE id = %s", (ROWS // 3,))
        c.commit()
    found: list = []
    t1 = timed(lambda: found.append(validate(cfg, db, parts)))
    res["validate"] = {"seconds_equal": round(t, 3), "seconds_one_changed_row": round(t1, 3),
                       "found_keys": found[0].sample_keys}
    print(f"[{name}] validate equal {t:.2f}s; one changed row found in {t1:.2f}s: {found[0].sample_keys}", flush=True)
    res.update({"validation_rows_per_s": round(ROWS / t), "validation_seconds_to_find_one_changed_row": round(t1, 3)})
    if "peers" not in SKIP:
        res.update(peers.reladiff(db, pair.primary, ROWS // 3))
        if res.get("reladiff_seconds_to_find_one_changed_row"):
            res["validation_speedup_vs_reladiff_one_changed_row"] = round(
                res["reladiff_seconds_to_find_one_changed_row"] / t1, 2)
        res.update(peers.pt_archiver(db, pair.primary))
        print(f"[{name}] reladiff equal {res.get('reladiff_seconds_equal')}s, one changed row "
              f"{res.get('reladiff_seconds_to_find_one_changed_row')}s; pt-archiver {res.get('pt_archiver_rows_per_s')} rows/s"
              + ("" if res.get("pt_archiver_rows_per_s") else f" ({res.get('pt_archiver_note')})"),
              flush=True)
    if "throttle" not in SKIP:
        res.update(peers.throttle(db))
        print(f"[{name}] throttle target {res['throttle_target_rows_per_s']} rows/s, achieved "
              f"{res['throttle_achieved_rows_per_s']} ({res['throttle_error_pct']:+}%)", flush=True)
    if "oltp" not in SKIP:
        res.update(bench_oltp(name, pair, db))
    if "triggers" not in SKIP:
        res.update(trigger_cost.trigger_cost(pair, db))
        print(f"[{name}] application at {OLTP_RATE:g} tx/s, p50 / p99 ms: no triggers "
              f"{res['oltp_write_p50_ms_no_triggers']} / {res['oltp_write_p99_ms_no_triggers']}, dual-write triggers "
              f"{res['oltp_write_p50_ms_triggers']} / {res['oltp_write_p99_ms_triggers']} (not done "
              f"{res['oltp_not_done_no_triggers']} / {res['oltp_not_done_triggers']})", flush=True)
    if "dag" not in SKIP:
        res.update(orchestration.dag_wall(pair, db))
        print(f"[{name}] DAG wall {res['dag_wall_seconds']}s vs engine alone {res['engine_alone_seconds']}s: "
              f"overhead {res['orchestration_overhead']}", flush=True)
    if "rss" not in SKIP:  # last: it seeds its own sizes
        rss = {f"{ROWS}": orchestration.peak_rss(pair, db, ROWS)}
        if name in common.RSS_LARGE_ENGINES and common.RSS_ROWS > ROWS:
            rss[f"{common.RSS_ROWS}"] = orchestration.peak_rss(pair, db, common.RSS_ROWS)
        res["worker_peak_rss_mb"] = rss
        print(f"[{name}] worker peak RSS MiB by rows: {rss}", flush=True)
    dev = [f"engine_dev_p{n}" for n in common.PARTITIONS]
    for k in ("keyset_1000", "seed_row_loop", "engine_batch_1000", *dev):
        res[k]["vs_monolithic"] = round(res[k]["rows_per_second"] / res["monolithic"]["rows_per_second"], 3)
    res["engine_batch_1000"]["vs_seed_row_loop"] = round(
        res["engine_batch_1000"]["slowest_rows_per_second"] / res["seed_row_loop"]["rows_per_second"], 1)
    res["engine_batch_1000"]["vs_keyset_1000"] = round(
        res["engine_batch_1000"]["rows_per_second"] / res["keyset_1000"]["rows_per_second"], 3)
    # issue 9: engine_rows_per_s is the dev profile, unthrottled, at the best partition count here
    best = max(dev, key=lambda k: res[k]["rows_per_second"])
    res.update({"monolithic_rows_per_s": res["monolithic"]["rows_per_second"],
                "engine_rows_per_s": res[best]["rows_per_second"], "engine_best": best,
                "engine_best_partitions": res[best]["partitions"],
                "engine_vs_monolithic": res[best]["vs_monolithic"],
                "seed_rowwise_rows_per_s": res["seed_row_loop"]["rows_per_second"],
                "engine_vs_seed_rowwise": round(res[best]["slowest_rows_per_second"]
                                                / res["seed_row_loop"]["rows_per_second"], 1),
                "batch_seconds_p50": round(res[best]["batch_p50_ms"] / 1000, 4),
                "batch_seconds_p99": round(res[best]["batch_p99_ms"] / 1000, 4)})
    if res.get("pt_archiver_rows_per_s"):
        res["engine_vs_pt_archiver"] = round(res[best]["slowest_rows_per_second"] / res["pt_archiver_rows_per_s"], 2)
    return res


def bench_oltp(name: str, pair: localdb.Pair, db: Database) -> dict:
    """Issue 6: the fixed-rate application load (bench/oltp.py) alone, during a monolithic insert,
    and during a prod-profile engine run (stopped at the window's end), with replica lag sampled."""
    from zdt_backfill.signals.lag import ReplicaLagProbe

    out: dict = {"oltp_rate_per_s": OLTP_RATE, "oltp_seconds": OLTP_SECONDS}
    reset_target(db)
    localdb.wait_replica_caught_up(pair, timeout=600)
    out["oltp_baseline"] = oltp.start(pair.primary, ROWS, OLTP_RATE, OLTP_SECONDS).result()
    load = oltp.start(pair.primary, ROWS, OLTP_RATE, OLTP_SECONDS)
    time.sleep(1)
    monolithic(db)
    out["oltp_during_monolithic"] = load.result()
    reset_target(db)
    localdb.wait_replica_caught_up(pair, timeout=600)
    replica = Database.from_url(common.url(pair.replica), timeout_s=5)
    sampler = ReplicaLagProbe(replica)
    lags: list[float] = []
    load = oltp.start(pair.primary, ROWS, OLTP_RATE, OLTP_SECONDS)
    deadline = time.monotonic() + OLTP_SECONDS
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            v = sampler.measure()
            if v is not None:
                lags.append(v)
            done.wait(0.5)

    th = threading.Thread(target=sample)
    th.start()
    # the copy only: the bench never reaches the read ramp, so it has no error signal to watch
    cfg = common.engine_config(db, "prod", f"bench-prod-{time.time()}", allow_unwatched_ramp=True)
    run = common.engine_copy(db, cfg, probes=[ReplicaLagProbe(replica)], deadline=deadline)
    out["oltp_during_backfill"] = load.result()
    done.set()
    th.join()
    sampler.close()
    out.update({
        "oltp_p99_ms_baseline": out["oltp_baseline"]["p99_ms"],
        "oltp_p99_ms_during_backfill": out["oltp_during_backfill"]["p99_ms"],
        "oltp_p99_ms_during_monolithic": out["oltp_during_monolithic"]["p99_ms"],
        "oltp_p99_backfill_vs_baseline": stats.ratio(out["oltp_during_backfill"]["p99_ms"], out["oltp_baseline"]["p99_ms"]),
        "replica_lag_max_seconds": round(max(lags), 3) if lags else None,
        "prod_backfill_rows_per_s": stats.rows_per_s(run.rows_written, run.seconds),
    })
    print(f"[{name}] oltp p99 ms: baseline {out['oltp_p99_ms_baseline']}, prod backfill "
          f"{out['oltp_p99_ms_during_backfill']}, monolithic {out['oltp_p99_ms_during_monolithic']}; "
          f"replica lag max {out['replica_lag_max_seconds']} s", flush=True)
    return out


def markdown(results: dict) -> str:
    present = [(n, label) for n, _, label in common.ENGINES if n in results["engines"]]
    engines = [results["engines"][n] for n, _ in present]
    head = "| | " + " | ".join(label for _, label in present) + " |"
    rule = "|---|" + "---|" * len(present)

    def rows(items, get=lambda e, k: e.get(k)) -> list[str]:
        return [f"| {label} | " + " | ".join(str(get(e, k)) for e in engines) + " |" for k, label in items]

    lines = [f"# Benchmark ({results['rows']:,} rows, {results['machine']}, {results.get('when', '')})", "",
             f"Every approach but seed_row_loop: the fastest of {results.get('rounds', 1)} alternating rounds, batch "
             "percentiles over all of them; ratios to the seed's loop and pt-archiver (run once) use the engine's "
             "slowest round. Each engine's ratios come from its own rounds in this one run.", "",
             "| approach | " + " | ".join(f"{label} rows/s | vs monolithic" for _, label in present) + " |",
             "|---|" + "---|---|" * len(present)]
    for k in charts.approaches(results):
        cells = []
        for e in engines:
            r = e.get(k, {})
            cells += [f"{r.get('rows_per_second', 0):,}", str(r.get("vs_monolithic", "1.0" if k == "monolithic" else ""))]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", head, rule]
    lines += rows((("engine_best", "engine_rows_per_s is"), ("engine_rows_per_s", "engine_rows_per_s"),
                   ("engine_vs_monolithic", "engine_vs_monolithic"), ("engine_vs_seed_rowwise", "engine vs the seed's loop (x)"),
                   ("engine_vs_pt_archiver", "engine vs pt-archiver (x)"),
                   ("batch_seconds_p50", "batch p50 (s), engine_best"), ("batch_seconds_p99", "batch p99 (s), engine_best")))
    lines += rows((("batch_p50_ms", "batch p50 (ms), batch 1000"), ("batch_p99_ms", "batch p99 (ms), batch 1000")),
                  lambda e, k: e.get("engine_batch_1000", {}).get(k))
    lines += rows((("seconds_equal", "validate, tables equal (s)"), ("seconds_one_changed_row", "validate, one row changed (s)")),
                  lambda e, k: e.get("validate", {}).get(k))
    rate = next((e.get("oltp_rate_per_s") for e in engines if e.get("oltp_rate_per_s")), None)
    lines += ["", f"Application load (issue 6), fixed rate {rate} tx/s"
              " (point read + update by random id), p99 latency from the scheduled start:", "", head, rule]
    lines += rows((("oltp_p99_ms_baseline", "p99 ms, no backfill"), ("oltp_p99_ms_during_backfill", "p99 ms, prod-profile backfill"),
                   ("oltp_p99_ms_during_monolithic", "p99 ms, monolithic INSERT ... SELECT"),
                   ("replica_lag_max_seconds", "replica lag max (s), prod backfill"),
                   ("oltp_write_p50_ms_no_triggers", "p50 ms, no triggers (target filled)"),
                   ("oltp_write_p50_ms_triggers", "p50 ms, dual_write: trigger installed"),
                   ("oltp_write_p99_ms_no_triggers", "p99 ms, no triggers (target filled)"),
                   ("oltp_write_p99_ms_triggers", "p99 ms, dual_write: trigger installed"),
                   ("oltp_not_done_triggers", "transactions not done, triggers installed")))
    lines += ["", "Peers, validation and the throttle, same run:", "", head, rule]
    lines += rows((("pt_archiver_rows_per_s", "pt-archiver rows/s (no transform)"),
                   ("validation_rows_per_s", "engine validation rows/s (equal tables)"),
                   ("reladiff_rows_per_s", "reladiff rows/s (equal tables)"),
                   ("validation_seconds_to_find_one_changed_row", "engine: seconds to name one changed row"),
                   ("reladiff_seconds_to_find_one_changed_row", "reladiff: seconds to name one changed row"),
                   ("validation_speedup_vs_reladiff_one_changed_row", "engine vs reladiff, naming one changed row (x)"),
                   ("throttle_target_rows_per_s", "throttle ceiling rows/s"),
                   ("throttle_achieved_rows_per_s", "throttle achieved rows/s"),
                   ("throttle_error_pct", "throttle error %"),
                   ("dag_wall_seconds", "whole DAG, airflow dags test (s)"),
                   ("engine_alone_seconds", "engine alone: pre-flight + copy + validation (s)"),
                   ("orchestration_overhead", "orchestration overhead (DAG / engine - 1)"),
                   ("worker_peak_rss_mb", "worker peak RSS MiB, by rows")))
    return "\n".join(lines) + "\n"


def main() -> int:
    base = ROOT / ".local" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    results = {"rows": ROWS, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "engines": {},
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": ROUNDS,
               # the machine is shared: its 1-minute load average before and after says how quiet it was
               "load_average_start": round(os.getloadavg()[0], 2)}
    for name, start, _ in common.ENGINES:
        if name not in common.BENCH_ENGINES:
            continue
        try:
            pair = getattr(localdb, start)(base)
        except localdb.MissingServerBinaries as exc:
            print(f"[{name}] skipped: {exc}")
            continue
        results["engines"][name] = bench_engine(name, pair, pair.primary.database)
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (OUT / "latest.md").write_text(markdown(results))
    charts.write(results, OUT)
    print(markdown(results))
    localdb.stop(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
