"""Scenarios: YAML files that say what to run, and the runner that runs them."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "RunResult": "commsim.scenario.runner",
    "as_scenario": "commsim.scenario.runner",
    "simulate": "commsim.scenario.runner",
    "Scenario": "commsim.scenario.spec",
    "apply_overrides": "commsim.scenario.spec",
    "load_scenario": "commsim.scenario.spec",
    "parse_set": "commsim.scenario.spec",
    "scenario_from_dict": "commsim.scenario.spec",
})

__all__ = ["RunResult", "Scenario", "apply_overrides", "as_scenario", "load_scenario", "parse_set",
           "scenario_from_dict", "simulate"]
