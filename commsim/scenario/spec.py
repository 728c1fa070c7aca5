"""Scenario files: one YAML that says what to simulate and what to write.

A scenario names a topology (a file, a shorthand or an inline mapping), a
workload, faults, a seed and outputs::

    name: llama-7b-on-32-gpus
    seed: 0
    topology: topologies/dgx_h100.yaml
    workload:
      kind: training            # trace | training | inference | collective | traffic | study
      model: llama-2-7b
      tp: 8
      dp: 4
    faults:
      - {kind: link_down, at: 5 ms, link: [gpu0, nvsw0], duration: 1 ms}
    outputs:
      tables: parquet

Every field is validated; a mistake gets one message naming the file, the
field, the value, the rule and the fix. Counts and fractions are strict: ``true``
is not read as 1, nor ``"4"`` as 4. ``--set workload.tp=4`` (CLI) or
``overrides={"workload.tp": 4}`` (Python) change any field before validation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr

from commsim.collectives import CollectiveConfig
from commsim.config import StrictModel, load_yaml, validate
from commsim.errors import ConfigError
from commsim.faults.model import Fault, FaultRates
from commsim.units import Bytes, Duration
from commsim.workloads.generators import InferenceConfig, TrainingConfig

__all__ = [
    "Scenario", "OutputSpec", "CollectiveSettings", "TraceWorkload", "TrainingWorkload", "InferenceWorkload",
    "CollectiveWorkload", "TrafficWorkload", "StudyWorkload", "load_scenario", "scenario_from_dict",
    "apply_overrides", "parse_set",
]


class OutputSpec(StrictModel):
    """What a run writes, and where (``dir`` defaults to ``dashboards/<scenario name>``).

    The dashboard's timeline shows ``timeline_devices`` when given, else the first
    ``timeline_ranks`` devices; big runs stay readable and under 20 MB either way.
    """

    dir: str | None = None
    tables: Literal["parquet", "csv"] = "parquet"
    dashboard: bool = True
    perfetto: bool = True
    record: Literal["auto", "all", "first", "none"] = "auto"
    timeline_ranks: Annotated[int, Field(ge=1, strict=True)] = 16
    timeline_devices: list[str] | None = None


class CollectiveSettings(StrictModel):
    """How collectives run: per-step latency, protocol efficiency, reduction cost, steps or flows,
    the algorithm ``auto`` means per collective, and channels (parallel rings/trees with their
    own flow hashes) for the algorithms that have them."""

    step_latency: Annotated[Duration, Field(ge=0)] = 0.0
    bandwidth_efficiency: Annotated[float, Field(gt=0, le=1, strict=True)] = 1.0
    reduction: bool = False
    mode: Literal["steps", "flows"] = "steps"
    algorithms: dict[str, str] = {}
    channels: Annotated[int, Field(ge=1, strict=True)] = 1

    def config(self) -> CollectiveConfig:
        """The executor's configuration."""
        return CollectiveConfig(step_latency=self.step_latency, bandwidth_efficiency=self.bandwidth_efficiency,
                                reduction=self.reduction, mode=self.mode, record="none")


class TraceWorkload(StrictModel):
    """Replay a trace: a commsim JSON file, Chakra ET files (a file, directory or ``<prefix>`` of
    ``<prefix>.<rank>.et``) or PyTorch profiler traces (a directory or files of Chrome-trace JSON, one per rank).

    ``format: auto`` tells them apart by the path: ``.et`` files, directories of them or a prefix are
    Chakra; a directory of ``*.json`` profiler traces or a JSON file with ``traceEvents`` is PyTorch.
    """

    kind: Literal["trace"] = "trace"
    file: str
    format: Literal["auto", "commsim", "chakra", "pytorch"] = "auto"
    process_groups: dict[str, list[int]] | None = Field(
        default=None, description="Chakra pg_name -> ranks (default: <prefix>.comm_group.json when present).")
    lockstep: bool = True


class TrainingWorkload(TrainingConfig):
    """Generate and replay one training step of ``model`` (all fields of the training generator).

    ``fast_replay`` replays with the exact shortcuts of ``Replay(fast=True)`` and
    the periodic extension of :mod:`commsim.workloads.prediction` (three short
    replays instead of all micro-batches; the op table is then the last short one's).
    """

    kind: Literal["training"] = "training"
    model: str
    lockstep: bool = True
    fast_replay: bool = False

    def generator_config(self) -> TrainingConfig:
        return TrainingConfig(**self.model_dump(exclude={"kind", "model", "lockstep", "fast_replay"}))


class InferenceWorkload(InferenceConfig):
    """Generate and replay a prefill and decode steps of ``model``."""

    kind: Literal["inference"] = "inference"
    model: str
    lockstep: bool = True

    def generator_config(self) -> InferenceConfig:
        return InferenceConfig(**self.model_dump(exclude={"kind", "model", "lockstep"}))


class CollectiveWorkload(StrictModel):
    """Run one collective over a range of sizes, nccl-tests style (``sizes`` like ``1KiB:1GiB``)."""

    kind: Literal["collective"] = "collective"
    op: Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast", "reduce"] = "all_reduce"
    algorithm: str = "ring"
    sizes: str | list[Bytes] = "1KiB:1GiB:x4"
    ranks: int | list[int] | None = None
    params: dict[str, Any] = {}


