"""Dashboard figures of the TPI-LLM study (plotly).

Each takes one of the study's tables and returns a figure; the shared views
(:func:`~commsim.views.figures.timeline`, :func:`~commsim.views.figures.variant_bars`,
:func:`~commsim.views.figures.column_bars`)
draw what they already can.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from commsim.views.figures import column_bars, timeline, variant_bars

__all__ = ["allreduce_curve", "baseline_bars", "breakdown_bars", "memory_bars", "prefetch_timeline",
           "token_latency_bars"]


def allreduce_curve(table: pd.DataFrame, x: str, x_title: str, title: str) -> go.Figure:
    """All-reduce time (ms) against ``x``, one line per algorithm."""
    fig = go.Figure()
    for algorithm, part in table.groupby("algorithm", sort=False):
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part["time_ms"], mode="lines+markers", name=str(algorithm)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="all-reduce time (ms)", height=420)
    return fig


def token_latency_bars(summary: pd.DataFrame, window: object) -> go.Figure:
    """Token latency per model and setting at one window."""
    part = summary[summary["window"].astype(str) == str(window)].copy()
    part["setting"] = part["devices"].astype(str).where(part["devices"].astype(str).str.contains("laptop"),
                                                        part["devices"].astype(str) + " devices")
    return variant_bars(part, x="model", y="token_latency_s", colour="setting",
                        title=f"Token latency, window {window} (missing bar: does not fit in memory)",
                        y_title="token latency (s)")


def memory_bars(summary: pd.DataFrame, devices: object) -> go.Figure:
    """Peak memory of the most loaded device per model, each window, at one setting."""
    part = summary[summary["devices"].astype(str) == str(devices)].copy()
    part["window"] = part["window"].astype(str)
    fig = variant_bars(part, x="model", y="peak_memory_gb", colour="window",
                       title=f"Peak memory of the most loaded device, {devices} devices (missing bar: out of memory)",
                       y_title="peak memory (GB)")
    return fig


def breakdown_bars(runs: pd.DataFrame, columns: list[str], title: str) -> go.Figure:
    """Stacked seconds per decode token on the master, one bar per model."""
    return column_bars(runs, "model", {c: c.removesuffix("_s") for c in columns}, stacked=True, title=title,
                       y_title="seconds per decode token")


def baseline_bars(table: pd.DataFrame) -> go.Figure:
    """Token latency of every system per model (log scale; missing bar: out of memory)."""
    fig = variant_bars(table, x="model", y="token_latency_s", colour="system",
                       title="Token latency by system (missing bar: out of memory)", y_title="token latency (s)")
    fig.update_layout(yaxis_type="log")
    return fig


def prefetch_timeline(spans: pd.DataFrame, start: float, end: float, devices: list[str], title: str) -> go.Figure:
    """The spans of ``devices`` between ``start`` and ``end`` (s): disk loads (io) beside kernels and all-reduces."""
    part = spans[(spans["end"] > start) & (spans["start"] < end) & spans["device"].isin(devices)].copy()
    part["start"] = part["start"].clip(lower=start) - start
    part["end"] = part["end"].clip(upper=end) - start
    return timeline(part, devices=devices, title=title)
