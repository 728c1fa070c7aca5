"""Running a scenario: build the simulation, run the workload, gather tables and metrics.

>>> from commsim.scenario.spec import scenario_from_dict
>>> run = simulate(scenario_from_dict({
...     "name": "tiny", "topology": "switch:8,50GB/s,500ns",
...     "workload": {"kind": "collective", "op": "all_reduce", "sizes": "1MiB:4MiB"}}))
>>> run.tables["collective"]["size"].tolist()
[1048576.0, 2097152.0, 4194304.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from commsim.collectives import bus_factor, simulate_collective
from commsim.errors import ConfigError, StallError
from commsim.faults.injector import check_faults
from commsim.faults.model import draw_faults
from commsim.limits import MAX_RANKS, check_limit
from commsim.network.loader import load_topology
from commsim.network.topology import Topology
from commsim.results.result import Result
from commsim.scenario.spec import (
    CollectiveWorkload,
    InferenceWorkload,
    Scenario,
    StudyWorkload,
    TraceWorkload,
    TrafficWorkload,
    TrainingWorkload,
    load_scenario,
    scenario_from_dict,
)
from commsim.simulation import Simulation
from commsim.units import check_message_sizes, parse_size_range

__all__ = ["RunResult", "simulate", "as_scenario", "check_scenario", "scenario_faults"]

Progress = Callable[[float, float, str], None]


def _quiet(done: float, total: float, what: str) -> None:
    return None


@dataclass
class RunResult:
    """The outcome of a scenario.

    ``metrics`` are the headline numbers ``{name: (value, unit)}``; ``result`` holds
    the simulation's tables (spans, flows, link usage, events, memory) when the
    workload ran one; ``tables`` and ``csv`` are workload/study tables; ``figures``
    extra plotly figures for the dashboard; ``notes`` the stated assumptions.
    """

    scenario: Scenario
    metrics: dict[str, tuple[float, str]]
    result: Result | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    topology: Topology | None = None

    @property
    def summary(self) -> pd.DataFrame:
        """Headline metrics as a table: metric, value, unit."""
        return pd.DataFrame([(k, v, u) for k, (v, u) in self.metrics.items()], columns=["metric", "value", "unit"])

    def all_tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the run by name (simulation tables, then workload tables, then the metrics)."""
        out: dict[str, pd.DataFrame] = {}
        if self.result is not None:
            out.update({k: v for k, v in self.result.tables().items() if k != "summary"})
        out.update(self.tables)
        out["metrics"] = self.summary
        return out

    def dashboard(self, path: str | Path | None = None) -> Path:
        """Write the interactive dashboard (one self-contained HTML file); return its path."""
        from commsim.views.dashboard import write_dashboard

        target = Path(path) if path else self.scenario.output_dir() / "dashboard.html"
        return write_dashboard(self, target)

    def write(self, directory: str | Path | None = None) -> dict[str, Path]:
        """Write tables, promised CSV files, the dashboard and the Perfetto trace; return the paths."""
        from commsim.results.perfetto import write_perfetto

        out = Path(directory) if directory else self.scenario.output_dir()
        out.mkdir(parents=True, exist_ok=True)
        fmt = self.scenario.outputs.tables
        written: dict[str, Path] = {}
        for name, table in self.all_tables().items():
            path = out / f"{name}.{fmt}"
            _write_table(table, path, fmt)
            written[name] = path
        for name, table in self.csv.items():
            path = out / f"{name}.csv"
            _write_table(table, path, "csv")
            written[f"{name}.csv"] = path
        if self.scenario.outputs.dashboard:
            written["dashboard"] = self.dashboard(out / "dashboard.html")
        if self.scenario.outputs.perfetto and self.result is not None and len(self.result.spans):
            written["perfetto"] = write_perfetto(self.result, out / "trace.perfetto.json")
        return written


