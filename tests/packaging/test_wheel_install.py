"""A built wheel works outside the repository: package data, a study scenario and `commsim validate`.

The wheel is built from a copy of the sources, installed without its dependencies into a fresh
virtual environment in a temporary folder, and run from there. The dependencies are the running
environment's (its site-packages is put on the new environment's path by a ``.pth`` line, so nothing
is downloaded; the ``.pth`` files in it are not processed, so the editable checkout stays invisible).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """\
name: installed_study
seed: 0
topology: topologies/two_dc_wan.yaml
workload:
  kind: study
  study: streaming_diloco
  params:
    models: [{model: diloco-1b, label: 1B, step_time: 0.1 s}]
    methods: [data_parallel, streaming_overlap]
    bandwidth_grid: {log10_min: 0, log10_max: 2, points: 3}
    cu_levels: [0.9]
    timeline_periods: 1
outputs:
  tables: csv
"""


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(ROOT / "commsim", source / "commsim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp / "dist",
         source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("commsim-*.whl")
    return wheel


def _fresh_environment(tmp: Path, wheel: Path) -> Path:
    env = tmp / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp)
    python = env / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip()
    Path(site, "running_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
         cwd=tmp)
    return env


@pytest.mark.slow
def test_a_built_wheel_runs_a_study_and_the_validation_outside_the_repository(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"commsim/topologies/dgx_a100.yaml", "commsim/topologies/dgx_a100.calibration.yaml",
            "commsim/workloads/catalog/gpt3-175b.yaml", "commsim/devices/data/a100_40gb.yaml",
            "commsim/py.typed"} <= names

    env = _fresh_environment(tmp_path, wheel)
    work = tmp_path / "work"
    work.mkdir()
    variables = {k: v for k, v in os.environ.items() if not k.startswith("COMMSIM_")}

    where = _run(env / "bin" / "python", "-c", "import commsim; print(commsim.__file__); print(commsim.__version__)",
                 cwd=work, env=variables).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(env.resolve())   # the installed copy, not the checkout
    assert where[1] == importlib.metadata.version("commsim")          # read from the wheel's metadata

    (work / "study.yaml").write_text(SCENARIO)
    _run(env / "bin" / "commsim", "run", "study.yaml", "-o", "out", cwd=work, env=variables)
    assert (work / "out" / "bandwidth_for_cu.csv").read_text().count("\n") >= 2
    assert (work / "out" / "dashboard.html").stat().st_size > 1000

    done = _run(env / "bin" / "commsim", "validate", "--only", "kernel", "--only", "nccl:azure_ndv4", "--csv",
                "checks.csv", cwd=work, env=variables)
    assert "3 passed, 0 failed, 1 skipped" in " ".join(done.stdout.split())
    rows = (work / "checks.csv").read_text()
    assert "not applicable: measured logs not found" in rows
