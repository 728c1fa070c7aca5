"""Fit a device's per-kernel compute model to measured Megatron-LM iteration times.

The data are NVIDIA's 2020 Megatron-LM scaling tables (``iteration_time.csv``:
GPT-2-style models of 1.2B-8.7B parameters, sequence 1,024, vocabulary 51,200,
tensor parallelism 1-8 inside one DGX A100, alone and with 128-way data
parallelism). Each DGX A100 row is simulated as Megatron-LM ran it:

* **One step, one server.** The training generator builds the step (TP as
  measured, one micro-batch of ``global_batch / dp`` = 16 sequences: the 2020
  code had no gradient accumulation; fp16 weights, activations and gradients;
  unfused attention with a score matrix, as before flash attention) and the
  replay runs it on ``topologies/dgx_a100.yaml`` with the GPU set to the
  A100 SXM4 **40 GB** (the tables are dated 2020-09-11, before the 80 GB part was
  announced) and its collectives costed by the NCCL calibration beside the
  topology (Simple protocol; in flows mode, which is exact for ring all-reduces
  on the uncongested NVSwitch: the step times agree with steps mode to 1e-12).
* **Activation recomputation** is an input (``recompute``). Megatron-LM's 2020
  scripts checkpoint activations, and the tables' TFLOP/s column follows the
  formula with recomputation (``96·B·s·l·h²(1 + s/6h + V/16lh)``), so ``full`` is
  the faithful choice; the generator re-runs each layer's forward before its backward.
* **Synchronous TP all-reduces** (``tp_overlap=False``): the 2020 code did not
  overlap the backward all-reduces with the weight-gradient GEMMs.
* **128-way data parallelism** is not simulated on 1,024 GPUs: the one-server
  replay gives when each gradient bucket is ready (the generator's buckets, in
  backward order); each bucket's all-reduce over the 128 replicas is timed by the
  calibrated NCCL model (:func:`commsim.collectives.nccl.tune`, on the real
  128-server topology's paths), the buckets run one after another on the
  data-parallel stream as in the replay, and the optimizer waits for the last.
  This assumes the DP traffic does not slow the TP collectives or the kernels
  (it crosses InfiniBand, they use NVLink and HBM).

The fit: ``gemm_efficiency`` and ``memory_efficiency`` of the compute model (tile,
tile prologue/epilogue depth and launch overhead stay at their stated values) by least
squares on relative errors. Each replay is linearised as *compute busy time
(a sum of the model's kernel times) + the time the compute stream waits*; the
parameters are solved on that, the rows re-simulated and the wait updated until
the parameters settle. A parameter that ends at its bound is refused by name.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from commsim.devices.compute_model import ComputeModel
from commsim.errors import ConfigError
from commsim.network.shipped import topologies_folder
from commsim.shared_data import shared_data_folder
from commsim.workloads._training import training_trace
from commsim.workloads.models import TransformerSpec
from commsim.workloads.trace import Trace

__all__ = [
    "DGX_A100_TOPOLOGY",
    "FIT_PARAMETERS",
    "MEGATRON_DATA_VARIABLE",
    "MegatronFit",
    "MegatronRow",
    "MegatronSetup",
    "RowPrediction",
    "as_megatron_2020",
    "fit_megatron",
    "leave_one_out",
    "predict_rows",
    "read_megatron_csv",
    "save_compute_model",
    "shared_table",
]

DGX_A100_TOPOLOGY = topologies_folder() / "dgx_a100.yaml"
"""The DGX A100 topology the rows ran on (shipped in ``commsim/topologies``; its NCCL calibration beside it)."""

MEGATRON_DATA_VARIABLE = "COMMSIM_MEGATRON_DATA"
"""The environment variable naming the table's file, when it is not in the shared data folder."""


def shared_table() -> Path:
    """The 2020 table: ``$COMMSIM_MEGATRON_DATA`` if set, else its file in the shared data folder."""
    import os

    default = shared_data_folder("megatron-lm-2020-scaling") / "iteration_time.csv"
    return Path(os.environ.get(MEGATRON_DATA_VARIABLE, default))

FIT_PARAMETERS: dict[str, tuple[float, float]] = {
    "gemm_efficiency": (0.2, 1.0),
    "memory_efficiency": (0.2, 1.0),
}
"""The fitted parameters and their bounds (fractions of peak FLOP/s and of HBM bandwidth).

The tile prologue/epilogue depth ``gemm_k_overhead`` is not fitted: with it free the
four one-server rows leave a valley of equally good (efficiency, depth) pairs, so it
is derived from the spec sheet instead (see the data file's source)."""

