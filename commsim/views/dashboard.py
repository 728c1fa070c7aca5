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

from commsim.units import format_quantity
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
    for fig in figures:   # SI prefixes on every axis: plotly's default writes 1e9 as "1B" (billion)
        fig.update_xaxes(exponentformat="SI")
        fig.update_yaxes(exponentformat="SI")
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
    return format_quantity(value, unit)


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
        failed = [tuple(f.link) for f in run.scenario.faults if getattr(f, "kind", "") == "link_down"
                  and (result is None or f.at <= result.makespan)]
        figures.append(topology_load(run.topology, usage, result.makespan if result is not None else 0.0,
                                     failed=failed))
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


FIRST_METRICS = ("step_time", "exposed_communication", "overlap_fraction", "makespan", "time_at_largest",
                 "busbw_at_largest")
"""The metrics a what-if question is usually about: drawn first when a sweep reports them."""
INTERNAL_COUNTERS = frozenset({"activities", "rate_recomputations", "flows_recorded"})
"""Counters of the engine's own work: left out of sweep plots unless asked for."""

_DISPLAY = {  # SI unit -> (display unit, scale) candidates, largest first
    "s": [("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)],
    "B": [("TiB", 2.0**40), ("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10), ("B", 1.0)],
    "B/s": [("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3), ("B/s", 1.0)],
    "FLOP/s": [("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("FLOP/s", 1.0)],
}


def display_scale(values: pd.Series, unit: str) -> tuple[str, float]:
    """The unit to show ``values`` (SI ``unit``) in and the divisor: seconds of 0.36 → ``("ms", 1e-3)``."""
    if unit == "fraction":
        return "%", 0.01
    steps = _DISPLAY.get(unit)
    if not steps:
        return unit, 1.0
    largest = float(pd.to_numeric(values, errors="coerce").abs().max() or 0.0)
    for name, scale in steps:
        if largest >= scale:
            return name, scale
    return steps[-1]


def _swept_axis(table: pd.DataFrame, parameter: str) -> tuple[pd.Series, str]:
    """A swept parameter as numbers in SI units when its values are quantities ('100Gbps'), and the axis unit."""
    from commsim.units import parse_quantity

    column = table[parameter]
    if pd.api.types.is_numeric_dtype(column):
        return column, ""
    for kind, unit in (("bandwidth", "B/s"), ("bytes", "B"), ("time", "s")):
        try:
            return column.map(lambda v, k=kind: parse_quantity(v, k)).astype(float), unit
        except Exception:   # not quantities of this kind: try the next, else keep the labels
            continue
    return column, ""


def write_sweep_dashboard(table: pd.DataFrame, parameters: Sequence[str], metrics: Sequence[str], path: str | Path,
                          *, title: str = "What-if sweep", units: dict[str, str] | None = None,
                          show: Sequence[str] = ()) -> Path:
    """Write a sweep's dashboard: each metric against the first swept parameter (lines per the second).

    Order: the metrics in ``show``, then :data:`FIRST_METRICS`, then the rest.
    Left out unless in ``show``: metrics that do not change over the sweep and
    :data:`INTERNAL_COUNTERS`. Values and swept quantities are drawn in human
    units named in the axis titles (ms, GiB, GB/s, %).
    """
    units = units or {}
    x = parameters[0]
    colour = parameters[1] if len(parameters) > 1 else None
    frame = table.copy()
    frame[x], x_unit = _swept_axis(frame, x)
    x_title = x
    if x_unit:
        x_label, x_scale = display_scale(frame[x], x_unit)
        frame[x] = frame[x] / x_scale
        x_title = f"{x} ({x_label})"
    numeric = pd.api.types.is_numeric_dtype(frame[x])
    log_x = bool(numeric and (frame[x] > 0).all() and frame[x].max() / max(frame[x].min(), 1e-300) >= 100)
    rank = {m: i for i, m in enumerate([*show, *FIRST_METRICS])}
    ordered = sorted(metrics, key=lambda m: (rank.get(m, len(rank)), list(metrics).index(m)))
    chosen = [m for m in ordered if m in show or (m not in INTERNAL_COUNTERS and frame[m].nunique(dropna=True) > 1)]
    left_out = [m for m in ordered if m not in chosen]
    figures = []
    for metric in chosen:
        label, scale = display_scale(frame[metric], units.get(metric, ""))
        part = frame.assign(**{metric: frame[metric] / scale})
        y_title = f"{metric.replace('_', ' ')} ({label})" if label else metric.replace("_", " ")
        figures.append(sweep_curves(part, x, [metric], colour=colour, log_x=log_x,
                                    title=f"{metric.replace('_', ' ')} vs {x}", x_title=x_title, y_title=y_title))
    intro = f"<p class='muted'>{len(table)} runs over {', '.join(parameters)}</p>"
    if left_out:
        intro += ("<p class='muted'>not plotted (the same at every point, or counters of the simulator's own work): "
                  + html.escape(", ".join(left_out)) + "</p>")
    shown = table.copy()
    for metric in metrics:
        if units.get(metric):
            shown[metric] = [human(v, units[metric]) for v in table[metric]]
    blocks = [shown.to_html(index=False, classes="metrics", float_format=lambda v: f"{v:.6g}", border=0)]
    page = render_page(title, intro, blocks, figures)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
