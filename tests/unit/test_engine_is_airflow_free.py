"""The engine never imports Airflow (so it runs from a CLI, a test, or another orchestrator)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_modules_do_not_import_airflow():
    engine = ROOT / "include" / "zdt_backfill"
    modules = sorted(".".join(p.relative_to(engine).with_suffix("").parts).removesuffix(".__init__")
                     for p in engine.rglob("*.py") if p.name != "__init__.py" or p.parent != engine)
    assert len(modules) >= 30
    code = (
        "import sys; sys.path.insert(0, 'include')\n"
        + "".join(f"import zdt_backfill.{m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "assert not bad, bad\n"
        "print('ok', len([m for m in sys.modules if m.startswith('zdt_backfill.')]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")
