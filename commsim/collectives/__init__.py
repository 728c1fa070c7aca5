"""Collective algorithms as schedules of point-to-point steps, run on the simulated network.

>>> from commsim.collectives import simulate_collective
>>> r = simulate_collective("ring:8,75GB/s,500ns", "reduce_scatter", 64 * 2**20)
>>> r.ranks, round(r.time * 1e6, 1)
(8, 786.4)
"""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "CollectiveConfig": "commsim.collectives._executor",
    "CollectiveRun": "commsim.collectives._executor",
    "TransferObserver": "commsim.collectives._executor",
    "ALGORITHMS": "commsim.collectives._registry",
    "OPS": "commsim.collectives._registry",
    "algorithms_for": "commsim.collectives._registry",
    "build_schedule": "commsim.collectives._registry",
    "register": "commsim.collectives._registry",
    "Dep": "commsim.collectives._schedule",
    "Schedule": "commsim.collectives._schedule",
    "Step": "commsim.collectives._schedule",
    "tile": "commsim.collectives._schedule",
    "TransferHooks": "commsim.collectives.hooks",
    "TransferTerms": "commsim.collectives.hooks",
    "CollectiveResult": "commsim.collectives.api",
    "resolve_group": "commsim.collectives.api",
    "ring_path_parameters": "commsim.collectives.api",
    "run_collective": "commsim.collectives.api",
    "simulate_collective": "commsim.collectives.api",
    "CLOSED_FORMS": "commsim.collectives.closed_form",
    "bus_factor": "commsim.collectives.closed_form",
    "closed_form_time": "commsim.collectives.closed_form",
    "register_closed_form": "commsim.collectives.closed_form",
})

__all__ = [
    "ALGORITHMS",
    "CLOSED_FORMS",
    "OPS",
    "CollectiveConfig",
    "CollectiveResult",
    "CollectiveRun",
    "Dep",
    "Schedule",
    "Step",
    "TransferObserver",
    "TransferHooks",
    "TransferTerms",
    "algorithms_for",
    "build_schedule",
    "bus_factor",
    "closed_form_time",
    "register",
    "register_closed_form",
    "resolve_group",
    "ring_path_parameters",
    "run_collective",
    "simulate_collective",
    "tile",
]
