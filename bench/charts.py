"""PNG charts of `make bench` (matplotlib, installed by bench/setup.sh): rows/s by approach and
batch latency p50/p99, one bar group per database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASELINES = ("monolithic", "keyset_1000", "seed_row_loop", "engine_batch_1000")


def approaches(results: dict[str, Any]) -> list[str]:
    """The copy approaches measured: the baselines, then the dev-profile runs by partition count."""
    dev = sorted({k for e in results.get("engines", {}).values() for k in e if k.startswith("engine_dev_p")},
                 key=lambda k: int(k.rsplit("p", 1)[1]))
    return [*BASELINES, *dev]


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``rows_per_s.png`` and ``batch_latency.png`` into ``out``; nothing without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("charts skipped: matplotlib is not installed (bench/setup.sh installs it)")
        return []
    import common

    engines = results.get("engines", {})
    names = [n for n, _, _ in common.ENGINES if n in engines]
    label = {n: text for n, _, text in common.ENGINES}
    paths = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(names))
    APPROACHES = approaches(results)
    for i, n in enumerate(names):
        vals = [engines[n].get(a, {}).get("rows_per_second", 0) for a in APPROACHES]
        extra = engines[n].get("pt_archiver_rows_per_s")
        xs = [j + i * width for j in range(len(APPROACHES) + 1)]
        ax.bar(xs, vals + [extra or 0], width, label=label[n])
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(APPROACHES) + 1)])
    ax.set_xticklabels([*APPROACHES, "pt_archiver"], rotation=20, ha="right")
    ax.set_ylabel("rows/s")
    ax.set_title(f"Copy throughput, {results.get('rows', 0):,} rows, {results.get('machine', '')} ({results.get('when', '')})")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "rows_per_s.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = [a for a in APPROACHES if a.startswith("engine_")]
    cats = [f"{label[n]} {a.removeprefix('engine_')}" for n in names for a in runs]
    p50 = [engines[n].get(a, {}).get("batch_p50_ms", 0) for n in names for a in runs]
    p99 = [engines[n].get(a, {}).get("batch_p99_ms", 0) for n in names for a in runs]
    xs = range(len(cats))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(cats, rotation=15, ha="right")
    ax.set_ylabel("batch latency (ms)")
    ax.set_title("Engine batch latency")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "batch_latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
