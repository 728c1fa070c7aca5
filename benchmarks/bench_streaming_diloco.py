"""Time the Streaming DiLoCo study's whole ``bandwidth_for_cu`` table (3 models x 5 methods x 50 bandwidths).

Run: ``python benchmarks/bench_streaming_diloco.py [--points N] [--latency SECONDS] [--sharing fair|fifo]``.

Prints the time to build the 15 per-layer traces, then per model and method the
wall and CPU time of its sweep, the ops of its (coalesced) trace, the replays run
(bandwidths above the first with no stall are not replayed) and the steady-state
mode, then the totals. The issue asks for the whole table in at most 30 s.
"""

from __future__ import annotations

import argparse
import os
import time

from commsim.systems.streaming_diloco import analysis
from commsim.systems.streaming_diloco.params import StreamingDilocoParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50, help="grid points (default 50)")
    parser.add_argument("--latency", type=float, default=0.0, help="WAN latency, seconds (default 0)")
    parser.add_argument("--sharing", default="fair", choices=["fair", "fifo"])
    args = parser.parse_args()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    params = StreamingDilocoParams(wan_latency=args.latency, bandwidth_grid={"points": args.points},
                                   sharing=args.sharing)
    prep = analysis.prepare(params, analysis.link_of(params, None))
    print(f"prepare (layouts, plans, 15 per-layer traces, coalesced): {time.perf_counter() - wall0:.2f} s")
    print(f"{'model':>5} {'method':<22} {'wall s':>7} {'cpu s':>7} {'ops':>6} {'replays':>7}  mode")
    tables = []
    for key in prep.plans:
        one = analysis.Prepared(params=params, link=prep.link, layouts=prep.layouts, plans={key: prep.plans[key]},
                                traces={key: prep.traces[key]})
        w, c = time.perf_counter(), time.process_time()
        curves = analysis.sweep(one)
        w, c = time.perf_counter() - w, time.process_time() - c
        tables.append(curves)
        replays = int((curves["mode"] != "no stall below").sum())
        trace = prep.traces[key].trace  # none in periodic mode: a trace per length replayed
        print(f"{key[0]:>5} {key[1]:<22} {w:7.2f} {c:7.2f} {trace.op_count() if trace else 0:6d} {replays:7d}  "
              f"{prep.traces[key].mode}")
    print(f"total: wall {time.perf_counter() - wall0:.1f} s, cpu {time.process_time() - cpu0:.1f} s for "
          f"{len(prep.plans) * params.bandwidth_grid.points} table cells; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
