"""Plotly figures of a run: timeline, link utilisation, topology load, comparisons, sweeps.

Every function takes tidy tables (see :mod:`commsim.results.result`) and returns a
``plotly.graph_objects.Figure``; :mod:`commsim.views.dashboard` assembles them.
They stay usable for 1,000+ devices by aggregating or sampling: the timeline
shows at most ``max_devices`` devices (the user picks which with ``devices``),
the heatmap the busiest ``max_links`` links in ``bins`` time bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["timeline", "utilisation_heatmap", "topology_load", "variant_bars", "sweep_curves", "collective_curve",
           "KIND_COLOURS"]

KIND_COLOURS = {"compute": "#1f77b4", "comm": "#ff7f0e", "collective": "#ff7f0e", "copy": "#2ca02c",
                "disk": "#9467bd", "delay": "#7f7f7f", "alloc": "#bcbd22", "free": "#bcbd22"}
_MS = 1e3


def timeline(spans: pd.DataFrame, *, devices: Sequence[str] | None = None, max_devices: int = 16,
             max_spans: int = 60_000, title: str = "Timeline") -> go.Figure:
    """One row per device and stream; compute and communication in distinct colours.

    Rows of the same device sit next to each other, so overlap of its compute and
    communication streams is visible as bars side by side in time.
    """
    fig = go.Figure()
    if spans.empty:
        return _empty(title, "no spans were recorded")
    chosen = list(devices) if devices else list(dict.fromkeys(spans["device"]))[:max_devices]
    data = spans[spans["device"].isin(chosen)].copy()
    if len(data) > max_spans:  # keep the longest spans: they carry the picture
        data = data.assign(_d=data["end"] - data["start"]).nlargest(max_spans, "_d")
    data["row"] = data["device"].astype(str) + " · " + data["stream"].astype(str)
    order = {d: i for i, d in enumerate(chosen)}
    rows = sorted(data["row"].unique(), key=lambda r: (order.get(r.split(" · ")[0], 0), r))
    for kind, part in data.groupby("kind", sort=True):
        fig.add_trace(go.Bar(
            y=part["row"], x=(part["end"] - part["start"]) * _MS, base=part["start"] * _MS, orientation="h",
            name=str(kind), marker_color=KIND_COLOURS.get(str(kind), "#17becf"), marker_line_width=0, opacity=1.0,
            customdata=np.stack([part["name"].astype(str), part["op_id"].astype(str)], axis=1),
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{base:.4f} ms + %{x:.4f} ms<extra>%{y}</extra>",
        ))
    shown = f" ({len(chosen)} of {spans['device'].nunique()} devices)" if spans["device"].nunique() > len(chosen) else ""
    fig.update_layout(title=title + shown, barmode="overlay", xaxis_title="time (ms)",
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1]},
                      height=max(300, 22 * len(rows) + 120), legend_title="kind")
    return fig


def utilisation_heatmap(usage: pd.DataFrame, makespan: float, *, kind: str = "link", bins: int = 200,
                        max_links: int = 64, title: str = "Link utilisation") -> go.Figure:
    """Time-binned utilisation of the busiest resources of ``kind`` (rows: busiest first)."""
    data = usage[usage["kind"] == kind] if not usage.empty else usage
    if data.empty or makespan <= 0:
        return _empty(title, f"no {kind} carried any load")
    busy = (data["utilisation"] * (data["end"] - data["start"])).groupby(data["target"]).sum()
    top = busy.sort_values(ascending=False).head(max_links).index.tolist()
    edges = np.linspace(0.0, makespan, bins + 1)
    width = edges[1] - edges[0]
    grid = np.zeros((len(top), bins))
    row_of = {t: i for i, t in enumerate(top)}
    part = data[data["target"].isin(top)]
    for target, start, end, util in zip(part["target"], part["start"], part["end"], part["utilisation"], strict=True):
        first = min(int(start / width), bins - 1)
        last = min(int(end / width), bins - 1)
        for b in range(first, last + 1):
            overlap = min(end, edges[b + 1]) - max(start, edges[b])
            if overlap > 0:
                grid[row_of[target], b] += util * overlap / width
    fig = go.Figure(go.Heatmap(z=grid, x=(edges[:-1] + width / 2) * _MS, y=top, zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": "util."},
                               hovertemplate="%{y}<br>%{x:.4f} ms: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=f"{title} (busiest {len(top)} first)", xaxis_title="time (ms)",
                      yaxis={"autorange": "reversed"}, height=max(300, 14 * len(top) + 140))
    return fig


def topology_load(topology: Any, usage: pd.DataFrame | None, makespan: float, *, max_nodes: int = 2000,
                  title: str = "Topology (edge colour: mean utilisation)") -> go.Figure:
    """The graph laid out by tier, each link coloured by its mean utilisation over the run."""
    graph = topology.graph
    if graph.number_of_nodes() > max_nodes:
        return _empty(title, f"{graph.number_of_nodes()} nodes: too many to draw (limit {max_nodes})")
    mean: dict[tuple[str, str], float] = {}
    if usage is not None and not usage.empty and makespan > 0:
        links = usage[usage["kind"] == "link"]
        integral = (links["utilisation"] * (links["end"] - links["start"])).groupby(links["target"]).sum() / makespan
        for target, value in integral.items():
            a, _, b = str(target).partition("->")
            key = tuple(sorted((a, b)))
            mean[key] = max(mean.get(key, 0.0), float(value))
    pos = _layout(topology)
    fig = go.Figure()
    buckets: dict[int, tuple[list[float], list[float]]] = {}
    for a, b in dict.fromkeys(tuple(sorted(e)) for e in graph.edges):  # graph order: no hash-seed dependence
        level = round(min(mean.get((a, b), 0.0), 1.0) * 10)
        xs, ys = buckets.setdefault(level, ([], []))
        xs += [pos[a][0], pos[b][0], None]
        ys += [pos[a][1], pos[b][1], None]
    colours = _viridis(11)
    for level in sorted(buckets):
        xs, ys = buckets[level]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colours[level], "width": 1 + level / 3},
                                 hoverinfo="skip", name=f"{level * 10}%", showlegend=True))
    kinds = nx.get_node_attributes(graph, "kind")
    for kind, symbol in (("device", "square"), ("switch", "circle"), ("nic", "diamond"), ("router", "triangle-up"),
                         ("host", "x")):
        nodes = [n for n in graph.nodes if kinds.get(n) == kind]
        if nodes:
            fig.add_trace(go.Scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers",
                                     marker={"symbol": symbol, "size": 7}, text=nodes, name=kind,
                                     hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=520,
                      legend_title="mean utilisation / node")
    return fig


def _layout(topology: Any) -> dict[str, tuple[float, float]]:
    """Tiered layout: devices at the bottom, NICs, then switches by tier; spring layout for small flat graphs."""
    graph = topology.graph
    tiers: dict[str, int] = {}
    for node, data in graph.nodes(data=True):
        kind = data.get("kind")
        tiers[node] = {"device": 0, "host": 0, "nic": 1}.get(kind, 2 + int(data.get("tier", 1)))
    levels = sorted(set(tiers.values()))
    if len(levels) <= 1 or graph.number_of_nodes() <= 12:
        return {n: (float(x), float(y)) for n, (x, y) in nx.spring_layout(graph.to_undirected(), seed=0).items()}
    pos = {}
    for rank, level in enumerate(levels):
        members = [n for n in graph.nodes if tiers[n] == level]
        for i, n in enumerate(members):
            pos[n] = ((i + 0.5) / len(members), float(rank))
    return pos


def _viridis(n: int) -> list[str]:
    import plotly.colors as pc

    return pc.sample_colorscale("Viridis", [i / (n - 1) for i in range(n)])


def variant_bars(table: pd.DataFrame, *, x: str, y: str, colour: str | None = None, title: str = "",
                 y_title: str | None = None) -> go.Figure:
    """Grouped bars, e.g. speed-up per sublayer (``x``) and variant (``colour``)."""
    fig = go.Figure()
    groups = [(None, table)] if colour is None else list(table.groupby(colour, sort=False))
    for name, part in groups:
        fig.add_trace(go.Bar(x=part[x].astype(str), y=part[y], name=str(name) if name is not None else y))
    fig.update_layout(title=title, barmode="group", xaxis_title=x, yaxis_title=y_title or y, height=420)
    return fig


def sweep_curves(table: pd.DataFrame, parameter: str, metrics: Sequence[str], *, colour: str | None = None,
                 log_x: bool = False, title: str = "What-if sweep") -> go.Figure:
    """Each metric against the swept ``parameter`` (one line per value of ``colour``)."""
    fig = go.Figure()
    numeric = pd.api.types.is_numeric_dtype(table[parameter])
    for metric in metrics:
        groups = [(None, table)] if colour is None else list(table.groupby(colour, sort=False))
        for name, part in groups:
            part = part.sort_values(parameter) if numeric else part
            label = metric if name is None else f"{metric} ({colour}={name})"
            fig.add_trace(go.Scatter(x=part[parameter], y=part[metric], mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title=parameter, height=440, xaxis_type="log" if log_x else None)
    return fig


def collective_curve(table: pd.DataFrame, label: str) -> go.Figure:
    """busbw (simulated) against message size, with the closed form's busbw when there is one."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=table["size"], y=table["busbw"] / 1e9, mode="lines+markers", name="simulated"))
    if "closed_form" in table and table["closed_form"].notna().any():
        factor = table["busbw"] / table["algbw"]
        closed = table["size"] / table["closed_form"] * factor
        fig.add_trace(go.Scatter(x=table["size"], y=closed / 1e9, mode="lines", name="closed form",
                                 line={"dash": "dot"}))
    fig.update_layout(title=f"{label}: bus bandwidth", xaxis_title="size (B)", yaxis_title="busbw (GB/s)",
                      xaxis_type="log", height=420)
    return fig


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=f"{title} — {why}", height=160, xaxis={"visible": False}, yaxis={"visible": False})
    return fig