def _write_table(table: pd.DataFrame, path: Path, fmt: str) -> None:
    frame = table.copy()
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(lambda v: isinstance(v, (dict, list))).any():
            frame[column] = frame[column].map(
                lambda v: ";".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v))
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def as_scenario(source: Any, overrides: dict[str, Any] | None = None) -> Scenario:
    """A scenario from a path, a mapping or a scenario (``overrides`` applied)."""
    if isinstance(source, Scenario):
        if not overrides:
            return source
        data = source.model_dump(mode="json", exclude_defaults=False)
        scenario = scenario_from_dict(data, source=source.source, overrides=overrides)
        return scenario
    if isinstance(source, dict):
        return scenario_from_dict(source, overrides=overrides)
    if isinstance(source, (str, Path)):
        return load_scenario(source, overrides=overrides)
    raise ConfigError(field="scenario", value=type(source).__name__, rule="is not a scenario",
                      fix="give a YAML path, a mapping or a Scenario")


def _topology(scenario: Scenario) -> Topology | None:
    spec = scenario.topology
    if spec is None:
        if scenario.topology_overrides:
            raise ConfigError(field="topology_overrides", value=scenario.topology_overrides,
                              rule="needs a topology", fix="add 'topology:' or drop the overrides")
        return None
    if isinstance(spec, str):
        path = scenario.resolve_path(spec)
        source: Any = str(path) if path.exists() else spec
    else:
        source = spec
    topology = load_topology(source, overrides=scenario.topology_overrides or None)
    _replace_devices(topology, scenario.devices)
    return topology


def _replace_devices(topology: Topology, devices: dict[str, Any]) -> None:
    """Apply the scenario's ``devices`` (node name or ``*`` → preset or spec) to the topology."""
    from commsim.devices.spec import device_spec

    names = topology.devices
    for key, value in devices.items():
        targets = names if key == "*" else [key]
        if key != "*" and key not in names:
            raise ConfigError(field=f"devices.{key}", value=key, rule="is not a device node of the topology",
                              fix=f"name a device such as {names[0]}, or use '*' for all of them")
        spec = device_spec(value, field=f"devices.{key}")
        for name in targets:
            topology.set_device(name, spec)


def _need_topology(scenario: Scenario, topology: Topology | None) -> Topology:
    if topology is None:
        raise ConfigError(field="topology", rule=f"is required for a {scenario.workload.kind} workload",
                          fix="name a topology file (topologies/*.yaml) or a shorthand such as 'switch:8,50GB/s,500ns'")
    return topology


def check_scenario(scenario: Scenario) -> None:
    """Every check :func:`simulate` makes before running, without running (sweeps check each point first).

    Loads the topology, then checks faults, ``outputs.timeline_devices`` and that
    a generated workload's ranks fit the topology's devices.
    """
    topology = _topology(scenario)
    scenario_faults(scenario, topology)
    if topology is not None:
        _check_timeline_devices(scenario, topology)
        _check_world(scenario, topology)


def _check_world(scenario: Scenario, topology: Topology) -> None:
    """A generated training or inference workload must not need more ranks than the topology has devices."""
    workload = scenario.workload
    if not isinstance(workload, (TrainingWorkload, InferenceWorkload)):
        return
    world = getattr(workload.generator_config(), "world", None)
    if world is None:
        return
    check_limit("workload", f"tp·pp·dp = {world}", world, MAX_RANKS, "ranks", fix="use smaller parallel degrees")
    devices = len(topology.devices)
    if world > devices:
        raise ConfigError(field="workload", value=f"tp·pp·dp = {world}",
                          rule=f"needs {world} ranks but the topology has {devices} devices",
                          fix="lower tp, pp or dp, or use a bigger topology")


