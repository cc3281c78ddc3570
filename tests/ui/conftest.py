"""Fixtures of the browser and Celery tests (`make test-ui`): a PostgreSQL primary + replica
seeded with the demo's tables, and an Airflow stack pointed at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localdb
from ui.stack import seed_demo


@pytest.fixture(scope="module")
def demo_pg(tmp_path_factory) -> localdb.Pair:
    base: Path = tmp_path_factory.mktemp("ui-db")
    try:
        pair = localdb.start_postgres_pair(base)
    except localdb.MissingServerBinaries as exc:
        pytest.fail(str(exc)) if os.environ.get("CI") == "true" else pytest.skip(str(exc))
    seed_demo(pair)
    yield pair
    localdb.stop(base)
