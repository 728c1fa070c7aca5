"""The dashboard of a layout search: the fastest layouts' time breakdown, speed against memory, every row."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from commsim.views.dashboard import render_page

__all__ = ["write_search_dashboard", "breakdown_bars", "speed_memory_scatter"]

_PARTS = [("compute_time", "compute"), ("recompute_time", "recomputation"), ("exposed_tp_comm", "exposed TP"),
          ("exposed_pp_comm", "exposed PP"), ("exposed_dp_comm", "exposed DP"), ("exposed_ep_comm", "exposed EP"),
          ("exposed_cp_comm", "exposed CP"), ("exposed_other_comm", "exposed other"),
          ("pipeline_bubble", "pipeline bubble")]


def layout_label(row: pd.Series) -> str:
    """A short name of a layout: ``tp8 pp4 dp4 mb1`` (plus ``v2``, the recomputation, ``dopt`` when set)."""
    label = f"tp{row['tp']} pp{row['pp']} dp{row['dp']} mb{row['micro_batch_size']}"
    if row.get("virtual_pipeline_stages", 1) not in (1, None) and not pd.isna(row.get("virtual_pipeline_stages")):
        label += f" v{row['virtual_pipeline_stages']}"
    if row.get("recompute") not in ("none", None) and not pd.isna(row.get("recompute")):
        label += f" rc-{row['recompute']}"
    if bool(row.get("distributed_optimizer")) is True:
        label += " dopt"
    return label


def breakdown_bars(ranked: pd.DataFrame, top: int = 20) -> go.Figure:
    """Stacked bars of the ``top`` fastest layouts' step time by where it goes (seconds)."""
    head = ranked.head(top)
    labels = [layout_label(row) for _, row in head.iterrows()]
    fig = go.Figure()
    for column, name in _PARTS:
        if column in head and (head[column].fillna(0) > 0).any():
            fig.add_bar(x=labels, y=head[column], name=name)
    fig.update_layout(barmode="stack", title=f"Step time of the {len(head)} fastest layouts, by where it goes",
                      yaxis_title="seconds", xaxis_title="layout", legend_title="part")
    return fig


def speed_memory_scatter(ranked: pd.DataFrame) -> go.Figure:
    """Step time against peak memory per GPU, one point per layout, coloured by TP."""
    fig = go.Figure()
    for tp, part in ranked.groupby("tp", sort=True):
        fig.add_scatter(x=part["peak_memory_per_gpu"] / 2**30, y=part["step_time"], mode="markers", name=f"tp {tp}",
                        text=[layout_label(row) for _, row in part.iterrows()], hovertemplate="%{text}<br>"
                        "memory %{x:.1f} GiB<br>step %{y:.4g} s<extra></extra>")
    fig.update_layout(title="Step time against peak memory per GPU", xaxis_title="peak memory per GPU (GiB)",
                      yaxis_title="step time (s)", legend_title="tensor parallel")
    return fig


def write_search_dashboard(table: pd.DataFrame, path: str | Path, *, title: str = "Layout search",
                           notes: list[str] | None = None) -> Path:
    """Write the search dashboard (one self-contained HTML file); return its path."""
    ranked = table[table["status"] == "ok"].sort_values("step_time")
    rejected = table[table["status"] != "ok"]
    intro = (f"<p class='muted'>{len(table)} layouts: {len(ranked)} predicted, {len(rejected)} rejected</p>"
             + "".join(f"<p class='muted'>{html.escape(note)}</p>" for note in notes or []))
    figures = [breakdown_bars(ranked), speed_memory_scatter(ranked)] if len(ranked) else []
    blocks = ["<h2>Ranked</h2>", ranked.to_html(index=False, classes="metrics", float_format=lambda v: f"{v:.6g}",
                                                 border=0),
              "<h2>Rejected</h2>", rejected[["tp", "pp", "dp", "micro_batch_size", "virtual_pipeline_stages",
                                             "recompute", "distributed_optimizer", "reason"]].to_html(
                  index=False, classes="metrics", border=0)]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_page(title, intro, blocks, figures), encoding="utf-8")
    return target
