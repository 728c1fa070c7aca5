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

__all__ = ["timeline", "breakdown_bars", "utilisation_heatmap", "topology_load", "variant_bars", "column_bars",
           "sweep_curves", "collective_curve", "KIND_COLOURS"]

KIND_COLOURS = {"compute": "#1f77b4", "comm": "#ff7f0e", "collective": "#ff7f0e", "copy": "#2ca02c",
                "disk": "#9467bd", "delay": "#7f7f7f", "alloc": "#bcbd22", "free": "#bcbd22"}
_MS = 1e3


def timeline(spans: pd.DataFrame, *, devices: Sequence[str] | None = None, max_devices: int = 16,
             max_spans: int = 60_000, title: str = "Timeline", critical: pd.DataFrame | None = None,
             rank_devices: Sequence[str] | None = None, makespan: float | None = None,
             exposed: dict[str, list[tuple[float, float, str]]] | None = None, dense: int = 300,
             bins: int = 400) -> go.Figure:
    """One row per device and stream, plus each device's **exposed communication** lane.

    The ``exposed comm`` row of a device shows when its communication runs with
    no work to hide it (see :mod:`commsim.views.accounting`). ``critical`` (the
    replay's critical path: rank, stream, start, end) is drawn as thin black
    bars over the rows it runs on (``rank_devices`` maps ranks to device
    names). A row with more than ``dense`` spans, too many to tell apart at the
    default zoom, is drawn as a utilisation band instead: ``bins`` bins over
    the run, each as opaque as the share of it the row is busy.
    """
    from commsim.views.accounting import exposed_intervals

    fig = go.Figure()
    if spans.empty:
        return _empty(title, "no spans were recorded")
    chosen = list(devices) if devices else list(dict.fromkeys(spans["device"]))[:max_devices]
    data = spans[spans["device"].isin(chosen)].copy()
    makespan = float(makespan if makespan is not None else spans["end"].max())
    if exposed is None:
        exposed = exposed_intervals(data)
    data["row"] = data["device"].astype(str) + " · " + data["stream"].astype(str)
    order = {d: i for i, d in enumerate(chosen)}
    lane = {d: f"{d} · exposed comm" for d in chosen}
    rows = sorted(set(data["row"]) | set(lane.values()),
                  key=lambda r: (order.get(r.split(" · ")[0], 0), not r.endswith("exposed comm"), r))
    counts = data.groupby("row")["start"].size()
    dense_rows = set(counts[counts > dense].index)
    sparse = data[~data["row"].isin(dense_rows)]
    if len(sparse) > max_spans:  # keep the longest spans: they carry the picture
        sparse = sparse.assign(_d=sparse["end"] - sparse["start"]).nlargest(max_spans, "_d")
    for kind, part in sparse.groupby("kind", sort=True):
        fig.add_trace(go.Bar(
            y=part["row"], x=(part["end"] - part["start"]) * _MS, base=part["start"] * _MS, orientation="h",
            name=str(kind), legendgroup=str(kind), marker_color=KIND_COLOURS.get(str(kind), "#17becf"),
            marker_line_width=0, opacity=1.0,
            customdata=np.stack([part["name"].astype(str), part["op_id"].astype(str)], axis=1),
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{base:.4f} ms + %{x:.4f} ms<extra>%{y}</extra>",
        ))
    for (row, kind), part in data[data["row"].isin(dense_rows)].groupby(["row", "kind"], sort=True):
        _band(fig, row, list(zip(part["start"], part["end"], strict=True)), makespan, bins,
              KIND_COLOURS.get(str(kind), "#17becf"), f"{kind} (utilisation band)", str(kind))
    for device in chosen:
        pieces = exposed.get(device, [])
        intervals = [(s, e) for s, e, _ in pieces]
        if len(pieces) > dense:
            _band(fig, lane[device], intervals, makespan, bins, _EXPOSED, "exposed comm", "exposed")
        elif pieces:
            fig.add_trace(go.Bar(
                y=[lane[device]] * len(pieces), x=[(e - s) * _MS for s, e in intervals],
                base=[s * _MS for s, _ in intervals], orientation="h", name="exposed comm", legendgroup="exposed",
                showlegend=not any(t.name == "exposed comm" for t in fig.data), marker_color=_EXPOSED,
                marker_line_width=0, customdata=[c for _, _, c in pieces],
                hovertemplate="exposed %{customdata}<br>%{base:.4f} ms + %{x:.4f} ms<extra>%{y}</extra>"))
    if critical is not None and len(critical):
        _critical(fig, critical, rank_devices, set(rows), makespan, dense, bins)
    shown = f" ({len(chosen)} of {spans['device'].nunique()} devices)" if spans["device"].nunique() > len(chosen) else ""
    fig.update_layout(title=title + shown + " — red: communication with no compute to hide it; black: critical path",
                      barmode="overlay", xaxis_title="time (ms)",
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1]},
                      height=max(400, 22 * len(rows) + 140), legend_title="kind")
    return fig


_EXPOSED = "#d62728"


