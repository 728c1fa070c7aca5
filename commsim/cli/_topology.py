"""``commsim topology show``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from commsim.cli._app import console, topology_app
from commsim.limits import allow_large
from commsim.paths import output_file
from commsim.units import format_bandwidth


@topology_app.command("show")
def show_command(
    topology: Annotated[str, typer.Argument(help="Topology YAML file or shorthand (e.g. fat_tree:k=8).")],
    html: Annotated[Path | None, typer.Option("--html", help="Where to write the graph view "
                                              "(default: dashboards/topology-<name>.html).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even a topology above the size limits.")] = False,
) -> None:
    """Node and link counts, link bandwidths, the rank-order bisection bandwidth and an HTML view."""
    from commsim.network.analysis import describe
    from commsim.network.loader import load_topology
    from commsim.views.dashboard import render_page
    from commsim.views.figures import topology_load

    if html is not None:
        output_file(html, field="--html")
    with allow_large(force):
        topo = load_topology(topology)
    target = html or output_file(Path("dashboards") / f"topology-{topo.name.replace(':', '_').replace(',', '_')}.html",
                                 field="--html")
    info = describe(topo)
    table = Table(title=escape(f"topology {topo.name}"))
    table.add_column("property")
    table.add_column("value", justify="right")
    for key in ("nodes", "links", "device", "nic", "switch", "router", "host"):
        if key in info:
            table.add_row(key if key in ("nodes", "links") else f"{key} nodes", str(info[key]))
    table.add_row("link bandwidths", ", ".join(format_bandwidth(b) for b in info["link_bandwidths"]))
    table.add_row("bisection bandwidth (rank order)", format_bandwidth(info["bisection_bandwidth"]))
    console.print(table)
    page = render_page(f"topology {topo.name}", f"<p>{topo.description}</p>", [], [topology_load(topo, None, 0.0)])
    target.write_text(page, encoding="utf-8")
    console.print(f"graph view: [bold]{escape(str(target))}[/]")
