"""Dashboard figures of the T3 study: the overlap timeline, speed-up and data-movement bars, claims.

The shared views (:mod:`commsim.views`) draw the bars and curves; the timeline
here puts every variant of one sublayer on one time axis, with a row per
variant, GPU and stream (GEMM waves, reduce-scatter steps, all-gather steps)
and a marker at every DMA trigger, so the overlap of GEMM stages with the
reduce-scatter is visible at a glance.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from commsim.systems.t3.knobs import VARIANT_LABELS
from commsim.systems.t3.sublayer import SublayerRun
from commsim.views import column_bars, sweep_curves, variant_bars

__all__ = ["claims_figure", "data_movement_figure", "end_to_end_figure", "speedup_figure", "sweep_figure",
           "variant_timeline"]

_MS = 1e3
_STREAM_COLOURS = {"gemm": "#1f77b4", "reduce-scatter": "#ff7f0e", "all-gather": "#2ca02c"}


def variant_timeline(runs: dict[str, SublayerRun], gpus: int = 2, title: str = "") -> go.Figure:
    """GEMM waves, reduce-scatter and all-gather steps of the first ``gpus`` GPUs under each variant."""
    fig = go.Figure()
    rows: list[str] = []
    bars: dict[str, list[tuple[str, float, float, str]]] = {s: [] for s in _STREAM_COLOURS}
    marks_x: list[float] = []
    marks_y: list[str] = []
    marks_text: list[str] = []
    for variant, run in runs.items():
        if run.result is None:
            continue
        spans = run.result.spans
        names = list(dict.fromkeys(spans["device"]))
        for g in range(min(gpus, run.gemm.tp)):
            device = f"gpu{g}" if f"gpu{g}" in names else (names[g] if g < len(names) else None)
            if device is None:
                continue
            mine = spans[spans["device"] == device]
            for stream in _STREAM_COLOURS:
                part = mine[mine["stream"] == stream]
                if part.empty:
                    continue
                row = f"{VARIANT_LABELS.get(variant, variant)} · {device} · {stream}"
                rows.append(row)
                for name, start, end in zip(part["name"], part["start"], part["end"], strict=True):
                    bars[stream].append((row, float(start), float(end), str(name)))
            events = run.result.events
            if not events.empty:
                trig = events[(events["kind"] == "dma_trigger") & (events["target"] == device)]
                row = f"{VARIANT_LABELS.get(variant, variant)} · {device} · reduce-scatter"
                for time, detail in zip(trig["time"], trig["detail"], strict=True):
                    marks_x.append(float(time) * _MS)
                    marks_y.append(row)
                    marks_text.append(str(detail))
    if not rows:
        fig.update_layout(title=f"{title} — nothing was recorded", height=160)
        return fig
    for stream, items in bars.items():
        if not items:
            continue
        fig.add_trace(go.Bar(
            y=[r for r, *_ in items], x=[(e - s) * _MS for _, s, e, _ in items], base=[s * _MS for _, s, _, _ in items],
            orientation="h", name={"gemm": "GEMM stage (wave)", "reduce-scatter": "reduce-scatter step",
                                   "all-gather": "all-gather step"}[stream],
            marker_color=_STREAM_COLOURS[stream], marker_line_width=0.5, marker_line_color="white",
            customdata=[n for *_, n in items],
            hovertemplate="%{customdata}<br>%{base:.4f} ms + %{x:.4f} ms<extra>%{y}</extra>"))
    if marks_x:
        fig.add_trace(go.Scatter(x=marks_x, y=marks_y, mode="markers", name="DMA trigger (chunk complete)",
                                 marker={"symbol": "triangle-down", "size": 9, "color": "#d62728"},
                                 text=marks_text, hovertemplate="%{text}<br>%{x:.4f} ms<extra></extra>"))
    order = list(dict.fromkeys(rows))
    fig.update_layout(title=title, barmode="overlay", xaxis_title="time (ms)", height=max(320, 24 * len(order) + 140),
                      yaxis={"categoryorder": "array", "categoryarray": order[::-1]}, legend_title="what")
    return fig


def speedup_figure(table: pd.DataFrame) -> go.Figure:
    """Speed-up over Sequential per sublayer and variant (percent)."""
    data = table[table["variant"] != "sequential"].assign(
        speedup_pct=lambda d: (d["speedup"] - 1.0) * 100, variant=lambda d: d["variant"].map(VARIANT_LABELS))
    return variant_bars(data, x="case", y="speedup_pct", colour="variant",
                        title="Sublayer speed-up over Sequential (GEMM → RS → AG)", y_title="speed-up (%)")


def data_movement_figure(table: pd.DataFrame) -> go.Figure:
    """DRAM bytes (read + written) per sublayer relative to Sequential (percent change)."""
    data = table[~table["variant"].isin(["sequential", "ideal"])].assign(
        change_pct=lambda d: d["dram_change"] * 100, variant=lambda d: d["variant"].map(VARIANT_LABELS))
    return variant_bars(data, x="case", y="change_pct", colour="variant",
                        title="Data movement: DRAM bytes read + written vs Sequential", y_title="change (%)")


def claims_figure(checks: pd.DataFrame) -> go.Figure:
    """Published against simulated numbers (one bar pair per claim)."""
    return column_bars(checks, "claim", {"published": "published", "simulated": "simulated"},
                       title="Published claims against this simulation")


def sweep_figure(sweep: pd.DataFrame) -> go.Figure:
    """Geomean speed-up against tokens per GEMM, one line per variant."""
    data = sweep.assign(variant=lambda d: d["variant"].map(VARIANT_LABELS),
                        geomean_speedup_pct=lambda d: (d["geomean_speedup"] - 1) * 100)
    return sweep_curves(data, "tokens", ["geomean_speedup_pct"], colour="variant", log_x=True,
                        title="Geomean sublayer speed-up against tokens per GEMM")


def end_to_end_figure(table: pd.DataFrame) -> go.Figure:
    """Training-iteration speed-up over Sequential per model and variant (percent)."""
    data = table[table["variant"] != "sequential"].assign(
        speedup_pct=lambda d: (d["speedup"] - 1.0) * 100, variant=lambda d: d["variant"].map(VARIANT_LABELS))
    fig = variant_bars(data, x="config", y="speedup_pct", colour="variant",
                       title="End to end: training-iteration speed-up over Sequential", y_title="speed-up (%)")
    fig.add_hline(y=10.0, line_dash="dot", annotation_text="paper: T3-MCA geomean 10%")
    return fig
