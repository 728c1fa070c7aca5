"""Time a 1 GiB ring all-reduce on one switch (50 GB/s links, 500 ns) with 64, 512 and 4,096 GPUs.

Run: ``python benchmarks/bench_collectives.py [--ranks 64 512 4096] [--algorithm ring] [--repeat 3] [--profile N]``.
Each size runs in fresh Python subprocesses (``--repeat`` of them; medians shown), which report
the wall and CPU time of ``simulate_collective`` (build, route, simulate, closed form), their
peak resident memory (``ru_maxrss``, including the interpreter and libraries; the import
baseline is shown apart), and the relative error of the simulated time against the closed
form; "process s" is the whole process's wall time (start-up and imports included), as the
parent measures it. Targets (issue 19): whole process 512 GPUs <= 0.5 s; 4,096 <= 3.5 s and
512 MB; exact to the closed form.
``--profile N`` prints the 20 most expensive functions (cProfile) of the N-GPU run instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
from commsim.collectives import simulate_collective
ranks, algorithm = int(sys.argv[1]), sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
r = simulate_collective(f"switch:{ranks},50GB/s,500ns", "all_reduce", 2**30, algorithm=algorithm)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ranks": ranks, "wall": wall, "cpu": cpu, "peak_kib": peak, "base_kib": base,
                  "time": r.time, "closed": r.closed_form, "busbw": r.busbw}))
"""

PROFILE = r"""
import cProfile, pstats, sys
from commsim.collectives import simulate_collective
ranks, algorithm = int(sys.argv[1]), sys.argv[2]
cProfile.run(f"simulate_collective('switch:{ranks},50GB/s,500ns', 'all_reduce', 2**30, algorithm='{algorithm}')",
             "/tmp/commsim_bench_collectives.prof")
pstats.Stats("/tmp/commsim_bench_collectives.prof").sort_stats("tottime").print_stats(20)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--algorithm", default="ring")
    parser.add_argument("--repeat", type=int, default=1, help="processes per size; medians are shown")
    parser.add_argument("--profile", type=int, default=None, metavar="N")
    args = parser.parse_args()
    if args.profile:
        subprocess.run([sys.executable, "-c", PROFILE, str(args.profile), args.algorithm], check=True)
        return
    print(f"1 GiB all_reduce/{args.algorithm} on switch:N,50GB/s,500ns (one fresh process per size)")
    header = (f"{'GPUs':>6} {'process s':>10} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'(import MB)':>12} "
              f"{'sim time s':>12} {'busbw GB/s':>11} {'rel. error':>11}")
    print(header)
    print("-" * len(header))
    for ranks in args.ranks:
        rows = []
        for _ in range(max(1, args.repeat)):
            began = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(ranks), args.algorithm], check=True,
                                 capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["process"] = time.perf_counter() - began
            rows.append(row)
        med = {key: statistics.median(r[key] for r in rows) for key in ("process", "wall", "cpu", "peak_kib")}
        row = rows[0]
        error = row["time"] / row["closed"] - 1
        print(f"{ranks:>6} {med['process']:>10.3f} {med['wall']:>8.3f} {med['cpu']:>8.3f} "
              f"{med['peak_kib'] / 1024:>12.1f} {row['base_kib'] / 1024:>12.1f} {row['time']:>12.6f} "
              f"{row['busbw'] / 1e9:>11.3f} {error:>11.2e}")


if __name__ == "__main__":
    main()