_COLUMNS = ("case", "hidden_size", "attention_heads", "num_layers", "TP_model_parallel_partitions", "DP", "system",
            "num_gpus", "global_batch_size", "seq_len", "vocab", "iteration_time_ms")


@dataclass(frozen=True)
class MegatronRow:
    """One measured configuration (a DGX A100 row of the CSV); ``measured`` in seconds."""

    case: str
    hidden: int
    heads: int
    layers: int
    tp: int
    dp: int
    gpus: int
    global_batch: int
    seq_len: int
    vocab: int
    measured: float

    @property
    def label(self) -> str:
        """A short name: ``8B TP8 DP128``."""
        return f"{self.case} TP{self.tp} DP{self.dp}"

    def model(self) -> TransformerSpec:
        """The GPT-2-style model of the row (FFN 4h, learned positions, tied embeddings, biases, LayerNorm)."""
        return TransformerSpec(name=f"megatron-gpt2-{self.case.lower()}", layers=self.layers, hidden=self.hidden,
                               heads=self.heads, ffn_hidden=4 * self.hidden, vocab=self.vocab,
                               max_seq_len=self.seq_len, default_seq_len=self.seq_len)


def read_megatron_csv(path: str | Path) -> list[MegatronRow]:
    """The DGX A100 rows of ``iteration_time.csv`` (the DGX-2 V100 rows are left out)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field="CSV", value=str(path), rule="does not exist",
                          fix="give ../shared/data/megatron-lm-2020-scaling/iteration_time.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(field="CSV columns", value=missing, rule="are missing", source=str(path),
                              fix="give the Megatron-LM scaling table with its published columns")
        rows = []
        for i, raw in enumerate(reader):
            if "A100" not in raw["system"]:
                continue
            try:
                rows.append(MegatronRow(
                    case=raw["case"], hidden=int(raw["hidden_size"]), heads=int(raw["attention_heads"]),
                    layers=int(raw["num_layers"]), tp=int(raw["TP_model_parallel_partitions"]), dp=int(raw["DP"]),
                    gpus=int(raw["num_gpus"]), global_batch=int(raw["global_batch_size"]),
                    seq_len=int(raw["seq_len"]), vocab=int(raw["vocab"]),
                    measured=float(raw["iteration_time_ms"]) * 1e-3))
            except ValueError as exc:
                raise ConfigError(field=f"row {i + 1}", value=raw.get("case"), rule=f"has a bad number ({exc})",
                                  fix="correct the row", source=str(path)) from None
    if not rows:
        raise ConfigError(field="CSV", value=str(path), rule="has no DGX A100 rows", fix="give the 2020 table")
    return rows


@dataclass(frozen=True)
class MegatronSetup:
    """How the rows are simulated (see the module docstring for why each default)."""

    topology: Path
    nccl_calibration: Path
    device: str = "a100_sxm4_40gb"
    recompute: str = "full"
    micro_batch_size: int | None = None
    dtype: str = "fp16"
    grad_dtype: str = "fp16"
    flash_attention: bool = False
    tp_overlap: bool = False

    def training_config(self, row: MegatronRow, dp: int) -> dict[str, Any]:
        """The generator's configuration for ``row`` with ``dp`` replicas."""
        per_replica = row.global_batch // row.dp
        micro = self.micro_batch_size or per_replica
        if per_replica % micro:
            raise ConfigError(field="micro_batch_size", value=micro,
                              rule=f"does not divide the {per_replica} sequences per replica of {row.label}",
                              fix="give a divisor of global_batch / dp")
        config: dict[str, Any] = {
            "tp": row.tp, "dp": dp, "micro_batch_size": micro, "num_micro_batches": per_replica // micro,
            "seq_len": row.seq_len, "dtype": self.dtype, "grad_dtype": self.grad_dtype,
            "flash_attention": self.flash_attention, "track_memory": False}
        if self.recompute not in ("none", "full", "selective"):
            raise ConfigError(field="recompute", value=self.recompute, rule="is not a recomputation mode",
                              fix="use none, selective or full")
        config["recompute"] = self.recompute
        return config

    def trace(self, row: MegatronRow, dp: int) -> Trace:
        """The step of ``row`` with ``dp`` replicas, scheduled as the 2020 code ran it (:func:`as_megatron_2020`)."""
        trace = training_trace(row.model(), self.training_config(row, dp))
        return trace if self.tp_overlap else as_megatron_2020(trace)


