"""``commsim validate`` areas of the NCCL model: one per cluster with shared nccl-tests measurements.

Each area simulates every size of every log of its cluster with the calibration
shipped beside the cluster's topology and reports, per log, the median |busbw
error| over sizes >= 1 MiB (``measured time / simulated time - 1``). Logs the
calibration was fitted on are marked *fitted* (tolerance 5 %); the logs of the
largest scale are also predicted by a fit to the smaller scales alone
(leave-one-scale-out, closed form, tolerance 10 %): those rows are predictions.
Areas whose data set is absent report skipped rows saying where they looked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from commsim.network.shipped import topologies_folder
from commsim.shared_data import SHARED_DATA_VARIABLE, shared_data_folder
from commsim.validation import Check

__all__ = ["NCCL_CLUSTERS", "PREDICTION_MULTIPLES", "PREDICTION_SIZES", "NcclCluster", "cluster_checks",
           "predict_scales"]

FIT_TOLERANCE = 0.05
PREDICTION_TOLERANCE = 0.10


@dataclass(frozen=True)
class NcclCluster:
    """A cluster with measured logs: its shared data folder and topology file (calibration beside it)."""

    name: str
    folder: str
    description: str

    @property
    def topology(self) -> Path:
        return topologies_folder() / f"{self.name}.yaml"

    @property
    def calibration(self) -> Path:
        return topologies_folder() / f"{self.name}.calibration.yaml"

    @property
    def data(self) -> Path:
        return shared_data_folder(self.folder)


NCCL_CLUSTERS: dict[str, NcclCluster] = {c.name: c for c in (
    NcclCluster("azure_ndv4", "nccl-tests-azure-ndv4-a100", "Azure ND A100 v4, all-reduce on 1-16 GPUs"),
    NcclCluster("alcf_polaris", "nccl-tests-alcf-polaris-a100",
                "ALCF Polaris (A100, Slingshot dragonfly), all-reduce/all-gather/all-to-all on 8 and 32 GPUs"),
    NcclCluster("h100_cluster01", "nccl-tests-h100-cluster01",
                "10-node H100 cluster, five collectives on 1x4, 1x8, 10x1, 10x2 GPUs"),
    NcclCluster("h100_ib400_8node", "nccl-tests-h100-ib400-8node", "8-node H100 on 400 Gb/s IB, all-reduce on 16 GPUs"),
)}
"""The clusters with shared nccl-tests logs, by topology name."""


def _median(rows: pd.DataFrame) -> tuple[float, float, int]:
    big = rows[rows["size"] >= 2**20]
    errors = np.abs(big["error"].to_numpy())
    return float(np.median(errors)), float(errors.max()), len(big)


def cluster_checks(name: str) -> list[Check]:
    """The checks of cluster ``name``: fitted logs (simulated) and leave-one-scale-out predictions (closed form)."""
    from commsim.collectives.calibrate import compare_simulation, leave_scale_out, load_calibration, refit_start
    from commsim.collectives.nccl_tests import read_nccl_tests
    from commsim.config import load_yaml

    cluster = NCCL_CLUSTERS[name]
    area = f"nccl:{name}"
    paths = sorted(cluster.data.glob("*.log"))
    if not paths or not cluster.calibration.is_file():
        return [Check(area, "median |busbw error| over sizes >= 1 MiB per log", 0.0, float("nan"), FIT_TOLERANCE,
                      relative=False, detail=f"not applicable: measured logs not found in {cluster.data} (set {SHARED_DATA_VARIABLE})",
                      skipped=True)]
    logs = [read_nccl_tests(p) for p in paths]
    params = load_calibration(cluster.calibration)
    fitted_on = set(load_yaml(cluster.calibration).get("fitted_on", []))
    table = compare_simulation(logs, cluster.topology, params)
    rows = []
    for log in logs:
        median, worst, sizes = _median(table[table["log"] == log.name])
        # the shipped calibration names the logs it was fitted on
        fitted = "fitted" if log.name in fitted_on else "not fitted"
        rows.append(Check(area, f"{log.name} ({fitted}): median |busbw error|, sizes >= 1 MiB", 0.0, median,
                          FIT_TOLERANCE, relative=False,
                          detail=f"{log.op}, {log.servers} x {log.ranks_per_server} GPUs, {sizes} sizes, worst "
                                 f"{worst:.1%}; simulated with {cluster.calibration.name}"))
    if len({log.ranks for log in logs}) > 1:
        held = leave_scale_out(logs, cluster.topology, initial=refit_start(params))
        smaller = sorted({log.ranks for log in logs} - {int(held["ranks"].max())})
        for log_name, part in held.groupby("log", sort=False):
            median, worst, sizes = _median(part)
            bounds = str(part["bounds"].iloc[0])
            rows.append(Check(area, f"{log_name} (predicted from {', '.join(map(str, smaller))} GPUs): median "
                                    "|busbw error|, sizes >= 1 MiB", 0.0, median, PREDICTION_TOLERANCE,
                              relative=False,
                              detail=f"leave-one-scale-out, closed form; {sizes} sizes, worst {worst:.1%}"
                                     + (f"; that fit has {bounds}" if bounds else "")))
    return rows


PREDICTION_MULTIPLES: tuple[int, ...] = (2, 4, 16)
"""Multiples of a cluster's largest measured scale its calibration is asked to predict."""

