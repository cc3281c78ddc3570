"""The operator's path in a real browser: log in, fill the trigger form, watch the run.

Headless Debian ``chromium`` driven by Playwright (``executable_path``: Playwright's own browser
download cannot work on these machines) against ``airflow standalone`` on a seeded PostgreSQL
primary + replica. Screenshots of the form, the grid and the report go to ``docs/screenshots/``
(the README shows them). The REST API with a JWT is covered too: a good conf starts a run,
a bad one gets HTTP 400 before anything runs.
"""

from __future__ import annotations

import shutil

import pytest

import localdb
from ui.stack import ROOT, AirflowStack, conn_env

DAG = "zero_downtime_backfill"
SHOTS = ROOT / "docs" / "screenshots"
pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def stack(demo_pg, tmp_path_factory):
    with AirflowStack(tmp_path_factory.mktemp("airflow-ui"), localdb.free_port(), conn_env(demo_pg)) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: `make test-ui` installs it (scripts/bootstrap.sh ui-deps)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def test_rest_api_refuses_a_bad_conf_with_400_and_starts_nothing(stack):
    before = stack.api("GET", f"/dags/{DAG}/dagRuns").json()["total_entries"]
    for bad in ({"profile": "nope"}, {"batch_size": 0}, {"partitions": -1}):
        r = stack.api("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text[:300])
    assert stack.api("GET", f"/dags/{DAG}/dagRuns").json()["total_entries"] == before


def _login(page, stack) -> None:
    page.goto(f"{stack.url}/auth/login", wait_until="networkidle")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", stack.password())
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.url}/", timeout=60_000)


def _choose(dialog, field: str, option: str) -> None:
    """Pick an option in one of the form's react-select fields (an enum Param)."""
    box = dialog.locator(f"#element_{field} input[role=combobox]")
    box.click()
    box.fill(option)
    box.press("Enter")


def _fill(dialog, field: str, value: str) -> None:
    dialog.locator(f"input[name=element_{field}]").fill(value)


def test_trigger_form_run_grid_log_and_report_in_a_browser(stack, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _login(page, stack)
    page.goto(f"{stack.url}/dags/{DAG}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Tuning", exact=True).click()
    _choose(dialog, "profile", "dev")
    _fill(dialog, "batch_size", "2000")
    _fill(dialog, "partitions", "2")
    dialog.get_by_text("Dual-write", exact=True).click()
    _choose(dialog, "dual_write", "assumed")
    dialog.get_by_text("Tuning", exact=True).scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "trigger_form.png"))
    before = {r["dag_run_id"] for r in stack.api("GET", f"/dags/{DAG}/dagRuns").json()["dag_runs"]}
    dialog.get_by_role("button", name="Trigger").last.click()

    run_id = None
    for _ in range(60):
        runs = stack.api("GET", f"/dags/{DAG}/dagRuns").json()["dag_runs"]
        new = [r for r in runs if r["dag_run_id"] not in before]
        if new:
            run_id = new[0]["dag_run_id"]
            conf = new[0]["conf"]
            break
        page.wait_for_timeout(1000)
    assert run_id, "the form's Trigger started no run"
    assert conf["profile"] == "dev" and conf["batch_size"] == 2000 and conf["partitions"] == 2, conf
    run = stack.wait_run(DAG, run_id, timeout=900)
    states = {(t["task_id"], t["map_index"]): t["state"] for t in stack.task_instances(DAG, run_id)}
    assert run["state"] == "success", states

    tis = stack.task_instances(DAG, run_id)
    labels = sorted(t["rendered_map_index"] for t in tis if t["task_id"] == "backfill.copy_partition")
    assert len(labels) == 2 and all(lbl.startswith("p") and "[" in lbl for lbl in labels), labels

    # the grid shows the run and the partition labels
    page.goto(f"{stack.url}/dags/{DAG}/runs/{run_id}/tasks/backfill.copy_partition/mapped", wait_until="networkidle")
    page.wait_for_timeout(2000)
    body = page.inner_text("body")
    for lbl in labels:
        assert lbl in body, (lbl, body[:2000])
    page.screenshot(path=str(SHOTS / "grid_partitions.png"))

    # a partition's log holds batch lines
    page.goto(f"{stack.url}/dags/{DAG}/runs/{run_id}/tasks/backfill.copy_partition/mapped/0", wait_until="networkidle")
    page.get_by_text("rows/s").first.wait_for(timeout=60_000)
    assert "batch" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "partition_log.png"))

    # the report: the run's note (set by the report task through the REST API) names the ending
    # and where the report is stored; the report task's log prints it
    note = stack.api("GET", f"/dags/{DAG}/dagRuns/{run_id}").json()["note"] or ""
    assert "contracted" in note and "zdt_backfill_reports" in note, note
    page.goto(f"{stack.url}/dags/{DAG}/runs/{run_id}", wait_until="networkidle")
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SHOTS / "run_note.png"))
    page.goto(f"{stack.url}/dags/{DAG}/runs/{run_id}/tasks/report.write_report", wait_until="networkidle")
    page.get_by_text("contracted").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "report.png"))
    page.close()


def test_rest_api_with_a_jwt_starts_a_good_run(stack, demo_pg):
    from ui.stack import seed_demo

    seed_demo(demo_pg, 2_000)  # a fresh expand target
    conf = {"profile": "dev", "dual_write": "assumed", "batch_size": 1000}
    r = stack.api("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert r.status_code == 200, r.text[:500]
    run = stack.wait_run(DAG, r.json()["dag_run_id"], timeout=600)
    assert run["state"] == "success"
