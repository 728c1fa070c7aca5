"""The compiled solver loops: loaded only when a solve needs them, cached on disk, and usable without a cache."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import simpy

from commsim.kernel import FluidKernel


def _numba_loaded_after(code: str) -> bool:
    probe = f"{code}\nimport json, sys\nprint(json.dumps('numba' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_numba_is_imported_by_the_first_shared_solve_only():
    setup = ("import simpy\nfrom commsim.kernel import FluidKernel\nenv = simpy.Environment()\n"
             "kernel = FluidKernel(env)\nr = kernel.add_resources([1.0, 1.0], ['a', 'b'])\n")
    assert not _numba_loaded_after("import commsim\nimport commsim.kernel")
    # activities on resources nobody else uses take the disjoint fast path (collective steps): no numba
    assert not _numba_loaded_after(setup + "kernel.start([1.0, 1.0], [[0], [1]])\nenv.run()")
    assert _numba_loaded_after(setup + "kernel.start([1.0, 1.0], [[0], [0, 1]])\nenv.run()")


def test_compiled_functions_are_cached_on_disk():
    from commsim.kernel import compiled

    env = simpy.Environment()
    kernel = FluidKernel(env, verify=True)
    kernel.add_resources([1.0, 2.0], ["a", "b"])
    kernel.start([1.0, 2.0, 3.0], [[0], [0, 1], [1]])
    env.run()
    for function in (compiled.fill, compiled.local_update, compiled.component_problem, compiled.apply_rates):
        assert type(function.dispatcher._cache).__name__ == "FunctionCache", function  # NullCache: recompiled each run


def test_an_interrupt_inside_a_compiled_call_stays_a_keyboard_interrupt():
    # numba reports a KeyboardInterrupt raised while it loads cached code as a SystemError caused by it
    from commsim.kernel.compiled import _interruptible

    def loading_cached_code(*args):
        raise SystemError("returned a result with an exception set") from KeyboardInterrupt()

    def broken(*args):
        raise SystemError("something else")

    with pytest.raises(KeyboardInterrupt):
        _interruptible(loading_cached_code)(1)
    with pytest.raises(SystemError, match="something else"):
        _interruptible(broken)(1)


def test_without_a_usable_cache_directory_functions_compile_in_memory_with_a_warning():
    # a function without a source file has no cache locator, as when no cache directory is writable
    from commsim.kernel.compiled import _compiled

    namespace: dict = {}
    exec("def spread(x):\n    return x.max() - x.min()\n", namespace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spread = _compiled(namespace["spread"])
    assert spread(np.array([3.0, -1.0, 2.0])) == 4.0
    assert any("NUMBA_CACHE_DIR" in str(w.message) for w in caught)
    assert type(spread._cache).__name__ == "NullCache"
