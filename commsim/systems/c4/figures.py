"""Dashboard figures of the C4 study (plotly): fault timeline, downtime, detection delays, uplink loads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from commsim.views import column_bars

__all__ = ["fault_timeline", "downtime_breakdown", "detection_delays", "localisation_scores", "uplink_heatmaps",
           "allreduce_bars", "iteration_bars", "reduction_sensitivity"]

_STATE_COLOURS = {"running": "#c7e9c0", "slow, undetected": "#fdae6b", "slow, diagnosing": "#e6550d",
                  "detection": "#9ecae1", "diagnosis": "#3182bd", "restart": "#756bb1"}
_DAY = 86400.0


def fault_timeline(segments: pd.DataFrame, faults: pd.DataFrame, horizon: float) -> go.Figure:
    """One row per method over the run (days): running, slow, detection, diagnosis, restart; faults marked."""
    fig = go.Figure()
    for state, part in segments.groupby("state", sort=False):
        fig.add_trace(go.Bar(
            y=part["method"], x=(part["end"] - part["start"]) / _DAY, base=part["start"] / _DAY, orientation="h",
            name=str(state), marker_color=_STATE_COLOURS.get(str(state), "#bdbdbd"),
            customdata=np.stack([part["fault"].astype(str), (part["end"] - part["start"]) / 60.0], axis=1),
            hovertemplate="%{base:.3f} d, %{customdata[1]:.1f} min (fault %{customdata[0]})<extra>%{y}</extra>"))
    if len(faults):
        first = faults.drop_duplicates("fault")
        fig.add_trace(go.Scatter(x=first["at"] / _DAY, y=first["method"], mode="markers", name="fault",
                                 marker={"symbol": "x", "size": 10, "color": "black"},
                                 text=first["where"], hovertemplate="%{text}<br>%{x:.3f} d<extra></extra>"))
        rest = faults[faults["method"] != first["method"].iloc[0]]
        fig.add_trace(go.Scatter(x=rest["at"] / _DAY, y=rest["method"], mode="markers", showlegend=False,
                                 marker={"symbol": "x", "size": 10, "color": "black"},
                                 text=rest["where"], hovertemplate="%{text}<br>%{x:.3f} d<extra></extra>"))
    fig.update_layout(title="Fault timeline: the same faults under timeout + manual diagnosis and under C4D",
                      barmode="overlay", xaxis_title="wall-clock time (days)", xaxis_range=[0, horizon / _DAY],
                      height=300, legend_title="state")
    return fig


def downtime_breakdown(breakdown: pd.DataFrame) -> go.Figure:
    """Error-induced downtime per method, stacked by detection, diagnosis, restart and lost work (hours)."""
    fig = go.Figure()
    for category, part in breakdown.groupby("category", sort=False):
        fig.add_trace(go.Bar(x=part["method"], y=part["seconds"] / 3600.0, name=str(category),
                             customdata=part["fraction"] * 100,
                             hovertemplate="%{y:.2f} h (%{customdata:.2f} % of the run)<extra>%{x}</extra>"))
    fig.update_layout(title="Error-induced downtime and its parts", barmode="stack", yaxis_title="hours",
                      height=420)
    return fig


def detection_delays(faults: pd.DataFrame) -> go.Figure:
    """Time to detect and to localise every fault of the run, per method (log scale)."""
    fig = go.Figure()
    for column, name in (("time_to_detect", "time to detect"), ("time_to_localise", "time to localise")):
        fig.add_trace(go.Box(x=faults["method"], y=faults[column], name=name, boxpoints="all", jitter=0.4,
                             text=faults["where"], hovertemplate="%{text}<br>%{y:.3g} s<extra></extra>"))
    fig.update_layout(title="Time to detect and to localise (faults of the run)", boxmode="group",
                      yaxis_type="log", yaxis_title="seconds", height=420)
    return fig


def localisation_scores(episodes: pd.DataFrame) -> go.Figure:
    """Per fault kind: share of episodes localised to the injected component, and of right categories."""
    grouped = episodes.groupby("kind", sort=False)
    table = pd.DataFrame({"localised correctly": grouped["correct"].mean(),
                          "category correct": grouped["category_correct"].mean(),
                          "episodes": grouped.size()}).reset_index()
    fig = go.Figure()
    for column in ("localised correctly", "category correct"):
        fig.add_trace(go.Bar(x=table["kind"], y=table[column], name=column, customdata=table["episodes"],
                             hovertemplate="%{y:.2f} of %{customdata} episodes<extra>%{x}</extra>"))
    fig.update_layout(title="C4D localisation against the injected truth", barmode="group", yaxis_range=[0, 1.05],
                      height=400)
    return fig


def uplink_heatmaps(uplinks: pd.DataFrame, variants: list[str]) -> go.Figure:
    """QPs on every leaf->spine uplink (rows: leaves that carry any, columns: spines), one panel per variant."""
    up = uplinks[(uplinks["direction"] == "up") & uplinks["variant"].isin(variants)]
    busy = sorted(up.loc[up["qps"] > 0, "leaf"].unique())
    if not busy:
        busy = sorted(up["leaf"].unique())[:16]
    spines = sorted(up["spine"].unique(), key=lambda s: (len(s), s))
    zmax = max(1, int(up["qps"].max()))
    fig = make_subplots(rows=1, cols=len(variants), subplot_titles=variants, shared_yaxes=True)
    for i, variant in enumerate(variants):
        part = up[up["variant"] == variant].pivot_table(index="leaf", columns="spine", values="qps", aggfunc="sum")
        part = part.reindex(index=busy, columns=spines).fillna(0)
        fig.add_trace(go.Heatmap(z=part.to_numpy(), x=spines, y=busy, zmin=0, zmax=zmax, colorscale="YlOrRd",
                                 showscale=i == len(variants) - 1, colorbar={"title": "QPs"},
                                 hovertemplate="%{y} -> %{x}: %{z} QPs<extra></extra>"), row=1, col=i + 1)
    fig.update_layout(title="Uplink load: QPs per leaf->spine link (leaves carrying traffic)",
                      height=max(320, 14 * len(busy) + 160))
    return fig


def allreduce_bars(allreduce: pd.DataFrame) -> go.Figure:
    """Fraction of ideal bus bandwidth per variant, job and collective."""
    fig = go.Figure()
    for (collective, job), part in allreduce.groupby(["collective", "job"], sort=False):
        fig.add_trace(go.Bar(x=part["variant"], y=part["fraction_of_ideal"], name=f"{collective}, job {job}",
                             customdata=part["busbw"] / 1e9,
                             hovertemplate="%{y:.3f} of ideal, busbw %{customdata:.1f} GB/s<extra>%{x}</extra>"))
    fig.update_layout(title="All-reduce bus bandwidth, fraction of ideal", barmode="group", yaxis_range=[0, 1.05],
                      height=440)
    return fig


def iteration_bars(iteration: pd.DataFrame) -> go.Figure:
    """Iteration time per variant and job, split into compute path and exposed data-parallel time."""
    return column_bars(iteration.assign(compute=iteration["iteration_time"] - iteration["exposed_dp"]),
                       iteration["variant"] + " · job " + iteration["job"].astype(str),
                       {"compute": "compute path", "exposed_dp": "exposed data-parallel all-reduce"}, stacked=True,
                       title="Iteration time by routing variant", y_title="seconds", height=440)


def reduction_sensitivity(table: pd.DataFrame) -> go.Figure:
    """C4D's downtime reduction against the manual diagnosis time, one line per checkpoint interval."""
    fig = go.Figure()
    for hours, part in table.groupby("checkpoint_hours", sort=True):
        fig.add_trace(go.Scatter(x=part["diagnosis_hours"], y=part["reduction"], mode="lines+markers",
                                 name=f"checkpoint every {hours:g} h"))
    fig.add_hline(y=0.30, line_dash="dot", annotation_text="published: about 30 %")
    fig.update_layout(title="Same faults, other settings: downtime reduction by C4D", xaxis_type="log",
                      xaxis_title="baseline manual diagnosis (hours)", yaxis_title="reduction of error-induced "
                      "downtime", yaxis_range=[0, 1], height=420)
    return fig
