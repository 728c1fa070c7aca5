"""Topologies from YAML files, mappings or one-line shorthands.

A topology file either calls a generator::

    name: dgx-h100
    generator: nvswitch_node
    params: {gpus: 8, device: h100_sxm, nvlink_bandwidth: 450 GB/s}

or lists nodes and links (and may do both: extra nodes and links are added to
the generated ones)::

    name: pair
    devices:
      big_h100: {base: h100_sxm, memory: 94 GB}
    nodes:
      - {name: gpu0, kind: device, device: big_h100}
      - {name: gpu1, kind: device, device: h100_sxm}
    links:
      - {a: gpu0, b: gpu1, bandwidth: 450 GB/s, latency: 500 ns}

A shorthand names a generator and its leading parameters:
``switch:512,50GB/s,500ns`` or ``fat_tree:k=16,bandwidth=400Gbps``. A shipped
topology is named by its bare name (``dgx_h100``) or as ``topologies/dgx_h100.yaml``
from any directory (see :mod:`commsim.network.shipped`).

>>> load_topology("ring:8,75GB/s,500ns").link_count
8
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from commsim.config import StrictModel, load_yaml, validate
from commsim.devices.spec import device_spec
from commsim.errors import ConfigError, TopologyError
from commsim.network.generators import GENERATORS, build
from commsim.network.shipped import shipped_topologies, topology_file
from commsim.network.topology import NodeKind, Topology
from commsim.units import Bandwidth, Duration

__all__ = ["SHORTHAND_ORDER", "LinkSpec", "NodeSpec", "TopologySpec", "load_topology"]

SHORTHAND_ORDER: dict[str, list[str]] = {
    "ring": ["n", "bandwidth", "latency"],
    "fully_connected": ["n", "bandwidth", "latency"],
    "switch": ["n", "bandwidth", "latency"],
    "nvswitch_node": ["gpus", "nvlink_bandwidth", "nvlink_latency"],
    "leaf_spine": ["leaves", "spines", "hosts_per_leaf", "bandwidth"],
    "fat_tree": ["k", "bandwidth", "latency"],
    "rail_optimized": ["servers", "gpus_per_server", "port_bandwidth"],
    "torus": ["dims", "bandwidth", "latency"],
    "home_router_edge": ["devices", "bandwidth", "latency"],
    "wan": ["datacenters", "devices_per_dc", "wan_bandwidth", "wan_latency"],
}
"""Positional parameters of each generator in a shorthand, in order."""


class NodeSpec(StrictModel):
    """One node of an explicit topology."""

    name: str
    kind: NodeKind
    device: str | dict[str, Any] | None = None
    latency: Annotated[Duration, Field(ge=0)] = 0.0
    forwards: bool | None = None
    attrs: dict[str, Any] = {}


class LinkSpec(StrictModel):
    """One full-duplex link; ``bandwidth_back`` (b to a) defaults to ``bandwidth``."""

    a: str
    b: str
    bandwidth: Annotated[Bandwidth, Field(gt=0)]
    bandwidth_back: Annotated[Bandwidth, Field(gt=0)] | None = None
    latency: Annotated[Duration, Field(ge=0)] = 0.0


class TopologySpec(StrictModel):
    """A topology file: a generator with parameters, explicit nodes and links, or both."""

    name: str = "topology"
    description: str = ""
    generator: str | None = None
    params: dict[str, Any] = {}
    devices: dict[str, dict[str, Any]] = {}
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []

    @model_validator(mode="after")
    def _something(self) -> TopologySpec:
        if self.generator is None and not self.nodes:
            raise ConfigError(field="topology", rule="has neither a generator nor nodes",
                              fix="add 'generator:' with 'params:', or list 'nodes:' and 'links:'")
        if self.params and self.generator is None:
            raise ConfigError(field="params", value=self.params, rule="are given without a generator",
                              fix="add 'generator:' or drop 'params:'")
        return self

    def build(self) -> Topology:
        """Build and check the topology."""
        custom = {name: device_spec({"name": name, **spec}, field=f"devices.{name}")
                  for name, spec in self.devices.items()}

        def resolve(value: Any, field: str) -> Any:
            if isinstance(value, str) and value in custom:
                return custom[value]
            return device_spec(value, field=field) if value is not None else None

        if self.generator is not None:
            params = dict(self.params)
            if "device" in params:
                params["device"] = resolve(params["device"], "params.device")
            topo = build(self.generator, params, field="topology")
            topo.name = self.name if self.name != "topology" else topo.name
            topo.description = self.description or topo.description
        else:
            topo = Topology(self.name, self.description)
        for i, node in enumerate(self.nodes):
            device = resolve(node.device, f"nodes[{i}].device") if node.kind == "device" else None
            try:
                topo.add_node(node.name, node.kind, latency=node.latency, device=device, forwards=node.forwards,
                              **node.attrs)
            except ConfigError as exc:
                # the topology names the node ("nodes.gpu0.device"); the file knows its position
                exc.field = exc.field.removeprefix(f"nodes.{node.name}").lstrip(".") or "name"
                raise exc.with_prefix(f"nodes[{i}]") from None
        for i, link in enumerate(self.links):
            try:
                topo.add_link(link.a, link.b, bandwidth=link.bandwidth, latency=link.latency,
                              bandwidth_back=link.bandwidth_back)
            except ConfigError as exc:
                raise TopologyError(field=f"links[{i}]", value=exc.value, rule=exc.rule, fix=exc.fix) from None
        topo.check()
        return topo


def load_topology(source: Any, *, overrides: dict[str, Any] | None = None) -> Topology:
    """A topology from a file path, a shorthand, a mapping, a spec or a topology.

    ``overrides`` replace generator parameters (``{"servers": 4}``) before building.
    """
    if isinstance(source, Topology):
        return source
    if isinstance(source, TopologySpec):
        spec = source
        origin = None
    elif isinstance(source, dict):
        spec = validate(TopologySpec, source, prefix="topology")
        origin = None
    elif isinstance(source, (str, Path)):
        text = str(source)
        path = topology_file(text)
        if path is None and Path(text).suffix in (".yaml", ".yml"):
            raise ConfigError(field="topology", value=text, rule="does not exist and is not a shipped topology",
                              fix=f"check the path (relative to {Path.cwd()}), or name a shipped topology: "
                                  f"{', '.join(shipped_topologies())}")
        if path is not None:
            data = load_yaml(path)
            origin = str(path)
            try:
                spec = validate(TopologySpec, data, source=origin)
            except ConfigError as exc:
                raise exc.with_source(origin) from None
        else:
            spec = _shorthand(text)
            origin = None
    else:
        raise ConfigError(field="topology", value=source, rule="is not a topology",
                          fix="give a YAML file, a shorthand such as 'switch:8,50GB/s,500ns', or a mapping")
    if overrides:
        if spec.generator is None:
            raise ConfigError(field="topology overrides", value=overrides,
                              rule="only apply to topologies built by a generator",
                              fix="edit the nodes and links of the file instead")
        spec = spec.model_copy(update={"params": {**spec.params, **overrides}})
    try:
        return spec.build()
    except ConfigError as exc:
        raise exc.with_source(origin) if origin else exc from None


def _shorthand(text: str) -> TopologySpec:
    generator, _, rest = text.partition(":")
    generator = generator.strip()
    if generator not in GENERATORS:
        raise ConfigError(field="topology", value=text,
                          rule="is neither a file, a shipped topology nor a generator shorthand",
                          fix=f"give an existing YAML file, a shipped topology ({', '.join(shipped_topologies())}) "
                              f"or GENERATOR:ARGS with GENERATOR one of {', '.join(GENERATORS)} "
                              "(e.g. 'switch:512,50GB/s,500ns')")
    params: dict[str, Any] = {}
    order = SHORTHAND_ORDER[generator]
    positional = 0
    for part in [p.strip() for p in rest.split(",") if p.strip()]:
        if "=" in part:
            key, _, value = part.partition("=")
            params[key.strip()] = _value(value.strip())
        else:
            if positional >= len(order):
                raise ConfigError(field="topology", value=text,
                                  rule=f"has more positional values than {generator} takes ({', '.join(order)})",
                                  fix="name the extra values as key=value")
            params[order[positional]] = _value(part)
            positional += 1
    return TopologySpec(name=text, generator=generator, params=params)


def _value(text: str) -> Any:
    if "x" in text and all(p.isdigit() for p in text.split("x")):
        return [int(p) for p in text.split("x")]
    try:
        return int(text)
    except ValueError:
        return text
