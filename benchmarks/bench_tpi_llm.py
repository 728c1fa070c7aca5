"""Time the TPI-LLM study's full ``summary.csv`` (7 models x 4 testbed sizes x 2 windows, plus the 4 laptops).

Run: ``python benchmarks/bench_tpi_llm.py [--no-laptops]``.

Prints per setting the wall and CPU time of its runs (a run that does not fit is
run twice: once to fail, once on unlimited memory to measure what it needs; with
the scheduler off that second run replays only the start-up and the allocations),
then the totals. Each run is a generated trace replayed by the shared replay
engine with the sliding-window loader as its plug-in. Baselines, all-reduce curves and figures are not included (they are
not part of summary.csv). The issue asks for the full summary in at most 30 s.
"""

from __future__ import annotations

import argparse
import os
import time

from commsim.systems.tpi_llm.params import TPIParams
from commsim.systems.tpi_llm.study import LAPTOP_SETTING, _laptops, _testbed, run_setting
from commsim.workloads.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-laptops", action="store_true", help="only the edge testbed")
    args = parser.parse_args()
    params = TPIParams()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    settings = [(n, _testbed(params, n), params.shares) for n in params.device_counts]
    if not args.no_laptops:
        settings.append((LAPTOP_SETTING, _laptops(params), params.laptop_shares))
    rows = 0
    print(f"{'devices':>9} {'wall s':>7} {'cpu s':>7} {'runs':>5} {'oom':>4}")
    for devices, topo, shares in settings:
        w, c = time.perf_counter(), time.process_time()
        runs = oom = 0
        for name in params.models:
            model = load_model(name)
            for window in params.window_values():
                stats = run_setting(params, model, topo, window, shares=shares)
                runs += 1
                oom += not stats.ok
        rows += runs
        print(f"{devices!s:>9} {time.perf_counter() - w:7.2f} {time.process_time() - c:7.2f} {runs:5d} {oom:4d}")
    print(f"total: wall {time.perf_counter() - wall0:.1f} s, cpu {time.process_time() - cpu0:.1f} s for {rows} rows; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