def simulate(source: Any, *, overrides: dict[str, Any] | None = None, progress: Progress | None = None) -> RunResult:
    """Run a scenario (a path, mapping or :class:`Scenario`) and return its :class:`RunResult`."""
    scenario = as_scenario(source, overrides)
    progress = progress or _quiet
    topology = _topology(scenario)
    workload = scenario.workload
    faults = scenario_faults(scenario, topology)
    if topology is not None:
        _check_timeline_devices(scenario, topology)
        _check_world(scenario, topology)
    if isinstance(workload, StudyWorkload):
        run = _run_study(scenario, workload, topology, faults, progress)
    elif isinstance(workload, CollectiveWorkload):
        run = _run_collective(scenario, workload, _need_topology(scenario, topology), faults, progress)
    else:
        sim = _simulation(scenario, _need_topology(scenario, topology), faults)
        if isinstance(workload, TrafficWorkload):
            run = _run_traffic(scenario, workload, sim, progress)
        elif isinstance(workload, TrainingWorkload):
            run = _run_training(scenario, workload, sim, faults, progress)
        else:
            run = _run_replay(scenario, workload, sim, progress)
    run.topology = run.topology or topology
    if topology is None and run.topology is not None:
        _check_timeline_devices(scenario, run.topology)
    return run


def _check_timeline_devices(scenario: Scenario, topology: Topology) -> None:
    """Every device ``outputs.timeline_devices`` names must exist (else the timeline would silently skip it)."""
    known = set(topology.devices)
    for i, name in enumerate(scenario.outputs.timeline_devices or []):
        if name not in known:
            raise ConfigError(field=f"outputs.timeline_devices[{i}]", value=name, rule="is not a device of the topology",
                              fix=f"name devices such as {', '.join(topology.devices[:4])}")


def scenario_faults(scenario: Scenario, topology: Topology | None) -> list[Any]:
    """The scenario's faults (listed, then drawn from ``fault_rates``), checked against the topology.

    Raises :class:`ConfigError` before anything runs: for ``fault_rates`` without
    ``fault_horizon`` (or the reverse), a fault on a link or device the topology
    lacks, and faults given to a study that does not apply them (:attr:`Study.accepts_faults
    <commsim.systems.Study.accepts_faults>`). A study given no scenario topology checks
    listed faults against the topology it builds.
    """
    if scenario.fault_rates is not None and scenario.fault_horizon is None:
        raise ConfigError(field="fault_horizon", rule="is required with fault_rates",
                          fix="give the time span to draw faults over, e.g. '1 h'")
    if scenario.fault_horizon is not None and scenario.fault_rates is None:
        raise ConfigError(field="fault_horizon", value=scenario.fault_horizon, rule="has no fault_rates to draw from",
                          fix="add fault_rates (e.g. {link_down: '1 /h'}) or drop fault_horizon")
    given = bool(scenario.faults) or scenario.fault_rates is not None
    study = isinstance(scenario.workload, StudyWorkload)
    if given and study and not _study_accepts_faults(scenario.workload.study):
        raise ConfigError(field="faults" if scenario.faults else "fault_rates", value=scenario.workload.study,
                          rule="cannot be applied to a study workload that does not apply them to its simulations",
                          fix="drop faults/fault_rates from this scenario, or run a trace, training, inference, "
                              "collective or traffic workload (or the c4, t3, streaming_diloco or tpi_llm study) to see "
                              "their effect")
    if not given:
        return []
    faults: list[Any] = list(scenario.faults)
    if study and topology is None and scenario.fault_rates is None:
        return faults   # the study checks them against the topology it builds
    topology = _need_topology(scenario, topology)
    check_faults(faults, topology)
    if scenario.fault_rates is not None:
        faults += draw_faults(scenario.fault_rates, topology, scenario.fault_horizon, seed=scenario.seed)
    return faults


def _study_accepts_faults(name: str) -> bool:
    from commsim.systems import get_study

    return bool(get_study(name).accepts_faults)


def _simulation(scenario: Scenario, topology: Topology, faults: list[Any]) -> Simulation:
    sim = Simulation(topology, seed=scenario.seed, routing=scenario.routing, name=scenario.name)
    sim.schedule_faults(faults)
    return sim


def _model_ref(scenario: Scenario, model: str) -> str:
    """A catalog name as given; a YAML path resolved like the scenario's other files (next to the scenario)."""
    if model.endswith((".yaml", ".yml")):
        return str(scenario.resolve_path(model))
    return model


