"""The examples in the workloads docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["commsim.workloads", "commsim.workloads.models", "commsim.workloads._gemm", "commsim.workloads.trace",
           "commsim.workloads._index", "commsim.workloads._validate", "commsim.workloads._dtypes",
           "commsim.workloads._training", "commsim.workloads._inference", "commsim.workloads.generators",
           "commsim.workloads._schedule", "commsim.workloads._moe", "commsim.workloads._activations",
           "commsim.workloads._memory", "commsim.workloads._costs", "commsim.workloads.sources"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0 or name in {"commsim.workloads._dtypes"}
