"""Print the NCCL prediction table: busbw at 64 MiB and 1 GiB for every cluster x collective at 2x, 4x and 16x the
largest scale measured in ../shared/data.

Run: ``python benchmarks/bench_nccl_predict.py [--csv predictions.csv]``.
Each cluster's calibration (beside its topology) predicts, with NCCL's tuner
picking algorithm and protocol in the model's closed form (as ``commsim collective
--estimate``), the collectives its logs measured, on servers multiplied by 2, 4
and 16 with the GPUs per server of the largest log. Also reports the wall time.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from commsim.collectives.nccl_validation import NCCL_CLUSTERS, predict_scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args()
    start = time.perf_counter()
    table = pd.concat([predict_scales(name) for name in NCCL_CLUSTERS], ignore_index=True)
    wall = time.perf_counter() - start
    table["busbw_GBps"] = (table["busbw_Bps"] / 1e9).round(1)
    wide = table.pivot_table(index=["cluster", "op", "measured_gpus", "size"], columns="gpus", values="busbw_GBps",
                             aggfunc="first")
    print("| cluster | collective | measured GPUs | size | 2x | 4x | 16x |")
    print("|---|---|---|---|---|---|---|")
    for (cluster, op, measured, size), row in wide.iterrows():
        cells = [f"{row[g]:.1f} ({g})" for g in sorted(g for g in row.index if pd.notna(row[g]))]
        label = "1 GiB" if size == 2**30 else f"{size // 2**20} MiB"
        print(f"| {cluster} | {op} | {measured} | {label} | {' | '.join(cells)} |")
    print(f"\nbusbw in GB/s (GPUs in brackets); algorithm/protocol per row in --csv; {wall:.1f} s wall, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
