"""PCIe path types between a GPU and its NIC, in NCCL's vocabulary (``src/graph/paths.cc``, ``topo.h``).

NCCL classifies the path between two PCIe endpoints by the farthest element it
crosses, best first:

* ``PIX``: one PCIe switch (GPU and NIC behind the same switch);
* ``PXB``: several PCIe switches, no CPU;
* ``PHB``: through the CPU's PCIe host bridge (GPU and NIC on root ports of one CPU);
* ``SYS``: across the link between CPU sockets.

NCCL's tuner reads it: LL128 is enabled across servers only up to ``PXB`` (``PXN``
on Hopper), so a GPU whose NIC sits behind the host bridge runs LL and Simple only
(``src/graph/tuning.cc``). A NIC node of a topology records the path to the GPUs it
serves in its ``gpu_path`` attribute; a NIC without one counts as ``PIX``.

>>> path_worse_than("PHB", "PXB"), path_worse_than("PIX", "PXB")
(True, False)
"""

from __future__ import annotations

from typing import Literal

from commsim.errors import TopologyError

__all__ = ["DEFAULT_GPU_PATH", "GPU_PATHS", "GpuPath", "path_worse_than", "validate_gpu_path"]

GpuPath = Literal["PIX", "PXB", "PHB", "SYS"]
GPU_PATHS: tuple[str, ...] = ("PIX", "PXB", "PHB", "SYS")
"""NCCL's GPU-NIC path types, nearest first."""

DEFAULT_GPU_PATH = "PIX"
"""The path of a NIC that states none: GPU and NIC behind one PCIe switch (HGX servers)."""


def validate_gpu_path(path: str, field: str = "gpu_path") -> str:
    """``path`` if it is one of :data:`GPU_PATHS`, else a :class:`TopologyError`."""
    if path not in GPU_PATHS:
        raise TopologyError(field=field, value=path, rule="is not an NCCL PCIe path type",
                            fix=f"use one of {', '.join(GPU_PATHS)} (PHB: GPU and NIC on the CPU's root ports)")
    return path


def path_worse_than(path: str, limit: str) -> bool:
    """Whether ``path`` crosses more than ``limit`` (both in :data:`GPU_PATHS`)."""
    return GPU_PATHS.index(validate_gpu_path(path)) > GPU_PATHS.index(validate_gpu_path(limit, "limit"))
