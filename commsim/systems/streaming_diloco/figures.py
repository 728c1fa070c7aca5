"""The study's dashboard figures: CU against bandwidth, the timeline of a few outer steps, bytes and peak demand.

Each function takes the study's tidy tables and returns a plotly figure.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from commsim.views import timeline, variant_bars

__all__ = ["cu_curves", "methods_timeline", "worker_spans", "bytes_bars", "peak_bars"]

_COLOURS = {"data_parallel": "#d62728", "diloco": "#9467bd", "streaming": "#1f77b4", "streaming_overlap": "#2ca02c",
            "streaming_overlap_fp4": "#ff7f0e"}


def cu_curves(curves: pd.DataFrame, model: str, link_gbit: float | None = None) -> go.Figure:
    """Compute utilisation against WAN bandwidth (log axis) for each method of ``model``."""
    fig = go.Figure()
    part = curves[curves["model"] == model]
    for method, rows in part.groupby("method", sort=False):
        rows = rows.sort_values("gbit_per_s")
        fig.add_trace(go.Scatter(x=rows["gbit_per_s"], y=rows["cu"], mode="lines+markers", name=str(method),
                                 line={"color": _COLOURS.get(str(method)),
                                       "dash": "dash" if method == "diloco" else "solid"}, marker={"size": 4},
                                 hovertemplate="%{x:.3g} Gbit/s: CU %{y:.4f}<extra>" + str(method) + "</extra>"))
    lo, hi = float(part["gbit_per_s"].min()), float(part["gbit_per_s"].max())
    if link_gbit is not None and math.isfinite(link_gbit) and lo <= link_gbit <= hi:
        fig.add_shape(type="line", x0=link_gbit, x1=link_gbit, y0=0, y1=1.02, line={"dash": "dot", "color": "#555"})
        fig.add_annotation(x=math.log10(link_gbit), y=1.02, text="your link", showarrow=False, yanchor="bottom")
    fig.update_layout(title=f"{model}: compute utilisation against WAN bandwidth", xaxis_type="log",
                      xaxis_range=[math.log10(lo), math.log10(hi)],
                      xaxis_title="WAN bandwidth per direction (Gbit/s)", yaxis_title="compute utilisation",
                      yaxis_range=[0, 1.02], height=440)
    return fig


def methods_timeline(spans: dict[str, pd.DataFrame], title: str) -> go.Figure:
    """One row pair (compute, WAN) per method: fragment syncs on the WAN against compute and stalls.

    The view starts on the longest run other than data-parallel (which can take
    orders of magnitude longer for the same steps); zooming out shows everything.
    """
    frames = []
    for method, frame in spans.items():
        if len(frame):
            frames.append(worker_spans(frame).assign(device=method))
    if not frames:
        return timeline(pd.DataFrame(), title=title)
    merged = pd.concat(frames, ignore_index=True)
    ends = merged.groupby("device")["end"].max()
    others = ends.drop("data_parallel", errors="ignore")
    fig = timeline(merged, devices=list(spans), max_devices=len(spans), title=title)
    if len(others) and "data_parallel" in ends and ends["data_parallel"] > 1.5 * others.max():
        fig.update_layout(xaxis_range=[0.0, others.max() * 1.05e3],
                          title=f"{title} (data_parallel needs {ends['data_parallel']:.4g} s for the same steps: "
                                "zoom out)")
    fig.update_layout(xaxis_title="time (ms); compute = inner steps, delay = waiting for a sync, comm = a sync on "
                                  "the WAN")
    return fig


def worker_spans(spans: pd.DataFrame) -> pd.DataFrame:
    """One replica's replayed spans as the timeline shows them: its compute ops (fixed-duration ops of the
    trace) as ``compute``, the gaps between them as ``delay`` (waiting for a sync), its syncs as ``comm``."""
    first = spans[spans["device"] == spans["device"].iloc[0]]
    compute = first[first["stream"] == "compute"].sort_values("start").assign(kind="compute")
    gaps = [{"device": row.device, "stream": "compute", "kind": "delay", "name": "waiting for a sync",
             "start": prev, "end": row.start}
            for prev, row in zip(compute["end"].iloc[:-1], compute.iloc[1:].itertuples(), strict=True)
            if row.start > prev]
    comm = first[first["stream"] != "compute"].assign(stream="wan")
    return pd.concat([compute, pd.DataFrame(gaps, columns=list(compute.columns[:6])), comm], ignore_index=True)


def bytes_bars(table: pd.DataFrame) -> go.Figure:
    """WAN bytes each replica sends over the token budget, per method and model (log axis)."""
    frame = table.assign(gigabytes=table["bytes_for_budget"] / 1e9)
    fig = variant_bars(frame, x="method", y="gigabytes", colour="model",
                       title="WAN bytes sent per replica over the token budget", y_title="GB (log)")
    fig.update_layout(yaxis_type="log")
    return fig


def peak_bars(table: pd.DataFrame) -> go.Figure:
    """Peak bandwidth demand (the most bytes released in one inner step over the step time), log axis."""
    fig = variant_bars(table, x="method", y="peak_demand_gbit_per_s", colour="model",
                       title="Peak bandwidth demand: the largest release of one inner step over the step time",
                       y_title="Gbit/s (log)")
    fig.update_layout(yaxis_type="log")
    return fig