@dataclass(frozen=True)
class RowPrediction:
    """The simulated step of one row: ``predicted`` (s), its compute busy and waiting parts for one server."""

    row: MegatronRow
    predicted: float
    single_server: float
    compute_busy: float
    dp_exposed: float

    @property
    def error(self) -> float:
        """``predicted / measured - 1``."""
        return self.predicted / self.row.measured - 1.0


@dataclass
class MegatronFit:
    """A fitted compute model, the rows it was fitted on and its per-row predictions."""

    model: ComputeModel
    fitted_on: list[str]
    predictions: list[RowPrediction]
    iterations: int
    setup: MegatronSetup


# ---------------------------------------------------------------------------------------------------- simulation
def as_megatron_2020(trace: Trace) -> Trace:
    """``trace`` with the tensor-parallel all-reduces of the backward pass synchronous, as the 2020 code ran them.

    The 2020 Megatron-LM code had no asynchronous all-reduce overlapping the
    weight-gradient GEMM, so the compute op after each TP collective waits for it.
    """
    out = [program.model_copy(update={"ops": _synchronous_tp(list(program.ops))}) for program in trace.programs]
    return trace.model_copy(update={"programs": out})


def _synchronous_tp(ops: list[Any]) -> list[Any]:
    out: list[Any] = []
    previous = None
    for op in ops:
        if (previous is not None and previous.kind == "collective" and previous.stream == "tp_comm"
                and op.kind == "compute" and previous.id not in op.deps):
            op = op.model_copy(update={"deps": [*op.deps, previous.id]})
        out.append(op)
        previous = op
    return out


class _RowRun:
    """One row's one-server trace, its replay at some parameters, and what the linearisation needs."""

    def __init__(self, row: MegatronRow, setup: MegatronSetup) -> None:
        self.row, self.setup = row, setup
        self.trace: Trace = setup.trace(row, dp=1)
        program = self.trace.programs[0]
        self.compute_ops = [op for op in program.ops if op.kind == "compute"]
        self.wait = 0.0
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.step = math.nan
        self.spec: Any = None

    def busy(self, model: ComputeModel, spec: Any) -> float:
        """Seconds the compute stream is busy: the sum of the model's kernel times (each alone)."""
        total = 0.0
        for op in self.compute_ops:
            timing = model.timing(spec, op.flops, op.bytes, op.dtype, op.kernel_shape())
            total += max(timing.compute_time, timing.memory_bytes / spec.memory_bandwidth) + timing.launch_delay
        return total

    def replay(self, model: ComputeModel) -> float:
        """Replay the one-server step with ``model``; keep op end times and the compute stream's wait."""
        from commsim.collectives.calibrate import load_calibration
        from commsim.collectives.nccl_run import collective_config
        from commsim.network.loader import load_topology
        from commsim.simulation import Simulation
        from commsim.workloads.replay import replay

        topo = load_topology(self.setup.topology, overrides={
            "servers": 1, "device": {"base": self.setup.device, "compute_model": model}})
        sim = Simulation(topo, record_usage=False)
        config = collective_config(load_calibration(self.setup.nccl_calibration), "Simple", mode="flows")
        out = replay(sim, self.trace, collective=config, record="none")
        ops = out.ops[out.ops["cohort"] == 0]
        self.ends = dict(zip(ops["op_id"], ops["end"], strict=True))
        self.starts = dict(zip(ops["op_id"], ops["start"], strict=True))
        self.step = out.step_time
        self.spec = sim.devices[topo.devices[0]].spec
        self.wait = self.step - self.busy(model, self.spec)
        return self.step


def _dp_step(row: MegatronRow, run: _RowRun, setup: MegatronSetup) -> float:
    """The step of ``row`` with its replicas: ``run``'s one-server timeline + bucketed NCCL all-reduces."""
    from commsim.collectives.calibrate import load_calibration
    from commsim.collectives.nccl import describe_cluster, tune
    from commsim.network.loader import load_topology

    if row.dp == 1:
        return run.step
    trace = setup.trace(row, dp=row.dp)
    buckets = [op for op in trace.programs[0].ops if op.kind == "collective" and op.group == "dp"]
    per_server = 8
    topo = load_topology(setup.topology, overrides={"servers": math.ceil(row.gpus / per_server),
                                                    "device": setup.device})
    group = [topo.devices[d * row.tp] for d in range(row.dp)]   # rank = dp_index * tp + tp_index
    cluster = describe_cluster(topo, group)
    params = load_calibration(setup.nccl_calibration)
    free = 0.0
    for bucket in buckets:
        ready = max(run.ends[dep] for dep in bucket.deps)
        free = max(ready, free) + tune(cluster, "all_reduce", float(bucket.bytes), params).time
    optimizer_start, optimizer_end = run.starts["optimizer"], run.ends["optimizer"]
    return max(optimizer_start, free) + (optimizer_end - optimizer_start)