def _band(fig: go.Figure, row: str, intervals: list[tuple[float, float]], makespan: float, bins: int, colour: str,
          name: str, group: str, width: float | None = None) -> None:
    """A row's busy share per time bin, drawn as bars whose opacity is that share."""
    from commsim.views.accounting import merge

    if makespan <= 0 or not intervals:
        return
    merged = np.array(merge(intervals)).reshape(-1, 2)
    if not len(merged):
        return
    edges = np.linspace(0.0, makespan, bins + 1)
    busy = np.zeros(bins)
    for b in range(bins):   # union length inside each bin
        lo, hi = edges[b], edges[b + 1]
        busy[b] = np.clip(np.minimum(merged[:, 1], hi) - np.maximum(merged[:, 0], lo), 0.0, None).sum()
    share = busy / (edges[1] - edges[0])
    keep = share > 0.005
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    colours = [f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.15 + 0.85 * min(v, 1.0):.3f})" for v in share[keep]]
    fig.add_trace(go.Bar(
        y=[row] * int(keep.sum()), x=np.diff(edges)[keep] * _MS, base=edges[:-1][keep] * _MS, orientation="h",
        name=name, legendgroup=group, showlegend=not any(t.name == name for t in fig.data), marker_color=colours,
        marker_line_width=0, width=width, customdata=np.round(share[keep] * 100, 1),
        hovertemplate="busy %{customdata}% of %{x:.4f} ms from %{base:.4f} ms<extra>%{y}</extra>"))


def _critical(fig: go.Figure, critical: pd.DataFrame, rank_devices: Sequence[str] | None, rows: set[str],
              makespan: float, dense: int, bins: int) -> None:
    """Thin black bars over the rows where the critical path runs (a band where it is dense)."""
    names = list(rank_devices or [])
    path = critical.copy()
    path["device"] = [names[r] if 0 <= r < len(names) else f"gpu{r}" for r in path["rank"].astype(int)]
    path["row"] = path["device"] + " · " + path["stream"].astype(str)
    path = path[path["row"].isin(rows)]
    for row, part in path.groupby("row", sort=True):
        if len(part) > dense:
            _band(fig, row, list(zip(part["start"], part["end"], strict=True)), makespan, bins, "#000000",
                  "critical path", "critical", width=0.3)
            continue
        fig.add_trace(go.Bar(
            y=part["row"], x=(part["end"] - part["start"]) * _MS, base=part["start"] * _MS, orientation="h",
            name="critical path", legendgroup="critical",
            showlegend=not any(t.name == "critical path" for t in fig.data), marker_color="#000000", width=0.3,
            marker_line_width=0, customdata=part["op_id"].astype(str),
            hovertemplate="critical: %{customdata}<br>%{base:.4f} ms + %{x:.4f} ms<extra>%{y}</extra>"))


def breakdown_bars(table: pd.DataFrame, *, title: str = "Where each device's time goes") -> go.Figure:
    """Stacked horizontal bars per device: compute, exposed TP/PP/DP communication, other, bubble, idle (ms)."""
    from commsim.views.accounting import BREAKDOWN_PARTS

    if table.empty:
        return _empty(title, "no spans were recorded")
    fig = go.Figure()
    for part in BREAKDOWN_PARTS:
        values = table[part] * _MS
        if not (values > 0).any():
            continue
        fig.add_trace(go.Bar(y=table["device"], x=values, orientation="h", name=part,
                             marker_color=_PART_COLOURS[part],
                             hovertemplate="%{y}: %{x:.3f} ms " + part + "<extra></extra>"))
    fig.update_layout(title=title + " (the bars add up to the run's time)", barmode="stack", xaxis_title="time (ms)",
                      yaxis={"autorange": "reversed"}, height=max(260, 20 * len(table) + 150),
                      legend_title="part")
    return fig


