"""Views: plotly figures and self-contained HTML dashboards."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "write_dashboard": "commsim.views.dashboard",
    "write_sweep_dashboard": "commsim.views.dashboard",
    "collective_curve": "commsim.views.figures",
    "column_bars": "commsim.views.figures",
    "sweep_curves": "commsim.views.figures",
    "timeline": "commsim.views.figures",
    "topology_load": "commsim.views.figures",
    "utilisation_heatmap": "commsim.views.figures",
    "variant_bars": "commsim.views.figures",
})

__all__ = ["collective_curve", "column_bars", "sweep_curves", "timeline", "topology_load", "utilisation_heatmap", "variant_bars",
           "write_dashboard", "write_sweep_dashboard"]
