"""The report of a run whose worker was killed mid-copy states the crash and the resume, from the
state tables alone (a forked worker process ends with ``os._exit``: no ``finally``, no release),
and is stored in ``zdt_backfill_reports``."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill import report
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.lifecycle.preflight import run_preflight

pytestmark = pytest.mark.integration

ROWS = 5_000


def test_a_killed_worker_is_reported_as_a_crash_and_its_retry_as_a_resume(env):
    seed_users(env, ROWS)
    config = RunConfig.from_params(users_conf(env, batch_size=500, partitions=2), run_id="killed")
    plan = run_preflight(config, env.db, [])
    p0 = Partition.from_dict(plan.partitions[0])

    def worker():  # the task's process, killed by the OS after its third batch committed
        def die(progress, chunk, rows, seconds):
            if progress.batches == 3:
                os._exit(9)

        PartitionCopier(config, env.db, p0, plan.key_index, on_batch=die).run()

    child = multiprocessing.get_context("fork").Process(target=worker)
    child.start()
    child.join(120)
    assert child.exitcode == 9
    # Airflow retries the partition (same run): it resumes from the checkpoint; p1 runs once.
    again = PartitionCopier(config, env.db, p0, plan.key_index).run()
    assert again.resumed_from is not None and again.attempt_batches < again.progress["batches"]
    PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[1]), plan.key_index).run()
    assert projection_diff(env) == 0

    r = report.from_state(config, env.db, {"state": "copying", "reason": "test", "success": False})
    assert (r["tries"], r["crashes"], r["resumes"], r["failed_attempts"]) == (3, 1, 1, 0)
    by_no = {p["partition_no"]: p for p in r["partition_detail"]}
    assert (by_no[0]["tries"], by_no[0]["crashes"], by_no[0]["resumes"]) == (2, 1, 1)
    assert (by_no[1]["tries"], by_no[1]["crashes"]) == (1, 0)
    assert r["rows_written"] == ROWS and 0 < r["copy_seconds"] <= r["wall_seconds"]
    assert r["rows_per_second"] == pytest.approx(ROWS / r["copy_seconds"], rel=0.01)
    assert r["validation"] is None
    md = report.to_markdown(r)
    assert "crashed (worker died, no end recorded): 1" in md and "resumed from a checkpoint: 1" in md
    assert "validation: not run" in md

    where = report.store(env.db, r)
    assert where.startswith("zdt_backfill_reports (run_id = 'killed'")
    assert report.load(env.db, "killed")["crashes"] == 1
    assert report.history(env.db, target_table="users_new")[0]["run_id"] == "killed"


def test_the_stored_report_has_an_html_page_with_charts_from_the_partitions_samples(env, caplog, tmp_path):
    import base64
    import logging
    import re

    from zdt_backfill.copying import copier

    seed_users(env, ROWS)
    config = RunConfig.from_params(users_conf(env, batch_size=250, partitions=2, max_rows_per_second=2_000),
                                   run_id="charts")
    plan = run_preflight(config, env.db, [])
    copier.SAMPLE_SECONDS, saved = 0.5, copier.SAMPLE_SECONDS
    try:
        with caplog.at_level(logging.INFO, logger="zdt_backfill"):
            for p in plan.partitions:
                PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()
    finally:
        copier.SAMPLE_SECONDS = saved
    # the task log: a line per batch with the effective rate and the throttle, the run's progress, words at the end
    text = caplog.text
    assert re.search(r"p0 \[1\.\.\d+\] batch 1: keys \(0, 250\] 250 rows in [\d.]+ s; effective [\d,]+ rows/s; "
                     r"[\d.]+% done, ETA .*; lag n/a; throttle", text), text[:2000]
    assert "run: " in text and "of the key span done" in text
    # about half of 5,000 keys (the split is at a quantile of the row estimate, which InnoDB samples)
    assert re.search(r"p1 \[\d+\.\.5000\]: copied 2,[3-6]\d\d rows in 1[01] batches in .* this attempt, .* rows/s; .*"
                     r"throttled .*\(rate ceiling", text)
    r = report.from_state(config, env.db, {"state": "copied", "reason": "test", "success": True})
    assert len(r["samples"]) >= 8 and {s["partition"] for s in r["samples"]} == {0, 1}
    where = report.store(env.db, r)
    (html,) = env.sql("SELECT report_html FROM zdt_backfill_reports WHERE run_id = 'charts'")[0]
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(pngs) == 2 and all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs), where
    out = report.write(r, tmp_path)
    assert (out / "report.html").read_text() == html
