"""PyTorch and Dask are extras: the core works without them, and a feature needing one says which to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from commsim.errors import MissingExtraError
from commsim.extras import missing_extra, require_extra
from commsim.sweeps import run_tasks

BLOCK = "import sys\nsys.modules['torch'] = None\nsys.modules['distributed'] = None\n"


def _without_extras(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch or distributed fails, as when not installed."""
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=300)


def _output_without_extras(code: str) -> str:
    """What ``code`` prints without the extras (it must succeed)."""
    done = _without_extras(code)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cli_without_extras(*args: str) -> subprocess.CompletedProcess:
    return _without_extras(f"from commsim.cli import main\nmain({list(args)!r})")


def test_compress_without_torch_names_the_extra_and_exits_2() -> None:
    done = _cli_without_extras("compress", "-s", "100")
    assert done.returncode == 2, done.stderr
    text = done.stdout + done.stderr
    assert "pip install 'commsim[torch]'" in text
    assert "Traceback" not in text


def test_the_compressed_dp_study_without_torch_is_a_missing_extra_and_not_a_failed_check() -> None:
    code = ("from commsim.systems import get_study\nfrom commsim.errors import MissingExtraError\n"
            "try:\n    get_study('compressed_dp')\nexcept MissingExtraError as e:\n    print('refused:', e.fix)\n"
            "from commsim.validators import run_validation\n"
            "print('status:', run_validation(['compressed_dp'])['status'].tolist())\n")
    out = _output_without_extras(code)
    assert "refused: pip install 'commsim[torch]'" in out
    assert "status: ['skipped']" in out


def test_the_core_runs_without_torch_and_dask() -> None:
    code = ("import commsim\nrun = commsim.simulate({'name': 'c', 'topology': 'switch:8,50GB/s,500ns', "
            "'workload': {'kind': 'collective', 'sizes': '1GiB'}})\nprint(round(run.metrics['busbw_at_largest'][0] / 1e9))\n"
            "from commsim.systems import get_study\nprint(get_study('streaming_diloco').name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'distributed') and sys.modules[m]))")
    assert _output_without_extras(code).split() == ["50", "streaming_diloco", "[]"]


def test_a_dask_address_without_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError) as caught:
        run_tasks(print, [(1,)], dask="tcp://10.0.0.5:8786", collect=lambda i, r: None)
    assert caught.value.field == "--dask"
    assert caught.value.value == "tcp://10.0.0.5:8786"
    assert caught.value.fix == "pip install 'commsim[dask]'"


def test_an_installed_extra_passes_and_a_foreign_missing_module_is_not_blamed_on_an_extra() -> None:
    require_extra("torch", field="x")
    assert missing_extra(ModuleNotFoundError("no", name="yaml"), field="x") is None
    error = missing_extra(ModuleNotFoundError("no", name="torch.nn"), field="x")
    assert isinstance(error, MissingExtraError) and error.fix == "pip install 'commsim[torch]'"
