"""One self-contained HTML dashboard per run or sweep (opens offline: plotly.js is inlined).

A run's dashboard shows: the headline metrics (in human units) and stated
assumptions; per device, a breakdown of its time (compute, exposed TP/PP/DP
communication, bubble, idle); the timeline per device and stream with each
device's exposed-communication lane and the critical path; link utilisation
over time (busiest first); the topology coloured by load; and the figures of
the workload or study (variant comparisons, curves). A sweep's dashboard shows every metric against the swept
parameters. Script errors in the page are shown in a red box at the top (and
left in ``#commsim-errors`` for automated checks).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from commsim.units import format_bandwidth, format_bytes, format_flop_rate, format_time
from commsim.views.figures import breakdown_bars, sweep_curves, timeline, topology_load, utilisation_heatmap

__all__ = ["write_dashboard", "write_sweep_dashboard", "render_page", "SIZE_LIMIT"]

SIZE_LIMIT = 20 * 2**20
"""Dashboards are kept under this many bytes (spans are thinned when needed)."""

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{margin-bottom:4px} .muted{color:#666} table.metrics{border-collapse:collapse;margin:12px 0}
table.metrics td,table.metrics th{border-bottom:1px solid #ddd;padding:4px 12px;text-align:left}
#commsim-errors{display:none;background:#fee;border:1px solid #c00;color:#900;padding:8px;margin:8px 0}
.figure{margin:18px 0}
"""
_ERRORS = """<div id="commsim-errors"></div><script>
window.addEventListener('error', function (e) {
  var box = document.getElementById('commsim-errors');
  box.style.display = 'block';
  box.textContent += 'Script error: ' + e.message + '\\n';
});
</script>"""
# After the figures drew: per figure, its title, the points (bars, markers) drawn in the page, and the data
# points per trace name — what an automated check (the browser test) reads to see a figure is not empty.
_RENDERED = """<pre id="commsim-rendered" hidden></pre><script>
window.addEventListener('load', function () { setTimeout(function () {
  var out = {};
  document.querySelectorAll('.plotly-graph-div').forEach(function (gd) {
    var traces = {}, rows = {};
    var cats = gd._fullLayout && gd._fullLayout.yaxis ? (gd._fullLayout.yaxis._categories || []) : [];
    (gd.calcdata || []).forEach(function (cd) {
      var t = cd[0] && cd[0].trace ? cd[0].trace : {}, name = t.name || '';
      var points = cd.filter(function (p) { return p.x !== false && p.x !== undefined || p.z !== undefined; });
      traces[name] = (traces[name] || 0) + points.length;
      if (t.type === 'bar' && t.orientation === 'h' && cats.length) {
        rows[name] = rows[name] || [];
        points.forEach(function (p) {
          var row = cats[p.p];
          if (row !== undefined && rows[name].indexOf(row) < 0) { rows[name].push(row); }
        });
      }
    });
    var drawn = 0;
    gd.querySelectorAll('.point path, .point, .heatmaplayer image, .scatterlayer .js-line').forEach(function (el) {
      var d = el.getAttribute('d');
      if (d === null || (d !== '' && d !== 'M0,0Z')) { drawn += 1; }
    });
    var title = gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '';
    out[gd.id] = {title: title, drawn: drawn, traces: traces, rows: rows};
  });
  document.getElementById('commsim-rendered').textContent = JSON.stringify(out);
}, 0); });
</script>"""


def render_page(title: str, intro: str, blocks: Sequence[str], figures: Sequence[go.Figure]) -> str:
    """An HTML page: title, intro HTML, HTML blocks, then the figures (plotly.js inlined once)."""
    parts = []
    for i, fig in enumerate(figures):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"figure-{i}",
                          config={"displaylogo": False, "responsive": True})
        parts.append(f'<div class="figure">{div}</div>')
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{_ERRORS}<h1>{html.escape(title)}</h1>{intro}"
            + "".join(blocks) + "".join(parts) + _RENDERED + "</body></html>")