def _keep_partial(error: StallError, scenario: Scenario, sim: Simulation) -> None:
    """Attach the run up to the stall to ``error`` (as ``error.run``) so the CLI can write its tables."""
    if error.result is None:
        return
    error.run = RunResult(scenario=scenario, metrics=dict(error.result.metrics), result=error.result,
                          notes=[f"stalled at t={error.time:.9g} s; the tables stop there"], topology=sim.topology)


def _fault_notes(faults: Any) -> list[str]:
    """A note on the faults a run never reached (they came after its workload ended)."""
    late = faults.not_reached
    if not late:
        return []
    first = min(f.at for f in late)
    return [f"{len(late)} fault(s) from t={first:.9g} s came after the workload ended and were not applied "
            "(the makespan and utilisation cover the workload only)."]


def _trace_of(scenario: Scenario, workload: Any) -> Any:
    from commsim.workloads import inference_trace, load_model, training_trace

    if isinstance(workload, TraceWorkload):
        from commsim.workloads.sources import load_any_trace

        path = scenario.resolve_path(workload.file)
        if not path.exists():   # a Chakra prefix (traces/step for traces/step.<rank>.et) next to the scenario
            first = scenario.resolve_path(workload.file + ".0.et")
            path = first.with_name(Path(workload.file).name) if first.exists() else path
        return load_any_trace(path, workload.format, process_groups=workload.process_groups)
    if isinstance(workload, TrainingWorkload):
        return training_trace(load_model(_model_ref(scenario, workload.model)), workload.generator_config())
    if isinstance(workload, InferenceWorkload):
        return inference_trace(load_model(_model_ref(scenario, workload.model)), workload.generator_config())
    raise ConfigError(field="workload.kind", value=workload.kind, rule="cannot be replayed",
                      fix="use trace, training or inference")


def _run_replay(scenario: Scenario, workload: Any, sim: Simulation, progress: Progress) -> RunResult:
    from commsim.workloads.replay import Replay

    trace = _trace_of(scenario, workload)
    record = None if scenario.outputs.record == "auto" else scenario.outputs.record
    replay = Replay(sim, trace, lockstep=workload.lockstep, algorithms=scenario.collective.algorithms or None,
                    collective=scenario.collective.config(), channels=scenario.collective.channels, record=record,
                    progress=lambda done, total: progress(done, total, "ops"))
    try:
        outcome = replay.run()
    except StallError as error:
        _keep_partial(error, scenario, sim)
        raise
    progress(1, 1, "ops")
    result = outcome.result
    metrics = dict(result.metrics)
    tables = {"ops": outcome.ops, "cohorts": outcome.cohorts, "streams": outcome.streams,
              "critical_path": outcome.critical_path}
    result.extra.clear()
    notes = ["Ranks of one program run in lockstep (see commsim.workloads.replay)."] if workload.lockstep else []
    notes += _fault_notes(sim.faults)
    return RunResult(scenario=scenario, metrics=metrics, result=result, tables=tables, notes=notes,
                     topology=sim.topology)


