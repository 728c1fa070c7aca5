"""Package data: topologies, the model catalog and calibrations are read from the package, not the checkout."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import commsim
from commsim.errors import ConfigError
from commsim.network.loader import load_topology
from commsim.network.shipped import calibration_beside, shipped_topologies, topologies_folder, topology_file
from commsim.validators import run_validation
from commsim.workloads.models import CATALOG_DIR, catalog_names, load_model

PACKAGE = Path(commsim.__file__).resolve().parent


def test_version_comes_from_the_package_metadata() -> None:
    assert commsim.__version__ == importlib.metadata.version("commsim")


def test_topologies_and_catalog_live_inside_the_package() -> None:
    assert topologies_folder().resolve().is_relative_to(PACKAGE)
    assert CATALOG_DIR.resolve().is_relative_to(PACKAGE)
    assert {"dgx_a100", "dgx_h100", "h800_cluster_512", "azure_ndv4"} <= set(shipped_topologies())
    assert not [name for name in shipped_topologies() if name.endswith(".calibration")]
    assert "gpt3-175b" in catalog_names()


@pytest.mark.parametrize("spelling", ["dgx_a100", "dgx_a100.yaml", "topologies/dgx_a100.yaml"])
def test_a_shipped_topology_is_found_by_name_from_any_directory(spelling: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert topology_file(spelling) == topologies_folder() / "dgx_a100.yaml"
    assert load_topology(spelling).name == "dgx-a100"
    assert calibration_beside(spelling) == topologies_folder() / "dgx_a100.calibration.yaml"


def test_a_file_at_the_given_path_wins_over_a_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "topologies").mkdir()
    (tmp_path / "topologies" / "dgx_a100.yaml").write_text("name: mine\ngenerator: ring\nparams: {n: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert load_topology("topologies/dgx_a100.yaml").name == "mine"
    assert calibration_beside("topologies/dgx_a100.yaml") is None  # none beside the user's file


@pytest.mark.parametrize("spelling", ["no_such_cluster.yaml", "topologies/no_such_cluster.yaml", "no_such_cluster"])
def test_an_unknown_topology_name_lists_the_shipped_ones(spelling: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_topology(spelling)
    assert caught.value.field == "topology"
    assert "dgx_h100" in caught.value.fix


def test_an_absolute_missing_path_is_not_replaced_by_a_shipped_file(tmp_path: Path) -> None:
    assert topology_file(tmp_path / "topologies" / "dgx_a100.yaml") is None


def test_the_catalog_is_read_outside_the_checkout(tmp_path: Path) -> None:
    code = "from commsim.workloads.models import load_model; print(load_model('llama-2-7b').layers)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(load_model("llama-2-7b").layers) == "32"


def test_validation_areas_without_shared_data_say_not_applicable(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMSIM_SHARED_DATA", str(tmp_path))
    monkeypatch.delenv("COMMSIM_MEGATRON_DATA", raising=False)
    table = run_validation(["nccl:azure_ndv4", "megatron"])
    assert table["status"].tolist() == ["skipped", "skipped"]
    assert all(detail.startswith("not applicable: ") and str(tmp_path) in detail for detail in table["detail"])
