"""Explicit registries: studies and validation areas are listed, not registered by importing a module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from commsim.errors import ConfigError
from commsim.systems import STUDIES, Study, get_study, study_names
from commsim.validators import VALIDATORS, run_validation


def _modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_listed_study_loads_under_its_own_name(name: str) -> None:
    study = get_study(name)
    assert isinstance(study, Study)
    assert study.name == name
    assert get_study(name) is study  # one instance per process


def test_every_study_is_a_validation_area_after_the_foundation_ones() -> None:
    areas = list(VALIDATORS)
    assert areas[:2] == ["kernel", "collectives"]
    assert areas[-len(STUDIES):] == study_names()


def test_importing_the_systems_package_imports_no_study() -> None:
    modules = _modules_after("import commsim.systems")
    assert [m for m in modules if m.startswith("commsim.systems.")] == ["commsim.systems._study"]


def test_the_check_module_imports_neither_studies_nor_areas() -> None:
    # studies build their rows with commsim.validation: it must not lead back to them (the old import circle)
    modules = _modules_after("import commsim.validation")
    assert not [m for m in modules if m.startswith("commsim.systems") or m == "commsim.validators"]


def test_importing_a_study_does_not_add_it_anywhere() -> None:
    modules = _modules_after("import commsim.systems.t3.study")
    assert "commsim.validators" not in modules


def test_an_unknown_study_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        get_study("t4")
    assert caught.value.field == "workload.study"
    assert "t3" in caught.value.fix


def test_an_unknown_area_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        run_validation(["kernal"])
    assert caught.value.field == "--only"
    assert "kernel" in caught.value.fix