def _run_training(scenario: Scenario, workload: TrainingWorkload, sim: Simulation, faults: list[Any],
                  progress: Progress) -> RunResult:
    """A training step with Megatron's metrics (MFU, HFU, TFLOP/s per GPU, memory) and its time breakdown."""
    from commsim.workloads import load_model
    from commsim.workloads.prediction import predict_training_step

    fresh = iter([sim])
    topology = sim.topology

    def simulation() -> Simulation:
        # the first replay runs on the simulation already built; the periodic ones need fresh ones
        return next(fresh, None) or _simulation(scenario, topology, faults)

    options: dict[str, Any] = {
        "lockstep": workload.lockstep, "algorithms": scenario.collective.algorithms or None,
        "collective": scenario.collective.config(), "channels": scenario.collective.channels,
        "progress": lambda done, total: progress(done, total, "ops")}
    if scenario.outputs.record != "auto" or not workload.fast_replay:
        options["record"] = None if scenario.outputs.record == "auto" else scenario.outputs.record
    try:
        prediction = predict_training_step(load_model(_model_ref(scenario, workload.model)),
                                           workload.generator_config(), simulation, fast=workload.fast_replay,
                                           periodic=workload.fast_replay, **options)
    except StallError as error:
        _keep_partial(error, scenario, sim)
        raise
    progress(1, 1, "ops")
    last = prediction.last
    result = last.result
    periodic = len(prediction.replayed) > 1
    # a periodic prediction's replays are shorter than the step: only the predicted metrics describe it;
    # a full replay keeps its own metrics as they were (the same step time, its exposed communication)
    metrics = dict(prediction.metrics) if periodic else {**prediction.metrics, **result.metrics}
    tables = {"ops": last.ops, "cohorts": prediction.cohorts, "streams": last.streams,
              "critical_path": last.critical_path}
    result.extra.clear()
    notes = ["Ranks of one program run in lockstep (see commsim.workloads.replay)."] if workload.lockstep else []
    notes += prediction.notes
    notes += _fault_notes(sim.faults)
    if periodic:
        notes.append(f"The op table, spans and critical path are those of the {prediction.replayed[-1]}-micro-batch "
                     "replay; the metrics and the cohort table are extended to the whole step.")
    return RunResult(scenario=scenario, metrics=metrics, result=result, tables=tables, notes=notes,
                     topology=topology)


def _run_collective(scenario: Scenario, workload: CollectiveWorkload, topology: Topology, faults: list[Any],
                    progress: Progress) -> RunResult:
    sizes = (parse_size_range(workload.sizes, field="workload.sizes") if isinstance(workload.sizes, str)
             else check_message_sizes(workload.sizes, field="workload.sizes"))
    config = scenario.collective.config()
    rows = []
    for i, size in enumerate(sizes):
        progress(i, len(sizes), "sizes")
        try:
            r = simulate_collective(topology, workload.op, size, algorithm=workload.algorithm, ranks=workload.ranks,
                                    config=config, seed=scenario.seed, routing=scenario.routing, faults=faults,
                                    **workload.params)
        except StallError as error:
            error.run = RunResult(scenario=scenario, metrics={"sizes_completed": (float(len(rows)), "count")},
                                  tables={"collective": pd.DataFrame(rows)}, topology=topology,
                                  notes=[f"stalled at size {size:.0f} B; the table holds the sizes before it"])
            raise
        rows.append({"size": size, "time": r.time, "algbw": r.algbw, "busbw": r.busbw, "closed_form": r.closed_form,
                     "ranks": r.ranks, "wire_bytes": r.wire_bytes})
    progress(len(sizes), len(sizes), "sizes")
    table = pd.DataFrame(rows)
    last = rows[-1]
    metrics = {"ranks": (float(last["ranks"]), "count"), "largest_size": (last["size"], "B"),
               "time_at_largest": (last["time"], "s"), "busbw_at_largest": (last["busbw"], "B/s"),
               "bus_factor": (bus_factor(workload.op, int(last["ranks"])), "")}
    from commsim.views.figures import collective_curve

    notes = ["Each size runs alone from t=0 under the scenario's faults."] if faults else []
    return RunResult(scenario=scenario, metrics=metrics, tables={"collective": table}, notes=notes,
                     figures=[collective_curve(table, f"{workload.op}/{workload.algorithm}")])