def predict_rows(rows: Sequence[MegatronRow], model: ComputeModel, setup: MegatronSetup) -> list[RowPrediction]:
    """Simulate every row with ``model`` (one-server replay; DP rows add the bucketed all-reduces)."""
    out = []
    single: dict[tuple[Any, ...], _RowRun] = {}
    for row in rows:
        key = (row.case, row.hidden, row.layers, row.tp, row.global_batch // row.dp)
        run = single.get(key)
        if run is None:
            run = single[key] = _RowRun(row, setup)
            run.replay(model)
        predicted = _dp_step(row, run, setup)
        out.append(RowPrediction(row, predicted, run.step, run.step - run.wait, predicted - run.step))
    return out


# ---------------------------------------------------------------------------------------------------- fitting
def _with(model: ComputeModel, x: np.ndarray) -> ComputeModel:
    return model.model_copy(update=dict(zip(FIT_PARAMETERS, (float(v) for v in x), strict=True)))


def _solve(runs: Sequence[_RowRun], base: ComputeModel, x0: np.ndarray) -> np.ndarray:
    """Least squares of the relative errors of the linearised rows (damped Gauss-Newton inside the bounds)."""
    lo = np.array([b[0] for b in FIT_PARAMETERS.values()])
    hi = np.array([b[1] for b in FIT_PARAMETERS.values()])
    scale = hi - lo
    measured = np.array([r.row.measured for r in runs])

    def residual(x: np.ndarray) -> np.ndarray:
        model = _with(base, x)
        times = np.array([r.busy(model, r.spec) + r.wait for r in runs])
        return times / measured - 1.0

    x = np.clip(x0, lo, hi)
    r = residual(x)
    damping = 1e-3
    for _ in range(60):
        jac = np.empty((len(r), len(x)))
        for j in range(len(x)):
            step = 1e-6 * scale[j]
            probe = x.copy()
            probe[j] = probe[j] + step if probe[j] + step <= hi[j] else probe[j] - step
            jac[:, j] = (residual(probe) - r) / (probe[j] - x[j])
        js = jac * scale
        improved = False
        for _ in range(12):
            a = js.T @ js + damping * np.diag(np.diag(js.T @ js) + 1e-12)
            delta = -np.linalg.solve(a, js.T @ r) * scale
            candidate = np.clip(x + delta, lo, hi)
            rc = residual(candidate)
            if rc @ rc < r @ r:
                x, r, damping, improved = candidate, rc, damping / 3, True
                break
            damping *= 4
        if not improved or np.all(np.abs(delta) < 1e-7 * scale):
            break
    return x


def _at_bound(x: np.ndarray) -> list[str]:
    out = []
    for (name, (lo, hi)), value in zip(FIT_PARAMETERS.items(), x, strict=True):
        tol = 1e-3 * (hi - lo)
        if value <= lo + tol or value >= hi - tol:
            out.append(f"{name} = {value:.4g} (bounds {lo:g}..{hi:g})")
    return out


def fit_megatron(rows: Sequence[MegatronRow], base: ComputeModel, setup: MegatronSetup, *,
                 fit_on: Sequence[MegatronRow] | None = None, max_iterations: int = 6) -> MegatronFit:
    """Fit ``FIT_PARAMETERS`` of ``base`` to ``fit_on`` (default: the one-server rows) and predict all ``rows``.

    Raises :class:`ConfigError` when a fitted parameter ends at its bound (the model misses a mechanism).
    """
    fit_rows = list(fit_on) if fit_on is not None else [r for r in rows if r.dp == 1]
    if len(fit_rows) < len(FIT_PARAMETERS):
        raise ConfigError(field="fit rows", value=len(fit_rows), rule=f"are fewer than the {len(FIT_PARAMETERS)} "
                          "parameters", fix="fit on more measured rows")
    runs = [_RowRun(row, setup) for row in fit_rows]
    x = np.array([getattr(base, name) for name in FIT_PARAMETERS], dtype=float)
    model = base
    iterations, settled = 0, False
    while not settled and iterations < max_iterations:
        iterations += 1
        for run in runs:
            run.replay(model)
        new = _solve(runs, base, x)
        settled = bool(np.all(np.abs(new - x) <= 1e-4 * np.maximum(np.abs(x), 1e-3)))
        x, model = new, _with(base, new)
    bound = _at_bound(x)
    if bound:
        raise ConfigError(field="compute model fit", value="; ".join(bound),
                          rule="ends at its bound, so the model misses a mechanism these rows need",
                          fix="check the setup (recompute, micro-batch, device) or extend the model; the bound "
                              "is not a fit")
    sources = dict(base.sources)
    names = ", ".join(r.label for r in fit_rows)
    for name in FIT_PARAMETERS:
        sources[name] = (f"fitted by 'commsim calibrate megatron' on the DGX A100 rows {names} of "
                         f"megatron-lm-2020-scaling/iteration_time.csv (recompute {setup.recompute}, micro-batch "
                         f"{setup.micro_batch_size or 'global/dp'}, {setup.device})")
    model = model.model_copy(update={"sources": sources})
    predictions = predict_rows(rows, model, setup)
    return MegatronFit(model=model, fitted_on=[r.label for r in fit_rows], predictions=predictions,
                       iterations=iterations, setup=setup)


def leave_one_out(rows: Sequence[MegatronRow], model: ComputeModel, setup: MegatronSetup) -> list[RowPrediction]:
    """Each one-server row predicted by a fit to the other one-server rows (started from ``model``).

    Linearised around ``model``'s replays; each held-out row is then simulated with its own fit.
    """
    single = [r for r in rows if r.dp == 1]
    runs = [_RowRun(row, setup) for row in single]
    for run in runs:
        run.replay(model)
    x0 = np.array([getattr(model, name) for name in FIT_PARAMETERS], dtype=float)
    out = []
    for i, row in enumerate(single):
        others = [run for j, run in enumerate(runs) if j != i]
        x = _solve(others, model, x0)
        held = _RowRun(row, setup)
        held.replay(_with(model, x))
        out.append(RowPrediction(row, held.step, held.step, held.step - held.wait, 0.0))
    return out


def save_compute_model(fit: MegatronFit, path: str | Path, *, held_out: Sequence[RowPrediction] = ()) -> None:
    """Write the fitted model as a compute-model data file (parameters with sources, and the fit's rows)."""
    from commsim.config import dump_yaml
    from commsim.devices import device_spec
    from commsim.units import format_time

    spec = device_spec(fit.setup.device)
    model = fit.model
    sheet = spec.source or "device preset"
    parameters: dict[str, Any] = {}
    for name in ("tile_m", "tile_n", "gemm_efficiency", "gemm_k_overhead", "memory_efficiency", "launch_overhead"):
        value = getattr(model, name)
        value = format_time(value) if name == "launch_overhead" else (round(value, 5) if isinstance(value, float)
                                                                       else value)
        parameters[name] = {"value": value, "source": model.sources.get(name, "")}
    held = {p.row.label: p for p in held_out}
    data = {
        "kind": "commsim/compute-model",
        "device": fit.setup.device,
        "description": (f"Per-kernel compute model of the {spec.name}, fitted by 'commsim calibrate megatron' "
                        "(see commsim/workloads/megatron_calibration.py for how each row is simulated)."),
        "spec": {
            "compute_units": {"value": spec.compute_units, "source": sheet},
            "clock": {"value": f"{spec.clock / 1e9:g} GHz" if spec.clock else None, "source": sheet},
            f"peak_{fit.setup.dtype}": {"value": f"{spec.peak(fit.setup.dtype) / 1e12:g} TFLOPS", "source": sheet},
            "memory_bandwidth": {"value": f"{spec.memory_bandwidth / 1e9:g} GB/s", "source": sheet},
        },
        "parameters": parameters,
        "fit": {
            "data": "../shared/data/megatron-lm-2020-scaling/iteration_time.csv (DGX A100 rows)",
            "setup": {"recompute": fit.setup.recompute, "micro_batch_size": fit.setup.micro_batch_size or "global/dp",
                      "dtype": fit.setup.dtype, "grad_dtype": fit.setup.grad_dtype,
                      "flash_attention": fit.setup.flash_attention, "tp_overlap": fit.setup.tp_overlap},
            "fitted_on": list(fit.fitted_on),
            "rows": [{"row": p.row.label, "measured_ms": round(p.row.measured * 1e3, 1),
                      "predicted_ms": round(p.predicted * 1e3, 1), "error": round(p.error, 4),
                      "role": "fitted" if p.row.label in fit.fitted_on else "predicted",
                      **({"held_out_error": round(held[p.row.label].error, 4)} if p.row.label in held else {})}
                     for p in fit.predictions],
        },
    }
    dump_yaml(data, path)
