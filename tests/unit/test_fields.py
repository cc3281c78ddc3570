"""One declaration per conf field (include/zdt_backfill/fields.py): RunConfig, its validation,
the trigger form, the rehearsal's defaults and the README's conf reference all agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zdt_airflow.dag_factory import DEMO_DEFAULTS, build_params
from zdt_airflow.rehearsal import STAGING_DEFAULTS
from zdt_backfill.config import PROFILES, RunConfig, Thresholds
from zdt_backfill.errors import ConfigError
from zdt_backfill.fields import FIELDS, PROFILE, reference_table

README = Path(__file__).resolve().parents[2] / "README.md"
BASE = {"conn_id": "c", "source_table": "a", "target_table": "b", "columns": {"x": "y"}, "profile": "dev"}


def test_the_readme_conf_reference_is_the_declaration():
    text = README.read_text()
    start = text.index("| field | default | meaning |")
    table = text[start:text.index("\n\n", start)]
    assert table == reference_table(), "README's conf reference differs: run `python -m zdt_backfill.fields`"
    assert [line.split("`")[1] for line in table.splitlines()[2:]] == list(FIELDS)


def test_every_conf_field_is_declared_and_every_declaration_is_a_field():
    attrs = {f.name for f in dataclasses.fields(RunConfig)} - {"thresholds", "run_id", "max_batch_size"}
    assert attrs | {f.name for f in dataclasses.fields(Thresholds)} == set(FIELDS)


def test_the_form_is_the_declaration():
    params = build_params({})
    assert list(params) == list(FIELDS)
    for name, p in params.items():
        f = FIELDS[name]
        assert (p.schema["title"], p.schema["section"], p.description) == (f.title, f.section, f.description)
        bounds = (p.schema.get("allOf") or [{}])[0]
        if f.kind in ("integer", "number") and not f.zero_is_off:
            assert (bounds.get("minimum"), bounds.get("maximum")) == (f.minimum, f.maximum), name
    assert {k: params[k].value for k in DEMO_DEFAULTS} == DEMO_DEFAULTS
    staging = build_params(STAGING_DEFAULTS)
    assert staging["profile"].value == "staging" and staging["approval"].value == "auto"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_an_empty_conf_takes_every_declared_default(profile):
    cfg = RunConfig.from_params({**BASE, "profile": profile, "allow_unwatched_ramp": True}, run_id="r")
    for name, f in FIELDS.items():
        if name in BASE or name in ("allow_unwatched_ramp", "max_load", "critical_load"):
            continue
        want = f.resolved_default(PROFILES[profile])
        got = getattr(cfg.thresholds, name) if hasattr(cfg.thresholds, name) else getattr(cfg, name)
        if name == "profile":
            got = got.name
        if name == "routing_flag":
            want = "b_read_path"
        if name == "min_batch_size":
            want = min(want, cfg.batch_size)
        assert got == want, (name, got, want)
    assert f"{PROFILE!r}" == "PROFILE"


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.kind in ("integer", "number") and f.maximum])
def test_every_declared_bound_is_enforced_by_run_config(name):
    f = FIELDS[name]
    with pytest.raises(ConfigError, match=name):
        RunConfig.from_params({**BASE, name: f.maximum * 2 + 1})
    with pytest.raises(ConfigError, match=name):
        RunConfig.from_params({**BASE, name: (f.minimum or 0) - 1})
