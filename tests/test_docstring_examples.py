"""Docstring examples: run once by ``pytest --doctest-modules`` over the package (see pyproject.toml).

This file checks only that the modules documented by example keep their examples
(a doctest run cannot notice examples that were deleted).
"""

from __future__ import annotations

import doctest
import importlib

import pytest

DOCUMENTED_BY_EXAMPLE = [
    "commsim.errors", "commsim.units", "commsim.config", "commsim.kernel.maxmin", "commsim.kernel.fluid",
    "commsim.network.topology", "commsim.network.generators", "commsim.network.routing", "commsim.network.network",
    "commsim.network.loader", "commsim.network.inter_node", "commsim.devices.spec", "commsim.devices.memory", "commsim.devices.device",
    "commsim.faults.model", "commsim.simulation", "commsim.paths", "commsim.collectives.api",
    "commsim.collectives.closed_form", "commsim.collectives.ring", "commsim.collectives._pipeline",
    "commsim.collectives.tree", "commsim.collectives.halving_doubling", "commsim.collectives.all_to_all",
    "commsim.collectives.star", "commsim.collectives.hierarchical", "commsim.workloads", "commsim.workloads.models",
    "commsim.workloads._gemm", "commsim.workloads.trace", "commsim.workloads._index", "commsim.workloads._validate",
    "commsim.workloads._training", "commsim.workloads._inference", "commsim.workloads.generators",
    "commsim.workloads._schedule", "commsim.workloads._moe", "commsim.workloads._activations",
    "commsim.workloads._memory", "commsim.workloads._costs", "commsim.workloads.sources",
    "commsim.collectives.nccl_tests", "commsim.collectives.nccl", "commsim.collectives.nccl_run",
    "commsim.collectives.calibrate", "commsim.collectives.nvls", "commsim.collectives.sendrecv",
    "commsim.network.dragonfly", "commsim.compression", "commsim.compression._bits", "commsim.compression._counting", "commsim.compression._huffman",
    "commsim.compression._payload", "commsim.compression._dense", "commsim.compression._quantize",
    "commsim.compression._stochastic", "commsim.compression._sign", "commsim.compression._sparse",
    "commsim.compression._feedback", "commsim.compression._powersgd", "commsim.compression._kmeans",
    "commsim.compression._registry", "commsim.compression._sources", "commsim.compression._evaluate",
    "commsim.views.accounting", "commsim.systems.c4.planner", "commsim.systems.c4.traffic",
    "commsim.systems.c4.layout", "commsim.systems.c4.model", "commsim.systems.streaming_diloco.params",
    "commsim.systems.streaming_diloco.layout", "commsim.systems.streaming_diloco.schedule",
    "commsim.systems.streaming_diloco.workload", "commsim.systems.streaming_diloco.analysis",
    "commsim.systems.compressed_dp.params", "commsim.workloads.data_parallel",
    "commsim.systems.compressed_dp.regimes",
    "commsim.systems.compressed_dp.schedules", "commsim.systems.compressed_dp.plan",
    "commsim.systems.tpi_llm.hardware", "commsim.systems.tpi_llm.partition",
    "commsim.systems.tpi_llm.scheduler", "commsim.systems.tpi_llm.allreduce", "commsim.systems.tpi_llm.params",
    "commsim.systems.tpi_llm.plans", "commsim.systems.t3.tiling",
    "commsim.systems.t3.ring", "commsim.systems.t3.shapes", "commsim.systems.t3.params",
    "commsim.systems.t3.interference", "commsim.systems.t3.knobs", "commsim.systems.t3.calibration",
    "commsim.workloads.steady_state", "commsim.workloads.periodic", "commsim.workloads.issue_order", "commsim.collectives.kary_tree", "commsim.network.shipped",
    "commsim.shared_data", "commsim.validators", "commsim.systems._study", "commsim.extras",
]


@pytest.mark.parametrize("name", DOCUMENTED_BY_EXAMPLE)
def test_the_module_keeps_its_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    examples = sum(len(test.examples) for test in doctest.DocTestFinder().find(module))
    assert examples > 0, f"{name} has no docstring examples any more"
