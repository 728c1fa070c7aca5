"""Validation checks of the foundation: max-min sharing, collective closed forms, the Megatron compute model.

:mod:`commsim.validators` lists them as areas; nothing here registers itself.
"""

from __future__ import annotations

import numpy as np

from commsim.errors import ConfigError
from commsim.validation import Check, relative_check

__all__ = ["closed_form_checks", "kernel_checks", "megatron_checks"]


def kernel_checks() -> list[Check]:
    """Max-min rates of three small cases against their hand-computed values."""
    from commsim.kernel.maxmin import max_min_rates

    rows = []
    # parking lot: one flow over 3 links of 10, one short flow per link -> every flow gets 5
    act = np.array([0, 0, 0, 1, 2, 3])
    res = np.array([0, 1, 2, 0, 1, 2])
    rates = max_min_rates(act, res, np.ones(6), np.ones(4), np.full(4, np.inf), np.zeros(4, int), np.full(3, 10.0))
    rows.append(relative_check("kernel", "parking lot, long flow rate", 5.0, rates[0], 1e-9))
    # weights 1:3 on one link of 8 -> 2 and 6
    rates = max_min_rates(np.array([0, 1]), np.array([0, 0]), np.ones(2), np.array([1.0, 3.0]), np.full(2, np.inf),
                          np.zeros(2, int), np.array([8.0]))
    rows.append(relative_check("kernel", "weighted share 1:3 of 8, heavy flow", 6.0, rates[1], 1e-9))
    # a cap of 1 leaves 9 of 10 to the other flow
    rates = max_min_rates(np.array([0, 1]), np.array([0, 0]), np.ones(2), np.ones(2), np.array([1.0, np.inf]),
                          np.zeros(2, int), np.array([10.0]))
    rows.append(relative_check("kernel", "rate cap frees capacity", 9.0, rates[1], 1e-9))
    return rows


def closed_form_checks() -> list[Check]:
    """Every uncongested collective algorithm against its alpha-beta closed form."""
    from commsim.collectives import CollectiveConfig, algorithms_for, simulate_collective

    rows = []
    cases = [("switch:64,50GB/s,500ns", "switch, 64 ranks"), ("ring:8,75GB/s,500ns", "ring, 8 ranks"),
             ("nvswitch_node:8", "NVSwitch node, 8 GPUs")]
    for topo, label in cases:
        for op in ("all_reduce", "reduce_scatter", "all_gather"):
            for algorithm in algorithms_for(op):
                if topo.startswith("ring") and algorithm != "ring":
                    continue  # only neighbour traffic is uncongested on a ring of links
                try:
                    result = simulate_collective(topo, op, 2**28, algorithm=algorithm,
                                                 config=CollectiveConfig(step_latency=5e-6))
                except ConfigError as exc:  # an algorithm that does not fit the group (e.g. its size)
                    rows.append(Check("collectives", f"{op}/{algorithm} on {label}", float("nan"), float("nan"),
                                      0.005, detail=f"not applicable: {exc}", skipped=True))
                    continue
                if np.isnan(result.closed_form):
                    continue
                rows.append(relative_check("collectives", f"{op}/{algorithm} 256 MiB on {label}",
                                           result.closed_form, result.time, 0.005,
                                           "simulated time vs alpha-beta closed form"))
    return rows


def megatron_checks() -> list[Check]:
    """The shipped A100 compute model against the 2020 Megatron-LM DGX A100 iteration times (when present)."""
    from commsim.devices import load_compute_model
    from commsim.workloads.megatron_calibration import (
        DGX_A100_TOPOLOGY,
        MEGATRON_DATA_VARIABLE,
        MegatronSetup,
        leave_one_out,
        predict_rows,
        read_megatron_csv,
        shared_table,
    )

    path = shared_table()
    if not path.is_file():
        return [Check("megatron", "DGX A100 iteration times", 0.0, float("nan"), 0.05, relative=False,
                      detail=f"not applicable: measured table not found at {path} (set {MEGATRON_DATA_VARIABLE} or "
                             "COMMSIM_SHARED_DATA)", skipped=True)]
    rows = read_megatron_csv(path)
    setup = MegatronSetup(topology=DGX_A100_TOPOLOGY,
                          nccl_calibration=DGX_A100_TOPOLOGY.with_suffix(".calibration.yaml"))
    model = load_compute_model("a100_40gb")
    checks = []
    for p in predict_rows(rows, model, setup):
        fitted = p.row.dp == 1   # the shipped fit used the one-server rows (see a100_40gb.yaml: fit.fitted_on)
        role = "fitted" if fitted else "predicted, not in the fit"
        checks.append(relative_check("megatron", f"{p.row.label} iteration time ({role})", p.row.measured,
                                     p.predicted, 0.03 if fitted else 0.10,
                                     f"a100_40gb compute model, recompute {setup.recompute}; DP all-reduces from "
                                     "the NCCL model, overlapped with backward"))
    for p in leave_one_out(rows, model, setup):
        checks.append(relative_check("megatron", f"{p.row.label} held out (fit to the other one-server rows)",
                                     p.row.measured, p.predicted, 0.05, "leave-one-out refit of the three "
                                     "compute-model parameters"))
    return checks

