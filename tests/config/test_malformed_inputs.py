"""Malformed inputs give one clear error naming the field, the value, the rule and the fix."""

from __future__ import annotations

import pytest

from commsim.config import StrictModel, load_yaml, validate
from commsim.devices import device_spec
from commsim.errors import ConfigError, TopologyError, UnitError
from commsim.faults import FaultRates
from commsim.network.generators import switch
from commsim.network.loader import load_topology
from commsim.simulation import Simulation
from commsim.units import parse_quantity, parse_size_range

H100 = {"kind": "device", "device": "h100_sxm"}


def explicit(links, nodes=("a", "b")):
    return {"nodes": [{"name": n, **H100} for n in nodes], "links": links}


def yaml_file(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# (id, builder(tmp_path), exception type, words the message must contain)
CASES = [
    ("negative bandwidth",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "-5 GB/s"}])),
     ConfigError, ["topology.links[0].bandwidth", "'-5 GB/s'", "must be above 0", "Fix: give a value above 0"]),
    ("negative generator bandwidth",
     lambda tmp: load_topology("switch:4,-5GB/s"),
     ConfigError, ["topology.params.bandwidth", "'-5GB/s'", "must be above 0", "Fix:"]),
    ("negative generator latency",
     lambda tmp: load_topology({"generator": "ring", "params": {"n": 4, "latency": "-1 us"}}),
     ConfigError, ["topology.params.latency", "'-1 us'", "must be at least 0", "Fix: give a value at least 0"]),
    ("unknown unit",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 GBs"}])),
     UnitError, ["topology.links[0].bandwidth", "'5 GBs'", "unknown bandwidth unit 'GBs'", "'50 GB/s'"]),
    ("case-confused unit",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 gb/s"}])),
     UnitError, ["links[0].bandwidth", "'5 gb/s'", "unknown bandwidth unit 'gb/s'",
                 "units are case sensitive: b is a bit, B a byte"]),
    ("bandwidth given a size",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 GB"}])),
     UnitError, ["links[0].bandwidth", "'5 GB'", "unknown bandwidth unit 'GB'", "('GB' is a bytes unit)"]),
    ("time given a bandwidth",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 GB/s", "latency": "3 Gbps"}])),
     UnitError, ["links[0].latency", "'3 Gbps'", "unknown time unit 'Gbps'", "is a bandwidth unit", "'1.5 us'"]),
    ("disconnected graph",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 GB/s"}], nodes=("a", "b", "c"))),
     TopologyError, ["topology 'topology'", "['c']", "is disconnected (2 parts", "add links that join every part"]),
    ("link to an unknown node",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "z", "bandwidth": "5 GB/s"}])),
     TopologyError, ["links[0]", "'z'", "names a node that does not exist", "define the node first"]),
    ("duplicate node",
     lambda tmp: load_topology(explicit([], nodes=("a", "a"))),
     TopologyError, ["nodes[1].name = 'a'", "is defined twice", "unique name"]),
    ("duplicate link",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwidth": "5 GB/s"},
                                         {"a": "b", "b": "a", "bandwidth": "5 GB/s"}])),
     TopologyError, ["links[1]", "'b-a'", "is defined twice", "at most one link"]),
    ("missing field",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b"}])),
     ConfigError, ["topology.links[0].bandwidth", "is required but missing", "add the field 'bandwidth'"]),
    ("misspelt field",
     lambda tmp: load_topology(explicit([{"a": "a", "b": "b", "bandwith": "5 GB/s"}])),
     ConfigError, ["topology.links[0].bandwith", "'5 GB/s'", "is not a known field",
                   "the known fields are: a, b, bandwidth, bandwidth_back, latency"]),
    ("misspelt top-level field in a file",
     lambda tmp: load_topology(yaml_file(tmp, "name: x\ngenrator: ring\n")),
     ConfigError, ["bad.yaml", "genrator", "is not a known field", "generator, params"]),
    ("wrong type",
     lambda tmp: load_topology({"nodes": [{"name": "a", **H100, "forwards": "maybe"}]}),
     ConfigError, ["topology.nodes[0].forwards", "'maybe'", "is not a true or false", "Fix: give a true or false"]),
    ("wrong type of generator parameter",
     lambda tmp: load_topology({"generator": "ring", "params": {"n": "eight"}}),
     ConfigError, ["topology.params.n", "'eight'", "is not a whole number", "give a whole number"]),
    ("generator parameter out of range",
     lambda tmp: load_topology({"generator": "fat_tree", "params": {"k": 5}}),
     ConfigError, ["topology.params.k", "5", "must be a multiple of 2", "give a multiple of 2"]),
    ("unknown generator",
     lambda tmp: load_topology({"generator": "torus3d"}),
     ConfigError, ["topology.generator", "'torus3d'", "is not a topology generator", "ring, fully_connected"]),
    ("unknown generator parameter",
     lambda tmp: load_topology({"generator": "ring", "params": {"nodes": 8}}),
     ConfigError, ["topology.params.nodes", "is not a parameter of the ring generator", "n, bandwidth, latency"]),
    ("bad shorthand",
     lambda tmp: load_topology("ringg:8"),
     ConfigError, ["topology", "'ringg:8'", "is neither a file, a shipped topology nor a generator shorthand",
                 "dgx_h100", "'switch:512,50GB/s,500ns'"]),
    ("shorthand with too many values",
     lambda tmp: load_topology("ring:8,75GB/s,500ns,4"),
     ConfigError, ["'ring:8,75GB/s,500ns,4'", "more positional values than ring takes (n, bandwidth, latency)",
                   "name the extra values as key=value"]),
    ("unknown node kind",
     lambda tmp: load_topology({"nodes": [{"name": "a", "kind": "gpu", "device": "h100_sxm"}]}),
     ConfigError, ["topology.nodes[0].kind", "'gpu'", "is not one of the allowed values", "'device', 'nic'"]),
    ("device node without a device",
     lambda tmp: load_topology({"nodes": [{"name": "a", "kind": "device"}]}),
     TopologyError, ["nodes[0].device", "is required for a device node", "name a device preset"]),
    ("empty topology",
     lambda tmp: load_topology({}),
     ConfigError, ["topology", "has neither a generator nor nodes", "add 'generator:'"]),
    ("unknown device preset",
     lambda tmp: load_topology({"nodes": [{"name": "a", "kind": "device", "device": "h200x"}]}),
     ConfigError, ["nodes[0].device", "'h200x'", "is not a device preset", "h100_sxm, h800"]),
    ("dtype without peak",
     lambda tmp: device_spec("mi210_t3").peak("fp8"),
     ConfigError, ["dtype", "'fp8'", "has no peak FLOP/s on device 'mi210_t3'", "use one of fp32, fp16, bf16"]),
    ("device spec without peaks",
     lambda tmp: device_spec({"name": "x", "memory_bandwidth": "1 TB/s", "memory": "1 GB"}),
     ConfigError, ["device.peak_flops", "is required but missing", "add the field 'peak_flops'"]),
    ("device spec with an unknown dtype",
     lambda tmp: device_spec({"name": "x", "peak_flops": {"bf17": "1 TFLOPS"}, "memory_bandwidth": "1 TB/s",
                              "memory": "1 GB"}),
     ConfigError, ["device.peak_flops", "'bf17': is not a known dtype", "fp16, bf16"]),
    ("efficiency above 1",
     lambda tmp: device_spec({"base": "h100_sxm", "efficiency": 1.5}),
     ConfigError, ["device.efficiency", "1.5", "must be at most 1", "give a value at most 1"]),
    ("efficiency above 1 for one kernel",
     lambda tmp: Simulation(switch(n=2)).devices["gpu0"].compute(1e12, 1e9, efficiency=1.2),
     ConfigError, ["efficiency", "1.2", "must be in (0, 1]", "fraction of peak"]),
    ("YAML syntax error",
     lambda tmp: load_topology(yaml_file(tmp, "name: x\ngenerator: ring\nparams:\n  n: 8\n   bandwidth: 5 GB/s\n")),
     ConfigError, ["bad.yaml", "YAML syntax", "'line 5, column 13'", "cannot be parsed", "indentation or quoting"]),
    ("YAML with an unclosed bracket",
     lambda tmp: load_yaml(yaml_file(tmp, "params: {n: 8, bandwidth: [5 GB/s\n", name="open.yml")),
     ConfigError, ["open.yml", "'line 2, column 1'", "cannot be parsed", "expected ',' or ']'"]),
    ("YAML that is not a mapping",
     lambda tmp: load_topology(yaml_file(tmp, "- ring\n- switch\n")),
     ConfigError, ["bad.yaml", "['ring', 'switch']", "is not a mapping (key: value)"]),
    ("missing file",
     lambda tmp: load_topology("nope/none.yaml"),
     ConfigError, ["topology", "'nope/none.yaml'", "does not exist and is not a shipped topology", "check the path",
                 "dgx_h100"]),
    ("error inside a file names the file",
     lambda tmp: load_topology(yaml_file(tmp, "generator: ring\nparams: {n: 4, bandwidth: -5 GB/s}\n")),
     ConfigError, ["bad.yaml: topology.params.bandwidth", "'-5 GB/s'", "must be above 0"]),
    ("fault on a non-existent link",
     lambda tmp: Simulation(switch(n=2)).schedule_faults([{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu1"]}]),
     ConfigError, ["faults[0].link", "['gpu0', 'gpu1']", "is not a link of the topology", "directly linked"]),
    ("fault on a non-existent device",
     lambda tmp: Simulation(switch(n=2)).schedule_faults([{"kind": "straggler", "at": 0, "device": "gpu9",
                                                           "slowdown": 2}]),
     ConfigError, ["faults[0].device", "'gpu9'", "is not a device of the topology", "gpu0, gpu1"]),
    ("negative fault rate",
     lambda tmp: validate(FaultRates, {"device_failure": "-0.1 /day"}),
     ConfigError, ["device_failure", "'-0.1 /day'", "must be at least 0", "give a value at least 0"]),
    ("degrade factor 0",
     lambda tmp: Simulation(switch(n=2)).schedule_faults([{"kind": "link_degraded", "at": 0, "link": ["gpu0", "sw"],
                                                           "factor": 0}]),
     ConfigError, ["faults[0].factor", "= 0", "must be above 0", "give a value above 0"]),
    ("unknown routing policy",
     lambda tmp: Simulation(switch(n=2), routing="random"),
     ConfigError, ["routing", "'random'", "is not a routing policy", "'ecmp' or 'shortest'"]),
    ("bad size range",
     lambda tmp: parse_size_range("4GiB:1KiB"),
     UnitError, ["sizes", "'4GiB:1KiB'", "needs 0 < MIN <= MAX", "'1KiB:4GiB'"]),
    ("boolean quantity",
     lambda tmp: parse_quantity(True, "time", field="latency"),
     UnitError, ["latency", "True", "is not a time quantity", "'1.5 us'"]),
    ("not a number",
     lambda tmp: parse_quantity("fast", "bandwidth", field="links[2].bandwidth"),
     UnitError, ["links[2].bandwidth", "'fast'", "is not a number with a bandwidth unit", "'400 Gbps'"]),
]


@pytest.mark.parametrize(("builder", "kind", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_gives_a_clear_error(tmp_path, builder, kind, words):
    with pytest.raises(kind) as info:
        builder(tmp_path)
    text = str(info.value)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    # one paragraph: rule then fix, no traceback-like noise
    assert "Fix: " in text and "\n" not in text and "Traceback" not in text
    assert isinstance(info.value, ConfigError)


def test_at_least_twenty_malformed_inputs():
    assert len(CASES) >= 20


def test_error_message_parts():
    error = ConfigError(field="links[3].bandwidth", value="-5 GB/s", rule="must be positive.", fix="give more.")
    assert str(error) == "links[3].bandwidth = '-5 GB/s': must be positive. Fix: give more."
    assert str(error.with_source("a.yaml")) == "a.yaml: " + str(error)
    assert str(error.with_prefix("topology")) == "topology.links[3].bandwidth = '-5 GB/s': must be positive. Fix: give more."
    long = ConfigError(field="x", value="y" * 200, rule="r", fix="f")
    assert "..." in str(long) and len(str(long)) < 120


def test_validate_reports_the_first_problem_and_counts_the_rest():
    class Link(StrictModel):
        latency: float
        bandwidth: float

    with pytest.raises(ConfigError) as info:
        validate(Link, {"latncy": 1, "bandwidth": "x"}, source="f.yaml")
    text = str(info.value)
    assert text.startswith("f.yaml: latncy = 1: is not a known field (2 more problems in this input)")
    assert "the known fields are: latency, bandwidth" in text


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("400 Gbps", "bandwidth", 50e9),
        ("50 GB/s", "bandwidth", 50e9),
        ("25 GiB/s", "bandwidth", 25 * 2**30),
        ("10 Gbit/s", "bandwidth", 1.25e9),
        ("1.5 us", "time", 1.5e-6),
        ("500ns", "time", 500e-9),
        ("30 days", "time", 30 * 86400.0),
        ("80 GiB", "bytes", 80 * 2**30),
        ("1.5 GB", "bytes", 1.5e9),
        ("8 Mb", "bytes", 1e6),
        ("989 TFLOPS", "flop_rate", 989e12),
        ("2.5 TFLOP", "flops", 2.5e12),
        ("1.4 GHz", "frequency", 1.4e9),
        ("7.2 /day", "event_rate", 7.2 / 86400),
        ("0.3 per hour", "event_rate", 0.3 / 3600),
        ("1_000", "bytes", 1000.0),
        (12, "time", 12.0),
    ],
)
def test_quantities_parse_to_si(text, kind, value):
    assert parse_quantity(text, kind) == pytest.approx(value, rel=1e-12)


def test_size_ranges():
    assert parse_size_range("1KiB:16KiB:x4") == [1024.0, 4096.0, 16384.0]
    assert parse_size_range("1MiB,8MiB") == [2.0**20, 2.0**23]
