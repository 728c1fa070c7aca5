"""Start-up: `import commsim` and `commsim --help` load only what they need; the public API is unchanged."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "plotly", "networkx", "torch", "dask", "scipy", "pyarrow")
PACKAGES = ["commsim", "commsim.collectives", "commsim.compression", "commsim.devices", "commsim.faults",
            "commsim.kernel", "commsim.network", "commsim.results", "commsim.scenario", "commsim.views",
            "commsim.workloads"]


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith("commsim.systems"))


def test_bare_import_loads_no_heavy_library_and_no_commsim_module():
    modules = _modules_after("import commsim")
    assert _heavy(modules) == []
    assert [m for m in modules if m.startswith("commsim")] == ["commsim", "commsim._lazy"]


def test_help_loads_no_heavy_library_and_no_study():
    modules = _modules_after("from commsim.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert "commsim.cli._run" in modules  # the commands were registered
    assert _heavy(modules) == []


def test_simulating_a_collective_does_not_load_pandas():
    modules = _modules_after("import commsim\ncommsim.simulate_collective('switch:4,50GB/s,500ns', 'all_reduce', 2**20)")
    assert "pandas" not in modules


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_defining_object(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        if name == "__version__":
            continue
        value = getattr(module, name)
        origin = getattr(value, "__module__", None)
        if origin is not None and origin.startswith("commsim"):
            # the same object as in the module that defines it, not a copy
            assert getattr(importlib.import_module(origin), name, value) is value
    assert set(module.__all__) <= set(dir(module))


def test_from_import_and_submodule_attributes_work():
    import commsim
    from commsim import Simulation, simulate_collective
    from commsim.simulation import Simulation as Defined

    assert Simulation is Defined and callable(simulate_collective)
    assert commsim.collectives.ring.ring_all_reduce(4, 4096.0).ranks == 4  # submodule read as an attribute


def test_an_unknown_name_is_an_attribute_error():
    import commsim

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = commsim.no_such_name
    assert not hasattr(commsim.kernel, "NoSuchKernel")


def test_simulating_a_collective_loads_no_heavy_library():
    """The shell what-if path (topology shorthand, schedule, kernel) needs neither networkx nor pandas."""
    code = "from commsim.collectives import simulate_collective\nsimulate_collective('switch:8', 'all_reduce', 2**20)"
    assert _heavy(_modules_after(code)) == []
