"""The examples in the docstrings of the NCCL modules run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["commsim.collectives.nccl_tests", "commsim.collectives.nccl", "commsim.collectives.nccl_run",
           "commsim.collectives.calibrate", "commsim.collectives.nvls", "commsim.collectives.sendrecv",
           "commsim.network.dragonfly"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0