def _run_traffic(scenario: Scenario, workload: TrafficWorkload, sim: Simulation, progress: Progress) -> RunResult:
    rng = np.random.default_rng(scenario.seed)
    devices = sim.topology.devices
    n = len(devices)
    if n < 2:
        raise ConfigError(field="topology", value=n, rule="has fewer than 2 devices for traffic",
                          fix="use a topology with at least two devices")
    count = workload.flows
    if workload.pattern == "permutation":
        rounds = -(-count // n)
        src = np.tile(np.arange(n), rounds)[:count]
        dst = np.concatenate([_derangement(rng, n) for _ in range(rounds)])[:count]
    elif workload.pattern == "uniform":
        src = rng.integers(0, n, count)
        dst = (src + rng.integers(1, n, count)) % n
    else:
        src = rng.integers(1, n, count)
        dst = np.zeros(count, dtype=np.int64)
    sigma = workload.size_sigma
    sizes = workload.size * np.exp(sigma * rng.standard_normal(count) - sigma**2 / 2)
    compiled = sim.topology.compile()
    # each device's injection bandwidth: its first link
    first_link = np.array([compiled.edge_bandwidth[compiled.out_edges[compiled.index[d]][0][1]] for d in devices])
    if workload.load > 0:
        per_device = workload.load * first_link.mean() / sizes.mean()
        starts = np.cumsum(rng.exponential(1.0 / (per_device * n), count))
    else:
        starts = np.zeros(count)
    names = np.array(devices, dtype=object)
    routes = sim.network.routes(names[src], names[dst])
    done = np.full(count, np.nan)
    state = {"left": count}

    def delivered(batch_index: np.ndarray, offset: int) -> None:
        done[batch_index + offset] = sim.env.now
        state["left"] -= batch_index.shape[0]
        if state["left"] % max(1, count // 200) == 0:
            progress(count - state["left"], count, "flows")

    def arrivals():
        order_time = 0.0
        i = 0
        while i < count:
            j = i
            while j < count and starts[j] == starts[i]:
                j += 1
            yield sim.env.timeout(max(starts[i] - order_time, 0.0))
            order_time = starts[i]
            part = routes.subset(np.arange(i, j))
            sim.network.send(part, sizes[i:j], label="traffic", record=count <= 20_000,
                             on_delivered=lambda idx, offset=i: delivered(idx, offset))
            i = j

    sim.process(arrivals())
    try:
        result = sim.run()
    except StallError as error:
        _keep_partial(error, scenario, sim)
        raise
    progress(count, count, "flows")
    fct = done - starts
    ideal = sizes / first_link[src] + routes.latency
    table = pd.DataFrame({"src": names[src], "dst": names[dst], "bytes": sizes, "start": starts, "end": done,
                          "fct": fct, "slowdown": fct / ideal})
    metrics = dict(result.metrics)
    metrics.update({"flows": (float(count), "count"), "mean_fct": (float(np.mean(fct)), "s"),
                    "p99_fct": (float(np.percentile(fct, 99)), "s"),
                    "p99_slowdown": (float(np.percentile(fct / ideal, 99)), "x"),
                    "throughput": (float(sizes.sum() / result.makespan) if result.makespan > 0 else math.inf, "B/s")})
    return RunResult(scenario=scenario, metrics=metrics, result=result, tables={"traffic": table},
                     notes=_fault_notes(sim.faults), topology=sim.topology)


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation with no fixed point (nobody sends to itself)."""
    perm = rng.permutation(n)
    fixed = np.flatnonzero(perm == np.arange(n))
    for i in fixed.tolist():
        if perm[i] == i:  # an earlier swap may have fixed it already
            j = (i + 1) % n
            perm[i], perm[j] = perm[j], perm[i]
    return perm


def _run_study(scenario: Scenario, workload: StudyWorkload, topology: Topology | None, faults: list[Any],
               progress: Progress) -> RunResult:
    from commsim.systems import StudyContext, get_study

    study = get_study(workload.study)
    params = study.parse(workload.params)
    ctx = StudyContext(topology=topology, seed=scenario.seed, collective=scenario.collective.config(),
                       record=scenario.outputs.record, progress=progress, scenario=scenario, faults=faults)
    out = study.run(params, ctx)
    return RunResult(scenario=scenario, metrics=out.metrics, result=out.result, tables=out.tables, csv=out.csv,
                     figures=out.figures, notes=out.notes, topology=topology)
