"""A YAML boolean (true/false, yes/no, on/off) is never read as the number 1 or 0."""

from __future__ import annotations

import pytest

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError
from commsim.scenario.spec import scenario_from_dict


class Knobs(StrictModel):
    count: int = 1
    share: float | None = None
    flag: bool = False
    either: int | bool = 0


@pytest.mark.parametrize("field", ["count", "share"])
def test_a_boolean_for_a_number_is_refused_with_its_field(field):
    with pytest.raises(ConfigError, match=rf"^{field} = True: is true/false where a number is expected"):
        validate(Knobs, {field: True})


def test_booleans_stay_valid_where_the_field_admits_them():
    knobs = validate(Knobs, {"flag": True, "either": False, "count": 3, "share": 0.5})
    assert knobs.flag is True and knobs.either is False and knobs.count == 3


@pytest.mark.parametrize(("workload", "field"), [
    ({"kind": "training", "model": "llama-2-7b", "dp": True}, "workload.dp"),
    ({"kind": "inference", "model": "llama-2-7b", "tp": False}, "workload.tp"),
    ({"kind": "traffic", "load": True}, "workload.load"),
])
def test_generator_fields_refuse_yaml_booleans(workload, field):
    with pytest.raises(ConfigError, match=rf"^{field} = (True|False): is true/false where a number"):
        scenario_from_dict({"name": "b", "topology": "switch:8,50GB/s,1us", "workload": workload})


def test_study_parameters_refuse_yaml_booleans(tmp_path):
    from commsim.scenario import simulate

    with pytest.raises(ConfigError, match=r"^workload\.params\.tokens = True: is true/false where a number"):
        simulate({"name": "s", "workload": {"kind": "study", "study": "t3", "params": {"tokens": True}}})