class TrafficWorkload(StrictModel):
    """Synthetic traffic between devices: ``flows`` flows with log-normal sizes around ``size``.

    ``pattern``: ``permutation`` (each device sends to one other, re-drawn every
    round of flows), ``uniform`` (random pairs) or ``incast`` (all to device 0).
    ``load`` in (0, 1] makes arrivals Poisson at that fraction of each device's
    first-link bandwidth; 0 starts every flow at once.
    """

    kind: Literal["traffic"] = "traffic"
    pattern: Literal["permutation", "uniform", "incast"] = "permutation"
    flows: Annotated[int, Field(ge=1, strict=True)] = 1000
    size: Annotated[Bytes, Field(gt=0)] = 1e6
    size_sigma: Annotated[float, Field(ge=0, strict=True)] = 1.0
    load: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.5


class StudyWorkload(StrictModel):
    """Run one of the studies in :mod:`commsim.systems` with its parameters."""

    kind: Literal["study"] = "study"
    study: str
    params: dict[str, Any] = {}


Workload = Annotated[
    TraceWorkload | TrainingWorkload | InferenceWorkload | CollectiveWorkload | TrafficWorkload | StudyWorkload,
    Field(discriminator="kind"),
]


class Scenario(StrictModel):
    """One runnable study: topology, workload, faults, seed, outputs.

    ``devices`` replaces the device of topology nodes: keys are device node names
    or ``"*"`` for every device; values a preset name or a spec mapping (with
    ``base:`` to derive from a preset), e.g. ``{"*": "a100_sxm4_80gb"}``.
    """

    name: str = Field(min_length=1)
    description: str = ""
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    topology: str | dict[str, Any] | None = None
    topology_overrides: dict[str, Any] = {}
    devices: dict[str, str | dict[str, Any]] = {}
    routing: Literal["ecmp", "shortest"] = "ecmp"
    workload: Workload
    collective: CollectiveSettings = CollectiveSettings()
    faults: list[Fault] = []
    fault_rates: FaultRates | None = None
    fault_horizon: Annotated[Duration, Field(gt=0)] | None = None
    outputs: OutputSpec = OutputSpec()
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file the scenario was read from, if any."""
        return self._source

    def resolve_path(self, value: str) -> Path:
        """A path from the scenario: as given if it exists, else next to the scenario file or its parent."""
        path = Path(value)
        if path.is_absolute() or path.exists() or self._source is None:
            return path
        for base in (self._source.parent, self._source.parent.parent):
            if (base / path).exists():
                return base / path
        return path

    def output_dir(self) -> Path:
        """Where outputs go."""
        return Path(self.outputs.dir) if self.outputs.dir else Path("dashboards") / self.name


def parse_set(text: str) -> tuple[str, list[Any]]:
    """Split ``--set a.b=1,2`` into the dotted path and its values (parsed as YAML scalars).

    >>> parse_set("workload.tp=2,4")
    ('workload.tp', [2, 4])
    >>> parse_set("collective.step_latency=5 us")
    ('collective.step_latency', ['5 us'])
    """
    path, sep, values = text.partition("=")
    if not sep or not path.strip() or not values.strip():
        raise ConfigError(field="--set", value=text, rule="is not PATH=VALUE[,VALUE...]",
                          fix="write e.g. --set workload.tp=2,4 or --set seed=3")
    parsed = []
    for item in _split_values(values):
        try:
            parsed.append(yaml.safe_load(item))
        except yaml.YAMLError:
            parsed.append(item)
    return path.strip(), parsed


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so lists like ``[a, b]`` stay whole."""
    out, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    out.append(current.strip())
    return [v for v in out if v]


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with dotted paths set (``{"workload.tp": 4}``); list items by index.

    An index must name an existing item (``faults.0.at``) or the next one, which
    appends (``faults.2`` on a list of 2); anything else is a :class:`ConfigError`.
    """
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(field="--set", value=dotted, rule="has an empty part in its dotted path",
                              fix="write the path like workload.tp or faults.0.at")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, dotted, value, appending=last)
                if last:
                    if index == len(node):
                        node.append(value)
                    else:
                        node[index] = value
                    break
                node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                    break
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
            else:
                parent = ".".join(parts[:i])
                raise ConfigError(field=parent, value=node, rule="is not a mapping or a list",
                                  fix=f"set {parent} itself, not a field inside it")
    return out


def _list_index(items: list[Any], part: str, dotted: str, value: Any, *, appending: bool) -> int:
    top = len(items) + (1 if appending else 0)
    if not part.isdigit() or not int(part) < top:
        allowed = f"0 to {top - 1}" if top else "none (the list is empty)"
        raise ConfigError(field=dotted, value=value, rule=f"indexes a list of {len(items)} with {part!r}",
                          fix=f"use an index from {allowed}" + (" (the last one appends)" if appending else ""))
    return int(part)


def scenario_from_dict(data: dict[str, Any], *, source: str | Path | None = None,
                       overrides: dict[str, Any] | None = None) -> Scenario:
    """Validate a scenario mapping (after applying ``overrides``)."""
    if not isinstance(data, dict):
        raise ConfigError(field="scenario", value=type(data).__name__, rule="is not a mapping",
                          fix="write the scenario as YAML key: value pairs", source=str(source) if source else None)
    data = apply_overrides(data, overrides or {})
    scenario = validate(Scenario, data, source=str(source) if source else None)
    scenario._source = Path(source) if source else None
    return scenario


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file."""
    return scenario_from_dict(load_yaml(path), source=path, overrides=overrides)