def _metrics_table(metrics: dict[str, tuple[float, str]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{html.escape(human(v, u))}</td></tr>"
                   for k, (v, u) in metrics.items())
    return f"<table class='metrics'><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def human(value: Any, unit: str) -> str:
    """A value with its unit as a reader wants it: ``360.2 ms``, ``505.2 GiB``, ``42 GB/s``, ``20.1 %``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    formats = {"s": format_time, "B": format_bytes, "B/s": format_bandwidth, "FLOP/s": format_flop_rate}
    if unit in formats:
        return formats[unit](number)
    if unit == "fraction":
        return f"{number * 100:.4g} %"
    if unit in ("count", "") and number.is_integer():
        return f"{int(number):,}".replace(",", "\u2009")
    return f"{number:.4g} {unit}".strip()


def _figures(run: Any, max_spans: int) -> list[go.Figure]:
    from commsim.views.accounting import device_breakdown, exposed_intervals

    figures: list[go.Figure] = []
    result = run.result
    if result is not None:
        outputs = run.scenario.outputs
        if len(result.spans):
            spans = result.spans
            chosen = (list(outputs.timeline_devices) if outputs.timeline_devices
                      else list(dict.fromkeys(spans["device"]))[:outputs.timeline_ranks])
            shown = spans[spans["device"].isin(chosen)]
            exposed = exposed_intervals(shown)
            figures.append(breakdown_bars(device_breakdown(shown, result.makespan, exposed=exposed)))
            figures.append(timeline(shown, devices=chosen, max_spans=max_spans, critical=run.tables.get("critical_path"),
                                    rank_devices=run.topology.devices if run.topology is not None else None,
                                    makespan=result.makespan, exposed=exposed))
        if len(result.link_usage):
            figures.append(utilisation_heatmap(result.link_usage, result.makespan))
    if run.topology is not None:
        usage = result.link_usage if result is not None else None
        figures.append(topology_load(run.topology, usage, result.makespan if result is not None else 0.0))
    figures.extend(run.figures)
    return figures


def write_dashboard(run: Any, path: str | Path) -> Path:
    """Write the dashboard of a :class:`~commsim.scenario.runner.RunResult`."""
    scenario = run.scenario
    intro = (f"<p class='muted'>{html.escape(scenario.description or '')}</p>"
             f"<p class='muted'>scenario <b>{html.escape(scenario.name)}</b>, seed {scenario.seed}"
             + (f", workload {html.escape(scenario.workload.kind)}" if scenario.workload else "") + "</p>")
    blocks = [_metrics_table(run.metrics)]
    if run.notes:
        blocks.append("<h3>Assumptions</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in run.notes) + "</ul>")
    max_spans = 60_000
    while True:
        page = render_page(f"commsim — {scenario.name}", intro, blocks, _figures(run, max_spans))
        if len(page.encode()) <= SIZE_LIMIT or max_spans < 1000:
            break
        max_spans //= 2
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def write_sweep_dashboard(table: pd.DataFrame, parameters: Sequence[str], metrics: Sequence[str], path: str | Path,
                          *, title: str = "What-if sweep") -> Path:
    """Write a sweep's dashboard: each metric against the first swept parameter (lines per the second)."""
    figures = []
    x = parameters[0]
    colour = parameters[1] if len(parameters) > 1 else None
    numeric = pd.api.types.is_numeric_dtype(table[x])
    log_x = bool(numeric and (table[x] > 0).all() and table[x].max() / max(table[x].min(), 1e-300) >= 100)
    for metric in metrics:
        figures.append(sweep_curves(table, x, [metric], colour=colour, log_x=log_x, title=f"{metric} vs {x}"))
    intro = f"<p class='muted'>{len(table)} runs over {', '.join(parameters)}</p>"
    blocks = [table.to_html(index=False, classes="metrics", float_format=lambda v: f"{v:.6g}", border=0)]
    page = render_page(title, intro, blocks, figures)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
