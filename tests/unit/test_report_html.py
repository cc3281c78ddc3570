"""The HTML report: charts from synthetic samples, embedded as PNGs that decode."""

import base64
import re

from zdt_backfill.report.html import rates, throttled_spans, to_html


def samples():
    out = []
    for p in (0, 1):
        rows, throttled = 0, 0.0
        for i in range(7):
            t = 1000.0 + 10 * i
            held = 8.0 if p == 1 and i in (3, 4) else 0.0  # p1 throttled 8 s of 10 twice
            throttled += held
            rows += 0 if held else 5_000
            out.append({"partition": p, "t": t, "rows": rows, "lag": 0.2 * i, "throttle": "lag" if held else "",
                        "throttled": {"lag": throttled} if throttled else {}})
    return out


def test_rates_per_partition_and_throttled_spans():
    r = rates(samples())
    assert r[0][0] == (10.0, 500.0) and len(r[0]) == 6
    assert (30.0, 0.0) in r[1]
    assert throttled_spans(samples()) == [(20.0, 30.0), (30.0, 40.0)]


def test_html_embeds_two_png_charts_and_the_reports_text():
    page = to_html("# Backfill report: a -> b\n\n- ended: **contracted**\n\n| p | rows |\n|---|---|\n| p0 | 5 |",
                   samples(), gate_seconds=2.0, halt_seconds=5.0)
    assert page.startswith("<!doctype html>") and "<h1>Backfill report: a -&gt; b</h1>" in page
    assert "<li>ended: **contracted**</li>" in page and "<td>p0</td>" in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 2
    for data in pngs:
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5_000


def test_too_few_samples_say_so_instead_of_drawing():
    page = to_html("# r", samples()[:1])
    assert "data:image/png" not in page and "fewer than two samples" in page
