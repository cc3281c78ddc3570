"""The report as one self-contained HTML page, with PNG charts (matplotlib, Agg backend)
embedded as base64 so the page reads the same from the reports table, a worker's disk or a mail.

Charts, from the partitions' samples (``sample`` events, one per partition every
:data:`~zdt_backfill.copying.copier.SAMPLE_SECONDS` while it copies, with its rows written, replica lag, throttle
kind and cumulative throttled seconds):

- ``rows_per_s.png``: rows/s over time, one line per partition (rows written between two
  samples over the time between them);
- ``replica_lag.png``: replica lag over time, with the gate (``max_replica_lag_seconds``) and the
  halt threshold (``halt_lag_seconds``) drawn as lines.

On both, periods in which a partition spent at least half of the time throttled are shaded.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

#: Share of an interval spent throttled from which it is shaded.
SHADE_FROM = 0.5


def _series(samples: Iterable[Mapping[str, Any]]) -> tuple[float, dict[int, list[Mapping[str, Any]]]]:
    by_part: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    rows = [s for s in samples if s.get("t") is not None]
    for s in rows:
        by_part[int(s.get("partition", 0))].append(s)
    for v in by_part.values():
        v.sort(key=lambda s: float(s["t"]))
    t0 = min((float(s["t"]) for s in rows), default=0.0)
    return t0, dict(sorted(by_part.items()))


def throttled_spans(samples: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """``(start, end)`` in seconds from the first sample, where a partition spent at least
    :data:`SHADE_FROM` of the interval between two of its samples throttled."""
    t0, parts = _series(samples)
    spans = []
    for seq in parts.values():
        for a, b in zip(seq, seq[1:], strict=False):
            dt = float(b["t"]) - float(a["t"])
            held = sum((b.get("throttled") or {}).values()) - sum((a.get("throttled") or {}).values())
            if dt > 0 and held / dt >= SHADE_FROM:
                spans.append((float(a["t"]) - t0, float(b["t"]) - t0))
    return spans


def rates(samples: Iterable[Mapping[str, Any]]) -> dict[int, list[tuple[float, float]]]:
    """Per partition, ``(seconds from the first sample, rows/s since the previous sample)``."""
    t0, parts = _series(samples)
    out: dict[int, list[tuple[float, float]]] = {}
    for p, seq in parts.items():
        out[p] = [(float(b["t"]) - t0, (int(b.get("rows") or 0) - int(a.get("rows") or 0)) / (float(b["t"]) - float(a["t"])))
                  for a, b in zip(seq, seq[1:], strict=False) if float(b["t"]) > float(a["t"])]
    return out


def charts(samples: list[Mapping[str, Any]], gate_seconds: float | None, halt_seconds: float | None) -> dict[str, bytes]:
    """The PNG charts (name -> bytes); empty when there are fewer than two samples."""
    if len(samples) < 2:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = throttled_spans(samples)
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    def shade(ax: Any) -> None:
        for i, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color="tab:orange", alpha=0.15, lw=0, label="throttled" if i == 0 else None)

    def chart(name: str, lines: list[tuple[str, list[tuple[float, float]]]], ylabel: str, title: str,
              hlines: list[tuple[float, dict[str, Any], str]]) -> None:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for label, pts in lines:
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=label)
        for y, style, label in hlines:
            ax.axhline(y, lw=1, label=label, **style)
        shade(ax)
        ax.set_xlabel("seconds since the copy started")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
        out[name] = png(fig)

    chart("rows_per_s.png", [(f"p{p}", pts) for p, pts in rates(samples).items()], "rows/s", "Rows/s per partition", [])
    t0, parts = _series(samples)
    lags = [(f"lag seen by p{p}", [(float(s["t"]) - t0, float(s["lag"])) for s in seq if s.get("lag") is not None])
            for p, seq in parts.items()]
    limits = [(gate_seconds, {"color": "tab:red", "ls": "--"}, f"gate {gate_seconds:g} s")] if gate_seconds else []
    if halt_seconds:
        limits.append((halt_seconds, {"color": "black", "ls": ":"}, f"halt {halt_seconds:g} s"))
    chart("replica_lag.png", lags, "replica lag (s)", "Replica lag (heartbeat)", limits)
    return out


def _markdown_to_html(md: str) -> str:
    """The report's Markdown (headings, bullets, pipe tables) as HTML; other lines as paragraphs."""
    out: list[str] = []
    table: list[list[str]] = []
    in_list = False

    def flush_table() -> None:
        if not table:
            return
        head, *body = table
        out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
        out.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        out.append("</table>")
        table.clear()

    for line in md.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        flush_table()
        if stripped.startswith("- ") or stripped.startswith("* "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{html.escape(stripped[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if stripped.startswith("#"):
            level = min(len(stripped) - len(stripped.lstrip("#")), 4)
            out.append(f"<h{level}>{html.escape(stripped.lstrip('#').strip())}</h{level}>")
        elif stripped:
            out.append(f"<p>{html.escape(stripped)}</p>")
    flush_table()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def to_html(markdown: str, samples: list[Mapping[str, Any]], gate_seconds: float | None = None,
            halt_seconds: float | None = None, title: str = "Backfill report") -> str:
    """One self-contained page: the report's text, then the charts as ``data:image/png`` images.

    :param markdown: :func:`~zdt_backfill.report.to_markdown` of the report.
    :param samples: the partitions' samples (see the module docstring).
    """
    imgs = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in charts(samples, gate_seconds, halt_seconds).items()
    ) or "<p>No charts: fewer than two samples were recorded (a run shorter than the sample interval).</p>"
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style></head>"
        f"<body>{_markdown_to_html(markdown)}\n<h2>Charts</h2>\n{imgs}</body></html>"
    )
