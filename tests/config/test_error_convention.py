"""One error convention: user-reachable errors are ConfigErrors carrying field, value, rule and fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from commsim.collectives import Schedule, Step
from commsim.compression._bits import pack_bits, varint_encode
from commsim.compression._payload import DeltaVarint
from commsim.config import validate
from commsim.errors import ConfigError
from commsim.systems import get_study
from commsim.units import parse_quantity
from commsim.workloads.models import TransformerSpec

PACKAGE = Path(__file__).resolve().parents[2] / "commsim"

def test_no_bare_value_error_is_raised_in_the_package() -> None:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        count = len(re.findall(r"raise ValueError\b", path.read_text(encoding="utf-8")))
        if count:
            found[path.relative_to(PACKAGE).as_posix()] = count
    assert found == {}, f"raise a CommsimError subclass (commsim/errors.py) instead: {found}"


def _refusal(model: type, data: dict, prefix: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        validate(model, data, prefix=prefix)
    return caught.value


def test_a_validator_error_keeps_its_value_rule_and_fix_under_the_field_path() -> None:
    study = get_study("streaming_diloco")
    with pytest.raises(ConfigError) as caught:
        study.parse({"inner_steps": 10, "overlap_steps": 10})
    error = caught.value
    assert error.field == "workload.params.overlap_steps"
    assert error.value == 10
    assert error.rule.startswith("(tau) is not below inner_steps (H) = 10")
    assert error.fix == "give an overlap of at most 9 inner steps, or raise inner_steps"
    assert "Fix: " not in error.rule


def test_a_bad_compressor_spec_names_the_part_of_the_spec_that_is_wrong() -> None:
    with pytest.raises(ConfigError) as caught:
        get_study("compressed_dp").parse({"compressors": [{"spec": "topk:ratio=2"}]})
    error = caught.value
    assert error.field == "workload.params.compressors[0].spec"
    assert error.value == "topk:ratio=2"
    assert error.rule.startswith("topk.ratio = 2: must be in (0, 1]")
    assert error.fix.startswith("give a fraction")


def test_a_model_file_rule_is_a_structured_error() -> None:
    error = _refusal(TransformerSpec, {"name": "m", "layers": 2, "hidden": 64, "heads": 8, "kv_heads": 3,
                                       "ffn_hidden": 256, "vocab": 100, "max_seq_len": 128})
    assert (error.field, error.value) == ("kv_heads", 3)
    assert error.rule.startswith("must divide heads (8)")
    assert error.fix == "give a divisor of 8, e.g. 8 or 1"


def test_a_malformed_schedule_is_refused_naming_the_step() -> None:
    one = np.array([0])
    steps = [Step(src=one, dst=np.array([5]), nbytes=np.array([8.0]))]
    with pytest.raises(ConfigError) as caught:
        Schedule("all_reduce", "custom", 4, 8.0, steps).check()
    assert caught.value.field == "steps[0].dst"
    assert "outside 0..3" in caught.value.rule


@pytest.mark.parametrize(("call", "field"), [
    (lambda: pack_bits(torch.tensor([1]), 0), "width"),
    (lambda: varint_encode(torch.tensor([-1])), "values"),
    (lambda: DeltaVarint().encode(torch.tensor([3, 1])), "indices"),
    (lambda: parse_quantity("1 s", "weight"), "kind"),
])
def test_library_calls_with_bad_arguments_raise_config_errors(call, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()
    assert caught.value.field == field
    assert caught.value.fix
