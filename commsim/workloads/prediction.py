"""Predict one training step: replay it (fast and periodic when allowed), then Megatron's metrics and a breakdown.

**Periodic replay.** After its warm-up, a pipeline's schedule repeats with every
micro-batch: each extra micro-batch adds the same time to the step and to every
stage's compute, communication and idle time. So a step of ``m`` micro-batches
need not be replayed in full: replaying ``m1 < m2 < m3`` micro-batches (``m1`` =
the pipeline stages, spaced by one, or by ``pp`` when stages are interleaved)
shows whether the step is periodic already — every quantity's second difference
is zero to 1e-9 of the step — and if so, each is extended to ``m`` along the
line through the last two. If not (a schedule that settles later), the full ``m``
is replayed and a note says so. Everything else that matters does not grow with
``m``: the gradient reduction and optimizer after the last micro-batch, and peak
memory, which 1F1B bounds by the number of stages in flight.

The replays are the shared :class:`~commsim.workloads.replay.Replay`, with
``fast=True`` unless told otherwise (see :mod:`commsim.workloads._shortcuts`).

**Folded layers.** With ``fold`` ``"exact"`` or ``"always"`` (and ``fast``), the layers of each pass are
three timed ops, each layer kind timed once per stage by a probe replay (see
:mod:`commsim.workloads.folding`, which says where that is exact); the per-cohort
``compute_busy`` is then the breakdown's compute and recomputation. ``"exact"``
keeps the folded step only where folding is exact (in-layer groups on links of
their own) and otherwise replays op by op; ``"always"`` keeps it, noting the
approximation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from commsim.config import validate
from commsim.errors import ConfigError
from commsim.workloads._training import TrainingConfig, _Step, step_trace
from commsim.workloads.breakdown import BREAKDOWN_COLUMNS, step_breakdown
from commsim.workloads.flops import hardware_flops, model_flops
from commsim.workloads.folding import LayerFolder, fold_refusal, folded_exactly, probe_layers
from commsim.workloads.models import TransformerSpec, load_model
from commsim.workloads.replay import Replay, ReplayResult

__all__ = ["StepPrediction", "predict_training_step", "periodic_points", "replay_equivalent", "restate",
           "PERIODIC_TOLERANCE"]

PERIODIC_TOLERANCE = 1e-9
"""Largest second difference (relative to the step time) that counts as periodic."""

_EXTENDED = ("end", "compute_busy", *BREAKDOWN_COLUMNS)
_NOT_EXTENDED = ("comm_busy", "exposed_comm", "overlap_fraction")
"""The replay's own communication columns count a receive from when it is posted, which is not periodic
(the breakdown's exposed communication is), so the periodic table leaves them out."""


@dataclass
class StepPrediction:
    """A predicted training step.

    ``metrics``: ``{name: (value, unit)}`` — ``step_time``, ``mfu``, ``hfu``,
    ``tflops_per_gpu`` (model FLOPs per second per GPU, 1e12), ``peak_memory_per_gpu``
    and the breakdown (:mod:`commsim.workloads.breakdown`) of the stage that finishes
    last, its idle time as ``pipeline_bubble``. ``cohorts``: one row per
    cohort (stage) with its busy times and breakdown, at the full micro-batch
    count. ``replayed``: the micro-batch counts actually replayed.
    ``last``: the result of the last replay (its op table and critical path are
    those of ``replayed[-1]`` micro-batches). ``config``: the configuration predicted.
    """

    metrics: dict[str, tuple[float, str]]
    cohorts: pd.DataFrame
    replayed: list[int]
    last: ReplayResult
    notes: list[str] = field(default_factory=list)
    config: TrainingConfig | None = None
    measured: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the metrics were derived from besides ``cohorts`` (step time, sequence length, ranks, device, peak
    memory): :func:`restate` derives them again for an equivalent configuration."""


def replay_equivalent(config: TrainingConfig) -> TrainingConfig:
    """The configuration whose step replays op for op as ``config``'s does: ``config`` itself, or the one
    standing for it.

    * Selective recomputation under flash attention recomputes nothing: flash attention keeps no score
      matrix for it to drop (:mod:`commsim.workloads._activations`: the same stored and working bytes) and
      the generator emits no score recomputation, so its step is the step of ``recompute: none``. Only the
      hardware FLOPs (``hfu``) differ, which Megatron's formula counts from the configuration, not the ops.
    * The distributed optimizer (ZeRO-1) without data or context parallelism shards over one rank: no
      bucket is reduced, no parameter gathered and the optimizer updates every parameter, as without it.

    A layout search predicts such configurations once (:func:`restate`).
    """
    update: dict[str, Any] = {}
    if config.recompute == "selective" and config.flash_attention:
        update["recompute"] = "none"
    if config.zero == 1 and config.dp * config.cp == 1:
        update.update(distributed_optimizer=False, zero_stage=0)
    return config.model_copy(update=update) if update else config


def restate(prediction: StepPrediction, model: TransformerSpec | str,
            config: TrainingConfig | dict[str, Any]) -> StepPrediction:
    """``prediction`` reported for ``config``, a configuration with the same step (:func:`replay_equivalent`).

    The replays are not repeated: their step time, cohorts, peak memory and notes are the same, and the
    metrics are derived again from ``config`` (Megatron's FLOP formulas).
    """
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    cfg = config if isinstance(config, TrainingConfig) else validate(TrainingConfig, dict(config))
    if prediction.config is None or replay_equivalent(cfg) != replay_equivalent(prediction.config):
        raise ConfigError(field="config", value=cfg.model_dump(mode="json"),
                          rule="does not replay as the configuration of the prediction given",
                          fix="predict this configuration with predict_training_step")
    measured = prediction.measured
    metrics = _metrics(spec, cfg, measured["step_time"], prediction.cohorts, measured)
    return replace(prediction, metrics=metrics, config=cfg, notes=list(prediction.notes))


def periodic_points(micro_batches: int, pp: int, virtual_stages: int = 1) -> list[int] | None:
    """The micro-batch counts to replay instead of ``micro_batches``, or ``None`` to replay them all.

    >>> periodic_points(64, 8)
    [8, 9, 10]
    >>> periodic_points(10, 8) is None
    True
    >>> periodic_points(16, 1)
    [1, 2, 3]
    >>> periodic_points(64, 4, virtual_stages=2)
    [8, 12, 16]
    """
    # interleaved: at m = pp every stage runs all its forwards first (Megatron's special case), so the
    # steady state starts at 2·pp
    first, spacing = (2 * pp, pp) if virtual_stages > 1 else (pp, 1)
    points = [first, first + spacing, first + 2 * spacing]
    return points if points[-1] < micro_batches else None


def predict_training_step(model: TransformerSpec | str, config: TrainingConfig | dict[str, Any],
                          simulation: Callable[[], Any], *, fast: bool = True, periodic: bool = True,
                          fold: str = "off", **replay_options: Any) -> StepPrediction:
    """Replay one training step of ``model`` under ``config`` and derive Megatron's metrics.

    ``simulation()`` returns a fresh :class:`~commsim.simulation.Simulation` for
    each replay. ``fast`` and ``replay_options`` go to :class:`Replay`; ``periodic``
    allows the periodic shortcut; ``fold`` (with ``fast``: ``off``, ``exact`` or ``always``) the
    folded layers (module docstring).
    """
    if fold not in ("off", "exact", "always"):
        raise ConfigError(field="fold", value=fold, rule="is not a folding mode", fix="use off, exact or always")
    spec = model if isinstance(model, TransformerSpec) else load_model(model)
    cfg = config if isinstance(config, TrainingConfig) else validate(TrainingConfig, dict(config))
    m = cfg.micro_batches
    virtual = int(getattr(cfg, "virtual_pipeline_stages", 1) or 1)
    points = periodic_points(m, cfg.pp, virtual) if periodic else None
    notes: list[str] = []
    folder = None
    if fast and fold != "off":
        folder, simulation = _folder(spec, cfg, simulation, replay_options, notes)
    runs: list[dict[str, Any]] = []
    for k in points or [m]:
        runs.append(_replay(spec, cfg.model_copy(update={"num_micro_batches": k}), simulation, fast, replay_options,
                            folder))
        if folder is not None and fold == "exact" and not runs[0]["exact"]:
            notes.append("folded layers: off because in-layer collectives share links with other traffic of the "
                         "step (folding would time them without it); replayed op by op")
            folder, runs = None, []
            break
    if not runs:
        runs = [_replay(spec, cfg.model_copy(update={"num_micro_batches": k}), simulation, fast, replay_options)
                for k in (points or [m])]
    if points is not None:
        extended = _extend(runs, points, m)
        if extended is None:
            notes.append(f"periodic replay: the step was not periodic from {points[0]} micro-batches on; "
                         f"replayed all {m}")
            runs = [_replay(spec, cfg, simulation, fast, replay_options, folder)]
            points = None
        else:
            step_time, cohorts = extended.step_time, extended.cohorts
            notes.append(f"periodic replay: replayed {points} micro-batches, found every stage's times periodic "
                         f"(second differences below {PERIODIC_TOLERANCE:g} of the step) and extended them to {m}")
            if extended.loose:
                worst = max(extended.loose.values())
                notes.append(f"periodic replay: on {len(extended.loose)} stage(s) (cohorts "
                             f"{', '.join(map(str, sorted(extended.loose)))}) the split of waiting time between "
                             f"exposed communication and idle is not periodic (second differences up to "
                             f"{worst:.3g} s); extended by its mean increment, approximate by up to "
                             f"{worst * (m - points[2]) / (points[2] - points[1]):.3g} s per column")
    if points is None:
        step_time, cohorts = runs[0]["step_time"], runs[0]["cohorts"]
    last = runs[-1]
    notes += last["notes"]
    metrics = _metrics(spec, cfg, step_time, cohorts, last)
    measured = {"step_time": step_time, **{k: last[k] for k in ("seq_len", "ranks", "device", "peak_memory")}}
    return StepPrediction(metrics=metrics, cohorts=cohorts, replayed=points or [m], last=last["result"], notes=notes,
                          config=cfg, measured=measured)


def _folder(spec: TransformerSpec, cfg: TrainingConfig, simulation: Callable[[], Any], options: dict[str, Any],
            notes: list[str]) -> tuple[LayerFolder | None, Callable[[], Any]]:
    """The layer folder of this step (``None`` with a note when it cannot fold) and the simulations left to use."""
    step = _Step(spec, cfg)
    first = simulation()
    used = [first]

    def again() -> Any:
        # the simulation made to check the refusal serves the first replay (the runner's first one has its faults)
        return used.pop() if used else simulation()

    refusal = fold_refusal(step, first, options)
    if refusal is not None:
        notes.append(f"folded layers: off because {refusal}")
        return None, again
    return probe_layers(step, simulation, options), again


def _replay(spec: TransformerSpec, cfg: TrainingConfig, simulation: Callable[[], Any], fast: bool,
            options: dict[str, Any], folder: LayerFolder | None = None) -> dict[str, Any]:
    trace = step_trace(_Step(spec, cfg), folder)
    sim = simulation()
    # the generator's own trace, just built: its cross-op rules hold by construction (tests validate them)
    options = {"record": "none", "validate": False, **options}
    replay = Replay(sim, trace, fast=fast, **options)
    result = replay.run()
    cohorts = result.cohorts.copy()
    parts = step_breakdown(replay, result.step_time)
    for column in BREAKDOWN_COLUMNS:
        cohorts[column] = parts[column].to_numpy()
    devices = [sim.devices[d] for d in replay.devices]
    peak = max((d.memory.peak for d in devices), default=0.0)
    notes = list(replay.notes)
    exact = folder is not None and folded_exactly(replay, folder)
    if folder is not None:
        # a folded layer is a delay op: compute busy time is the breakdown's (compute and recomputation run
        # on one stream, never at once); the replay's own communication columns miss the folded collectives
        cohorts["compute_busy"] = cohorts["compute"] + cohorts["recompute"]
        cohorts = cohorts.drop(columns=[c for c in _NOT_EXTENDED if c in cohorts.columns])
        notes.append("folded layers: each pass's layers replayed as three timed ops, each layer kind timed once per "
                     "stage by a probe replay; " + ("exact: in-layer groups have links of their own"
                                                   if exact else
                                                   "approximate: in-layer collectives share links with other traffic "
                                                   "of the step and were timed without it"))
    if fast and not replay.notes:
        notes.append("fast replay: compute and private-link collectives timed without the kernel (exact)")
    return {"step_time": result.step_time, "cohorts": cohorts, "result": result, "peak_memory": peak, "exact": exact,
            "device": devices[0].spec if devices else None, "ranks": trace.ranks, "notes": notes,
            "seq_len": trace.metadata["seq_len"]}


_WAITING = (*(c for c in BREAKDOWN_COLUMNS if c.startswith("exposed_")), "idle")
"""The classes of a stage's time that is not compute: their sum must be periodic, their split need not be."""


@dataclass
class _Extension:
    """A periodic step extended to the full micro-batch count; ``loose``: per cohort whose waiting time's split
    was not periodic, the largest second difference of a split column (seconds)."""

    step_time: float
    cohorts: pd.DataFrame
    loose: dict[int, float]


def _extend(runs: list[dict[str, Any]], points: list[int], m: int) -> _Extension | None:
    """Step time and cohort table at ``m`` micro-batches, or ``None`` when the three runs are not on a line.

    The step time, every stage's end, compute and recomputation and every stage's total waiting time
    (exposed communication plus idle) must be on a line (second difference within
    :data:`PERIODIC_TOLERANCE` of the step). How a stage's waiting time splits between exposed pipeline
    communication and idle may not be: on deep pipelines (64 stages of a 1T GPT, 8 interleaved stages of
    Llama-2 70B) a few stages' split moves by 0.1 ms between replays while the step, every stage's end and
    its total waiting time stay on their lines to 1e-14 of the step (the transfers themselves keep their
    durations; why the split moves is not identified). Where it is not on a line, the split columns grow by
    their mean increment over the replays (they still add up to the periodic total) and ``loose`` says by
    how much they strayed.
    """
    c = runs[-1]
    spacing = points[2] - points[1]
    scale = c["step_time"]
    steps = (m - points[2]) / spacing
    tolerance = PERIODIC_TOLERANCE * scale

    def second(x0: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        return np.abs(x2 - 2 * x1 + x0)

    def line(x0: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        return x2 + steps * (x2 - x1)

    def mean_slope(x0: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        return x2 + steps * (x2 - x0) / 2

    def values(column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x0, x1, x2 = (r["cohorts"][column].to_numpy(dtype=float) for r in runs)
        return x0, x1, x2

    times = tuple(np.array([r["step_time"]]) for r in runs)
    if second(*times)[0] > tolerance:
        return None
    cohorts = c["cohorts"].copy()
    waiting = [col for col in _WAITING if col in cohorts.columns]
    for column in (col for col in _EXTENDED if col not in waiting):
        x = values(column)
        if np.any(second(*x) > tolerance):
            return None
        cohorts[column] = line(*x)
    totals = tuple(sum(values(col)[k] for col in waiting) for k in range(3))
    if waiting and np.any(second(*totals) > tolerance):
        return None
    loose = np.zeros(len(cohorts))
    for column in waiting:
        loose = np.maximum(loose, second(*values(column)))
    off = loose > tolerance
    for column in waiting:
        x = values(column)
        cohorts[column] = np.where(off, mean_slope(*x), line(*x))
    cohorts = cohorts.drop(columns=[col for col in _NOT_EXTENDED if col in cohorts.columns])
    stages = cohorts["cohort"].to_numpy() if "cohort" in cohorts.columns else np.arange(len(cohorts))
    return _Extension(float(line(*times)[0]), cohorts,
                      {int(stages[k]): float(loose[k]) for k in np.flatnonzero(off)})


def _metrics(spec: TransformerSpec, cfg: TrainingConfig, step_time: float, cohorts: pd.DataFrame,
             last: dict[str, Any]) -> dict[str, tuple[float, str]]:
    seq = last["seq_len"]
    batch = cfg.micro_batch_size * cfg.micro_batches * cfg.dp
    top_k = int(getattr(cfg, "top_k", 1) or 1) if int(getattr(cfg, "num_experts", 0) or 0) > 1 else 1
    recompute = str(getattr(cfg, "recompute", "none") or "none")
    flops = model_flops(spec, seq_len=seq, global_batch=batch, top_k=top_k)
    hw = hardware_flops(spec, seq_len=seq, global_batch=batch, recompute=recompute, top_k=top_k)
    gpus = last["ranks"]
    peak = last["device"].peak(cfg.dtype) if last["device"] is not None else float("nan")
    per_gpu = flops / step_time / gpus if step_time > 0 else 0.0
    slowest = cohorts.loc[cohorts["end"].idxmax()]
    exposed = sum(float(slowest[c]) for c in BREAKDOWN_COLUMNS if c.startswith("exposed_"))
    metrics: dict[str, tuple[float, str]] = {
        "step_time": (step_time, "s"),
        "mfu": (per_gpu / peak, "fraction"),
        "hfu": (hw / step_time / gpus / peak if step_time > 0 else 0.0, "fraction"),
        "tflops_per_gpu": (per_gpu / 1e12, "TFLOP/s"),
        "peak_memory_per_gpu": (float(last["peak_memory"]), "B"),
        "model_flops_per_step": (flops, "FLOP"),
        "tokens_per_step": (float(batch * seq), "count"),
        "gpus": (float(gpus), "count"),
        "exposed_communication": (exposed, "s"),
    }
    for column in BREAKDOWN_COLUMNS:
        name = {"compute": "compute_time", "recompute": "recompute_time", "idle": "pipeline_bubble"}.get(column, column)
        metrics[name] = (float(slowest[column]), "s")
    return metrics
