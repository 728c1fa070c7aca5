"""Paths of the NCCL test data: the measured nccl-tests logs of four clusters, their topologies and calibrations.

The logs live in ``../shared/data`` beside the repository (read there, never copied); a test that needs a data
set that is absent is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DATA = SHARED / "nccl-tests-azure-ndv4-a100"
TOPOLOGY = REPO / "topologies" / "azure_ndv4.yaml"
CALIBRATION = REPO / "topologies" / "azure_ndv4.calibration.yaml"
GPUS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class ClusterData:
    """One cluster: its shared data folder, topology and shipped calibration."""

    name: str
    folder: str
    topology: Path
    calibration: Path

    @property
    def data(self) -> Path:
        return SHARED / self.folder

    def logs(self) -> list[Path]:
        """Every log of the cluster, sorted (skips the test when the data set is absent)."""
        found = sorted(self.data.glob("*.log"))
        if not found:
            pytest.skip(f"measured nccl-tests logs not found at {self.data} (the shared data set is not checked out)")
        return found


def _cluster(name: str, folder: str) -> ClusterData:
    return ClusterData(name, folder, REPO / "topologies" / f"{name}.yaml",
                       REPO / "topologies" / f"{name}.calibration.yaml")


CLUSTERS = {c.name: c for c in (_cluster("azure_ndv4", "nccl-tests-azure-ndv4-a100"),
                                 _cluster("alcf_polaris", "nccl-tests-alcf-polaris-a100"),
                                 _cluster("h100_cluster01", "nccl-tests-h100-cluster01"),
                                 _cluster("h100_ib400_8node", "nccl-tests-h100-ib400-8node"))}
"""The four clusters with shared measurements, by topology name."""


def log_path(gpus: int) -> Path:
    """The measured Azure log of ``gpus`` GPUs (the test is skipped when the data set is absent)."""
    path = DATA / f"all_reduce_{gpus}gpu.log"
    if not path.is_file():
        pytest.skip(f"measured nccl-tests logs not found at {DATA} (the shared data set is not checked out)")
    return path


def spread_cluster(topology: Path, servers: int, per: int):
    """The NCCL model's view of ``servers x per`` ranks spread evenly over ``servers`` servers of ``topology``."""
    from commsim.collectives.calibrate import topology_for
    from commsim.collectives.nccl import describe_cluster
    from commsim.collectives.nccl_run import spread_group

    topo = topology_for(topology, servers)
    return describe_cluster(topo, spread_group(topo, servers * per, servers))