_PART_COLOURS = {"compute": "#1f77b4", "exposed TP": "#d62728", "exposed PP": "#ff9896", "exposed DP": "#8c564b",
                 "exposed other": "#e377c2", "other": "#2ca02c", "bubble": "#c7c7c7", "idle": "#f2f2f2"}


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
                  title: str | None = None, failed: Sequence[tuple[str, str]] = (),
                  max_labels: int = 200) -> go.Figure:
    """The graph laid out by tier, with node names, each link coloured by its mean utilisation over the run.

    When nothing ran (no ``usage``), links are coloured by their bandwidth
    instead. Links in ``failed`` (pairs of node names: the links a fault took
    down during the run) are drawn dashed red. Node names are written next to
    the nodes up to ``max_labels`` nodes (always in the hover text).
    """
    graph = topology.graph
    loaded = usage is not None and not usage.empty and makespan > 0
    if title is None:
        title = "Topology (edge colour: mean utilisation)" if loaded else "Topology (edge colour: link bandwidth)"
    if graph.number_of_nodes() > max_nodes:
        return _empty(title, f"{graph.number_of_nodes()} nodes: too many to draw (limit {max_nodes})")
    pos = _layout(topology)
    fig = go.Figure()
    edges = sorted({tuple(sorted(e)) for e in graph.edges})
    buckets: dict[str, tuple[list[float | None], list[float | None], str, float, float]] = {}
    colours = _viridis(11)
    if loaded:
        mean: dict[tuple[str, str], float] = {}
        links = usage[usage["kind"] == "link"]
        integral = (links["utilisation"] * (links["end"] - links["start"])).groupby(links["target"]).sum() / makespan
        for target, value in integral.items():
            a, _, b = str(target).partition("->")
            key = tuple(sorted((a, b)))
            mean[key] = max(mean.get(key, 0.0), float(value))
        for a, b in edges:
            level = round(min(mean.get((a, b), 0.0), 1.0) * 10)
            _bucket(buckets, f"{level * 10}% busy", colours[level], 1 + level / 3, pos, a, b, level)
    else:
        speeds = sorted({graph.edges[a, b]["bandwidth"] for a, b in edges})
        from commsim.units import format_bandwidth

        for a, b in edges:
            bandwidth = graph.edges[a, b]["bandwidth"]
            level = round(10 * speeds.index(bandwidth) / max(len(speeds) - 1, 1))
            _bucket(buckets, format_bandwidth(bandwidth), colours[level], 1 + level / 3, pos, a, b, bandwidth)
    for name, (xs, ys, colour, width, _) in sorted(buckets.items(), key=lambda item: item[1][4]):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": width},
                                 hoverinfo="skip", name=name, showlegend=True))
    down = [tuple(sorted(link)) for link in failed if graph.has_edge(*link)]
    if down:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for a, b in down:
            xs += [pos[a][0], pos[b][0], None]
            ys += [pos[a][1], pos[b][1], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#d62728", "width": 4, "dash": "dash"},
                                 name="failed during the run", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=[(pos[a][0] + pos[b][0]) / 2 for a, b in down],
                                 y=[(pos[a][1] + pos[b][1]) / 2 for a, b in down], mode="markers",
                                 marker={"symbol": "x", "size": 12, "color": "#d62728"},
                                 text=[f"{a} – {b} failed" for a, b in down], showlegend=False,
                                 hovertemplate="%{text}<extra></extra>"))
    kinds = nx.get_node_attributes(graph, "kind")
    labelled = graph.number_of_nodes() <= max_labels
    for kind, symbol in (("device", "square"), ("switch", "circle"), ("nic", "diamond"), ("router", "triangle-up"),
                         ("host", "x")):
        nodes = [n for n in graph.nodes if kinds.get(n) == kind]
        if nodes:
            fig.add_trace(go.Scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes],
                                     mode="markers+text" if labelled else "markers",
                                     marker={"symbol": symbol, "size": 8}, text=nodes, textposition="top center",
                                     textfont={"size": 9}, name=kind, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=560,
                      legend_title="links / nodes")
    return fig


def _bucket(buckets: dict[str, Any], name: str, colour: str, width: float, pos: dict[str, tuple[float, float]],
            a: str, b: str, order: float) -> None:
    """Add the link a-b to the legend group ``name`` (one plotly trace per group, ordered by ``order``)."""
    xs, ys, _, _, _ = buckets.setdefault(name, ([], [], colour, width, order))
    xs += [pos[a][0], pos[b][0], None]
    ys += [pos[a][1], pos[b][1], None]


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


def column_bars(table: pd.DataFrame, x: str | Sequence[str], columns: dict[str, str], *, stacked: bool = False,
                title: str = "", y_title: str | None = None, height: int = 420) -> go.Figure:
    """One bar per row of ``table`` at ``x`` (a column, or a label per row) for each of ``columns``
    (column -> legend name), grouped or ``stacked``: e.g. published against simulated, or the parts of a time."""
    labels = table[x] if isinstance(x, str) else list(x)
    fig = go.Figure()
    for column, name in columns.items():
        fig.add_trace(go.Bar(x=labels, y=table[column], name=name))
    fig.update_layout(title=title, barmode="stack" if stacked else "group", yaxis_title=y_title, height=height)
    return fig


def sweep_curves(table: pd.DataFrame, parameter: str, metrics: Sequence[str], *, colour: str | None = None,
                 log_x: bool = False, title: str = "What-if sweep", x_title: str | None = None,
                 y_title: str | None = None) -> go.Figure:
    """Each metric against the swept ``parameter`` (one line per value of ``colour``).

    Tick labels use SI prefixes (G for giga, never B for billion).
    """
    fig = go.Figure()
    numeric = pd.api.types.is_numeric_dtype(table[parameter])
    for metric in metrics:
        groups = [(None, table)] if colour is None else list(table.groupby(colour, sort=False))
        for name, part in groups:
            part = part.sort_values(parameter) if numeric else part
            label = metric if name is None else f"{metric} ({colour}={name})"
            fig.add_trace(go.Scatter(x=part[parameter], y=part[metric], mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title=x_title or parameter, yaxis_title=y_title, height=440,
                      xaxis_type="log" if log_x else None)
    fig.update_xaxes(exponentformat="SI")
    fig.update_yaxes(exponentformat="SI", rangemode="tozero")
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
