"""Scenario faults reach every workload that runs on the network, are checked against the topology
before anything runs, and are refused (not dropped) for studies that do not apply them."""

from __future__ import annotations

import pytest

from commsim.errors import ConfigError, StallError
from commsim.scenario import simulate
from commsim.systems import STUDIES, Study


def _collective(**extra):
    return {"name": "c", "topology": "switch:4,50GB/s,500ns",
            "workload": {"kind": "collective", "op": "all_reduce", "sizes": "64MiB"}, **extra}


def test_a_degraded_link_slows_a_collective_workload():
    clean = simulate(_collective()).tables["collective"]["time"].iloc[0]
    slowed = simulate(_collective(faults=[{"kind": "link_degraded", "at": 0, "link": ["gpu0", "sw"],
                                           "factor": 0.25}])).tables["collective"]["time"].iloc[0]
    # the ring runs at the pace of its slowest link: a quarter of the bandwidth, about four times the time
    assert slowed == pytest.approx(4 * clean, rel=0.05)


def test_a_link_that_fails_for_good_stalls_a_collective_and_keeps_the_sizes_done():
    data = _collective(faults=[{"kind": "link_down", "at": "1 ms", "link": ["gpu2", "sw"]}])
    data["workload"]["sizes"] = "1KiB,256MiB"
    with pytest.raises(StallError) as caught:
        simulate(data)
    assert "link sw-gpu2" in str(caught.value)
    assert caught.value.run.tables["collective"]["size"].tolist() == [1024.0]


@pytest.mark.parametrize("kind", ["collective", "traffic"])
def test_a_fault_on_a_link_the_topology_lacks_is_refused_before_running(kind):
    data = _collective(faults=[{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu1"]}])
    if kind == "traffic":
        data["workload"] = {"kind": "traffic", "flows": 4}
    with pytest.raises(ConfigError, match=r"faults\[0\]\.link.*is not a link of the topology"):
        simulate(data)


def test_fault_rates_without_a_horizon_are_refused_for_a_collective():
    with pytest.raises(ConfigError, match="fault_horizon"):
        simulate(_collective(fault_rates={"link_down": "1 /s"}))


class _FaultBlindStudy(Study):
    """A study that builds its own simulations and does not take faults."""

    name = "fault_blind"

    def run(self, params, ctx):
        raise AssertionError("must not run")


def test_faults_given_to_a_study_that_does_not_take_them_are_refused_not_dropped(monkeypatch):
    monkeypatch.setitem(STUDIES, "fault_blind", f"{__name__}:_FaultBlindStudy")   # the registry names module:class
    data = {"name": "s", "topology": "ring:4", "workload": {"kind": "study", "study": "fault_blind", "params": {}},
            "faults": [{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu1"]}]}
    with pytest.raises(ConfigError, match="cannot be applied to a study workload"):
        simulate(data)


def test_an_unknown_timeline_device_is_refused():
    with pytest.raises(ConfigError, match=r"outputs\.timeline_devices\[1\]"):
        simulate(_collective(outputs={"timeline_devices": ["gpu0", "gpu9"]}))


def test_a_training_workload_needing_more_ranks_than_devices_is_refused_before_generating():
    data = {"name": "t", "topology": "switch:8", "workload": {"kind": "training", "model": "open-llama-3b",
                                                              "dp": 10**30}}
    with pytest.raises(ConfigError, match="above the limit"):
        simulate(data)
    data["workload"]["dp"] = 16
    with pytest.raises(ConfigError, match="needs 16 ranks but the topology has 8 devices"):
        simulate(data)
