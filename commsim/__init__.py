"""commsim: a discrete-event simulator of accelerators, links and switches.

The curated public API. Run a scenario file::

    >>> import commsim
    >>> run = commsim.simulate({"name": "demo", "topology": "switch:8,50GB/s,500ns",
    ...                         "workload": {"kind": "collective", "sizes": "1GiB"}})
    >>> round(run.metrics["busbw_at_largest"][0] / 1e9, 1)
    50.0

or build a :class:`Simulation` yourself and push transfers and kernels through it.
"""

from commsim._lazy import lazy_exports

# where each public name lives; imported on first use so that `import commsim` stays instant
__getattr__, __dir__ = lazy_exports(__name__, {
    "CollectiveConfig": "commsim.collectives",
    "simulate_collective": "commsim.collectives.api",
    "CommsimError": "commsim.errors",
    "ConfigError": "commsim.errors",
    "MissingExtraError": "commsim.errors",
    "OutOfMemoryError": "commsim.errors",
    "RoutingError": "commsim.errors",
    "SimulationError": "commsim.errors",
    "StallError": "commsim.errors",
    "TopologyError": "commsim.errors",
    "TraceError": "commsim.errors",
    "UnitError": "commsim.errors",
    "Topology": "commsim.network.topology",
    "load_topology": "commsim.network.loader",
    "Result": "commsim.results.result",
    "RunResult": "commsim.scenario.runner",
    "simulate": "commsim.scenario.runner",
    "Scenario": "commsim.scenario.spec",
    "load_scenario": "commsim.scenario.spec",
    "Simulation": "commsim.simulation",
    "SweepResult": "commsim.sweeps",
    "sweep": "commsim.sweeps",
    "parse_quantity": "commsim.units",
    "__version__": "commsim._version",
})

__all__ = [
    "CollectiveConfig",
    "CommsimError",
    "ConfigError",
    "MissingExtraError",
    "OutOfMemoryError",
    "Result",
    "RoutingError",
    "RunResult",
    "Scenario",
    "SimulationError",
    "StallError",
    "SweepResult",
    "Simulation",
    "Topology",
    "TopologyError",
    "TraceError",
    "UnitError",
    "__version__",
    "load_scenario",
    "load_topology",
    "parse_quantity",
    "simulate",
    "simulate_collective",
    "sweep",
]
