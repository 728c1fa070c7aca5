"""Shared input rules: finite numbers, whole message sizes, size limits with an escape hatch, and output
locations checked before any work."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from commsim.config import StrictModel, validate
from commsim.errors import ConfigError, TopologyError, UnitError
from commsim.limits import MAX_TOPOLOGY_NODES, allow_large, check_limit
from commsim.network import Topology
from commsim.network.loader import load_topology
from commsim.paths import output_dir, output_file
from commsim.units import parse_quantity, parse_size_range


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e400, "1e400 GB/s", "1e400"])
def test_non_finite_quantities_are_refused(value):
    with pytest.raises(UnitError, match="is not finite"):
        parse_quantity(value, "bandwidth", field="links[0].bandwidth")


class _Knob(StrictModel):
    factor: float = 1.0


@pytest.mark.parametrize("value", [math.inf, math.nan, "inf", "nan"])
def test_input_models_refuse_non_finite_floats(value):
    with pytest.raises(ConfigError, match=r"factor.*is not finite"):
        validate(_Knob, {"factor": value})


def test_an_infinite_latency_never_reaches_the_kernel():
    topo = Topology("t")
    topo.add_node("a", "device", device="h100_sxm")
    topo.add_node("b", "device", device="h100_sxm")
    with pytest.raises(TopologyError, match="finite"):
        topo.add_link("a", "b", bandwidth=1e9, latency=math.inf)
    with pytest.raises(ConfigError, match="not finite"):
        load_topology("switch:4,50GB/s,1e400 s")


@pytest.mark.parametrize(("text", "words"), [("0.5", "whole number of bytes"), ("0", "whole number of bytes"),
                                             ("1MiB,,2MiB", "empty size"), ("0.5:4", "whole number of bytes"),
                                             ("1B:1PiB:x1.00001", "above the limit of 10,000")])
def test_message_sizes_are_whole_bytes_and_ranges_stay_small(text, words):
    with pytest.raises(UnitError, match=words):
        parse_size_range(text, field="--sizes")


def test_size_ranges_still_expand_as_before():
    assert parse_size_range("1KiB:4KiB") == [1024.0, 2048.0, 4096.0]
    assert parse_size_range("8,1MiB") == [8.0, 2.0**20]


def test_a_size_limit_names_the_estimate_and_force_lifts_it():
    with pytest.raises(ConfigError) as caught:
        check_limit("topology.params.n", 10**7, 2 * 10**7, MAX_TOPOLOGY_NODES, "nodes and links")
    assert "20,000,000 nodes and links" in str(caught.value) and "--force" in str(caught.value)
    with allow_large():
        check_limit("topology.params.n", 10**7, 2 * 10**7, MAX_TOPOLOGY_NODES, "nodes and links")
    with pytest.raises(ConfigError, match="would build about"):
        load_topology("fat_tree:k=1000")


def test_output_locations_are_created_or_refused(tmp_path: Path):
    assert output_dir(tmp_path / "a" / "b", field="-o").is_dir()
    assert output_file(tmp_path / "c" / "t.csv", field="--csv").parent.is_dir()
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is an existing file, not a directory"):
        output_dir(afile, field="-o")
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        output_file(tmp_path, field="--csv")
    with pytest.raises(ConfigError, match="its folder '/dev/null'"):
        output_file("/dev/null/x.csv", field="--csv")
    assert afile.read_text() == "x"  # an existing file is not touched until the command writes it
    assert output_file(afile, field="--csv") == afile and afile.read_text() == "x"
