"""The examples in the docstrings of the foundation modules run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "commsim.errors",
    "commsim.units",
    "commsim.config",
    "commsim.kernel.maxmin",
    "commsim.kernel.fluid",
    "commsim.network.topology",
    "commsim.network.generators",
    "commsim.network.routing",
    "commsim.network.network",
    "commsim.network.loader",
    "commsim.devices.spec",
    "commsim.devices.presets",
    "commsim.devices.memory",
    "commsim.devices.device",
    "commsim.faults.model",
    "commsim.faults.injector",
    "commsim.results.recorder",
    "commsim.results.result",
    "commsim.simulation",
    "commsim.paths",
]
WITHOUT_EXAMPLES = {"commsim.devices.presets", "commsim.faults.injector", "commsim.results.recorder",
                    "commsim.results.result"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    if name not in WITHOUT_EXAMPLES:
        assert result.attempted > 0, f"{name} has no examples any more"
