"""Megatron-scale training steps through the fast, periodic replay, and a layout search.

Run: ``python benchmarks/bench_megatron.py [--case NAME ...] [--jobs N]``.

Cases (each in a fresh subprocess, so its peak memory is its own):

``gpt3-175b``
    GPT-3 175B, TP 8 × PP 8 × DP 1, 64 micro-batches of 1, sequence parallelism,
    on 8 DGX A100 80 GB servers (``topologies/dgx_a100.yaml``: the calibrated
    per-kernel compute model, NVLink 300 GB/s per GPU, one 200 Gb/s HDR NIC
    per GPU), selective recomputation. Targets: ≤ 5 s wall, ≤ 2 GB.
``gpt-1t``
    A 1T GPT (128 layers, hidden 25,600, 160 heads, Narayanan et al. 2021's
    largest), TP 8 × PP 64 × DP 6, 512 micro-batches, on 3,072 GPUs (384 such
    servers, 32 per leaf, 16 spines). Target: ≤ 60 s.
``search-70b``
    ``commsim search``'s engine over the layouts of Llama-2 70B on 128 H100
    (``topologies/dgx_h100.yaml`` with 16 servers), global batch 1,024 sequences
    of 4,096 tokens, ``--jobs`` processes. Target: ≥ 1,000 layouts in ≤ 2 min
    on 2 cores. ``--search-limit N`` predicts only the first N runnable layouts
    (the rate is what the target needs); ``--table PATH`` writes the search's table
    (layouts in enumeration order, every digit) to compare runs row by row.

The training steps fold each pass's layers where that is exact and reuse each group's first run of a
collective for its later identical runs (``reuse_collectives``: approximate where data-parallel buckets share
NIC links with pipeline sends; the notes say which applied); see :mod:`commsim.workloads.folding`.

Printed per case (JSON): wall and CPU time, peak resident memory (``ru_maxrss``,
the case's process and its children), the machine's load average at the start,
the predicted metrics and which shortcuts applied.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

CASES = ("gpt3-175b", "gpt-1t", "search-70b")


TOPOLOGIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "topologies")


def _dgx_a100(servers: int, per_leaf: int, spines: int) -> Any:
    """``topologies/dgx_a100.yaml`` (A100 80 GB with the calibrated per-kernel compute model) at this size."""
    from commsim.network.loader import load_topology

    return load_topology(os.path.join(TOPOLOGIES, "dgx_a100.yaml"),
                         overrides={"servers": servers, "servers_per_leaf": per_leaf, "spines": spines})


def _step(spec: Any, config: dict[str, Any], topology: Any) -> dict[str, Any]:
    from commsim.collectives import CollectiveConfig
    from commsim.simulation import Simulation
    from commsim.workloads.prediction import predict_training_step

    config = {**config, "recompute": "selective"}
    t0, c0 = time.perf_counter(), time.process_time()
    out = predict_training_step(spec, config, lambda: Simulation(topology, record_usage=False),
                                collective=CollectiveConfig(mode="flows"), fold="exact", reuse_collectives=True)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "replayed": out.replayed,
            "metrics": {k: v for k, (v, _) in out.metrics.items()}, "notes": out.notes,
            "recompute": config["recompute"]}


def run_case(name: str, jobs: int, limit: int | None, table: str | None = None) -> dict[str, Any]:
    """Run one case in this process; return its measurements."""
    from commsim.workloads.models import TransformerSpec

    load = os.getloadavg()[0]
    if name == "gpt3-175b":
        out = _step("gpt3-175b", {"tp": 8, "pp": 8, "dp": 1, "num_micro_batches": 64, "sequence_parallel": True},
                    _dgx_a100(8, 8, 1))
    elif name == "gpt-1t":
        spec = TransformerSpec(name="gpt-1t", layers=128, hidden=25600, heads=160, ffn_hidden=102400, vocab=51200,
                               max_seq_len=2048)
        out = _step(spec, {"tp": 8, "pp": 64, "dp": 6, "num_micro_batches": 512, "sequence_parallel": True},
                    _dgx_a100(384, 32, 16))
    else:
        out = _search(jobs, limit, table)
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"case": name, "load_average_at_start": load, **out, "maxrss_MB": usage / 1024}


def _search(jobs: int, limit: int | None, table: str | None = None) -> dict[str, Any]:
    from commsim import search as search_module
    from commsim.workloads.models import load_model

    spec = load_model("llama-2-70b")
    source = os.path.join(TOPOLOGIES, "dgx_h100.yaml")
    runnable, rejected = search_module.enumerate_candidates(spec, 128, 1024, 4096)
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    result = _search_on(search_module, spec, source, jobs, limit)
    wall = time.perf_counter() - t0
    # the worker processes' CPU time (counted once the pool has shut them down): on a loaded machine the
    # search's own cost, which wall time is not
    workers = _children_cpu() - k0
    if table:
        columns = search_module.LAYOUT_COLUMNS
        result.table.sort_values(columns).to_csv(table, index=False, float_format="%.17g")
    predicted = int((result.table["status"] == "ok").sum())
    tried = len(result.table) - len(rejected)
    best = result.ranked.head(3)
    # with --jobs 1 the layouts are predicted in this process, so its CPU time is the search's own (a measure
    # that holds on a loaded machine); with more jobs it is the parent's share only
    return {"wall_s": wall, "cpu_s_parent": time.process_time() - c0, "cpu_s_workers": workers,
            "cpu_s_per_predicted_layout": (time.process_time() - c0 + workers) / max(predicted, 1),
            "cpu_per_predicted_layout_s": (time.process_time() - c0) / max(len(result.table) - len(rejected), 1)
            if jobs == 1 else None, "layouts": len(runnable) + len(rejected),
            "runnable": len(runnable), "rejected_before_replay": len(rejected), "predicted_here": tried,
            "ok": predicted, "rejected_in_replay": tried - predicted,
            "wall_per_predicted_layout_s": wall / max(tried, 1),
            "layouts_per_2_min": 120.0 / (wall / max(tried, 1)),
            "best": best[["tp", "pp", "dp", "micro_batch_size", "step_time", "mfu"]].to_dict("records"),
            "notes": result.notes}


def _children_cpu() -> float:
    import multiprocessing

    deadline = time.perf_counter() + 60.0
    while multiprocessing.active_children() and time.perf_counter() < deadline:   # reaps the shut-down workers
        time.sleep(0.05)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _search_on(search_module: Any, spec: Any, source: str, jobs: int, limit: int | None) -> Any:
    return search_module.search(spec, source, global_batch=1024, seq_len=4096, jobs=jobs, limit=limit,
                                topology_params={"servers": 16})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=CASES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--search-limit", type=int, default=None)
    parser.add_argument("--table", default=None, help="write the search-70b table to this CSV")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(run_case(args.inner, args.jobs, args.search_limit, args.table), default=str))
        return
    for name in args.case or CASES:
        extra = ["--jobs", str(args.jobs)] + (["--search-limit", str(args.search_limit)] if args.search_limit else []) \
            + (["--table", args.table] if args.table else [])
        done = subprocess.run([sys.executable, __file__, "--inner", name, *extra], capture_output=True, text=True,
                              check=False)
        print(done.stdout.strip() or done.stderr.strip()[-2000:], flush=True)


if __name__ == "__main__":
    main()
