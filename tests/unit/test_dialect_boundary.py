"""Every engine difference lives in the dialects (issue 17): outside ``zdt_backfill.dialects`` no
module of the engine or the Airflow layer compares anything with an engine's name."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE_NAMES = {"postgres", "postgresql", "mysql", "mariadb"}
PACKAGES = [ROOT / "include" / "zdt_backfill", ROOT / "plugins" / "zdt_airflow"]
DIALECTS = ROOT / "include" / "zdt_backfill" / "dialects"


def _names_in(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.lower() in ENGINE_NAMES:
            out.add(n.value)
    return out


def engine_branches(path: Path) -> list[str]:
    """``file:line`` of every comparison (``==``, ``!=``, ``in``, ``startswith``) with an engine name."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Compare):
            hit = bool(_names_in(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and any(_names_in(a) for a in node.args)):
            hit = True
        if hit:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_branch_on_an_engine_name_outside_the_dialects():
    files = [p for pkg in PACKAGES for p in pkg.rglob("*.py") if DIALECTS not in p.parents]
    assert len(files) > 30
    branches = [b for p in files for b in engine_branches(p)]
    assert branches == [], "branch on the engine's name outside zdt_backfill.dialects:\n" + "\n".join(branches)


def test_the_check_finds_a_branch(tmp_path):
    probe = tmp_path / "x.py"
    probe.write_text('if db.dialect.name == "postgres":\n    pass\nok = engine in ("mysql", "mariadb")\n'
                     'u = url.startswith("postgres")\n')
    assert len(engine_branches(probe)) == 3