PREDICTION_SIZES: tuple[float, ...] = (64.0 * 2**20, 2.0**30)
"""Message sizes of the prediction table, bytes (a mid size and 1 GiB)."""


def predict_scales(name: str, multiples: tuple[int, ...] = PREDICTION_MULTIPLES,
                   sizes: tuple[float, ...] = PREDICTION_SIZES) -> pd.DataFrame:
    """Predicted busbw of every collective measured on cluster ``name`` at ``multiples`` of its largest scale.

    The largest measured log of each collective sets the layout (GPUs per server);
    its server count is multiplied, so ``16`` means 16 times as many servers with
    the same GPUs each. Times come from the NCCL model's closed form under the
    calibration beside the topology, with NCCL's tuner picking algorithm and
    protocol (``commsim collective --estimate``). Columns: ``cluster``, ``op``,
    ``measured_gpus``, ``multiple``, ``gpus``, ``servers``, ``size`` (bytes),
    ``choice``, ``busbw_Bps``. Needs the shared logs (to know the measured scale).
    """
    from commsim.collectives.calibrate import load_calibration, topology_for
    from commsim.collectives.closed_form import bus_factor
    from commsim.collectives.nccl import describe_cluster, tune
    from commsim.collectives.nccl_run import spread_group
    from commsim.collectives.nccl_tests import NcclTestsLog, read_nccl_tests
    from commsim.errors import ConfigError

    cluster = NCCL_CLUSTERS[name]
    paths = sorted(cluster.data.glob("*.log"))
    if not paths:
        raise ConfigError(field="cluster", value=name, rule=f"has no measured logs in {cluster.data}",
                          fix=f"check out the shared data or set {SHARED_DATA_VARIABLE}")
    largest: dict[str, NcclTestsLog] = {}
    for log in (read_nccl_tests(p) for p in paths):
        if log.ranks > 1 and (log.op not in largest or log.ranks > largest[log.op].ranks):
            largest[log.op] = log
    params = load_calibration(cluster.calibration)
    rows = []
    for op, log in largest.items():
        for multiple in multiples:
            servers = log.servers * multiple
            ranks = log.ranks * multiple
            topo = topology_for(cluster.topology, servers)
            shape = describe_cluster(topo, spread_group(topo, ranks, servers))
            for size in sizes:
                choice = tune(shape, op, size, params)
                rows.append({"cluster": name, "op": op, "measured_gpus": log.ranks,
                             "multiple": multiple, "gpus": ranks, "servers": servers, "size": int(size),
                             "choice": f"{choice.algorithm}/{choice.protocol}",
                             "busbw_Bps": size / choice.time * bus_factor(op, ranks)})
    return pd.DataFrame(rows)
