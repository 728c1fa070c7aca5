"""Time ``commsim collective`` over 1 KiB-8 GiB (24 sizes) on 2,048 GPUs of the Polaris dragonfly.

Run: ``python benchmarks/bench_nccl_dragonfly.py [--servers 512] [--op all_reduce]``.
Runs the real command line in a subprocess twice: simulated (the NCCL tuner's
choice for every size, each size simulated alone, one after another in one
simulation) and ``--estimate`` (the closed form only). Reports wall and CPU time
of each and the machine's load average (the numbers are from a shared machine).
Targets: simulated <= 30 s; ``--estimate`` instant (about the import time).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "commsim", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=512, help="Polaris nodes (4 GPUs each)")
    parser.add_argument("--op", default="all_reduce")
    args = parser.parse_args()
    common = ["collective", "-t", "topologies/alcf_polaris.yaml", "--servers", str(args.servers), "--op", args.op,
              "--sizes", "1KiB:8GiB"]
    print(f"{args.op} on {4 * args.servers} GPUs ({args.servers} nodes), 24 sizes; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    for label, extra in (("simulated", []), ("--estimate", ["--estimate"])):
        wall, cpu = _run(common + extra)
        print(f"  {label:>10}: {wall:6.2f} s wall, {cpu:6.2f} s CPU")


if __name__ == "__main__":
    main()
