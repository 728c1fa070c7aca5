"""Search the parallel layouts of a training job: enumerate, reject what cannot run, predict the rest, rank.

For a model, a cluster and a global batch, every combination of tensor- and
pipeline-parallel size, micro-batch size and — where the training generator has
them — virtual pipeline stages, activation recomputation and the distributed
optimizer is a candidate; data parallelism takes the remaining GPUs. A candidate
that does not divide (GPUs by TP × PP, heads by TP, layers by PP × virtual
stages, the global batch by micro-batch × DP, micro-batches by PP when
interleaved) is a *rejected* row with its reason, as is one that runs out of
memory in its replay. The others are predicted by
:func:`~commsim.workloads.prediction.predict_training_step` (fast, periodic
replay, folded layers and reused collectives: see :mod:`commsim.workloads.folding`) in parallel — local
processes or a Dask cluster, through
:func:`commsim.sweeps.run_tasks` — and ranked by step time. Each finished row is
appended to the CSV at once, so an interrupted search keeps what it finished.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from commsim.errors import CommsimError, ConfigError, OutOfMemoryError
from commsim.sweeps import RowWriter, run_tasks
from commsim.workloads import TrainingConfig
from commsim.workloads.breakdown import BREAKDOWN_COLUMNS
from commsim.workloads.models import TransformerSpec

__all__ = ["SearchResult", "SearchSpace", "alike_layouts", "enumerate_candidates", "expected_cost", "predict_layouts",
           "search", "SEARCH_COLUMNS", "METRIC_COLUMNS"]

LAYOUT_COLUMNS = ["tp", "pp", "dp", "micro_batch_size", "num_micro_batches", "virtual_pipeline_stages", "recompute",
                  "distributed_optimizer"]
METRIC_COLUMNS = ["step_time", "mfu", "hfu", "tflops_per_gpu", "peak_memory_per_gpu", "compute_time",
                  "recompute_time", *(c for c in BREAKDOWN_COLUMNS if c.startswith("exposed_")), "pipeline_bubble"]
SEARCH_COLUMNS = [*LAYOUT_COLUMNS, "status", "reason", *METRIC_COLUMNS]
"""Columns of a search table (and its CSV), in order."""


@dataclass
class SearchSpace:
    """The values each choice ranges over (``None``: every divisor that could work).

    ``virtual_pipeline_stages``, ``recompute`` and ``distributed_optimizer`` are
    searched only when the training generator has the field; otherwise they stay
    at their plain value (1, ``none``, off) and :func:`search` says so.
    """

    tp: list[int] | None = None
    pp: list[int] | None = None
    micro_batch_size: list[int] | None = None
    virtual_pipeline_stages: list[int] | None = None
    recompute: list[str] | None = None
    distributed_optimizer: list[bool] | None = None

    def values(self, spec: TransformerSpec, gpus: int) -> dict[str, list[Any]]:
        """Each choice's values for ``spec`` on ``gpus`` GPUs."""
        def divisors(n: int, limit: int) -> list[int]:
            return [d for d in range(1, min(n, limit) + 1) if n % d == 0]

        return {
            "tp": self.tp or [t for t in (1, 2, 4, 8) if t <= gpus],
            "pp": self.pp or [p for p in divisors(spec.layers, gpus) if p <= 64],
            "micro_batch_size": self.micro_batch_size or [1, 2, 4, 8],
            "virtual_pipeline_stages": self.virtual_pipeline_stages or [1, 2, 4],
            "recompute": self.recompute or ["none", "selective", "full"],
            "distributed_optimizer": self.distributed_optimizer or [False, True],
        }


@dataclass
class SearchResult:
    """Every candidate: ranked predictions first (``rank`` 1 is fastest), then the rejected ones."""

    table: pd.DataFrame
    notes: list[str]

    @property
    def ranked(self) -> pd.DataFrame:
        """The predicted candidates, fastest first."""
        return self.table[self.table["status"] == "ok"].sort_values("step_time").reset_index(drop=True)

    @property
    def rejected(self) -> pd.DataFrame:
        """The candidates that cannot run, with their reasons."""
        return self.table[self.table["status"] == "rejected"].reset_index(drop=True)


def _reason(spec: TransformerSpec, gpus: int, global_batch: int, seq_len: int, c: dict[str, Any]) -> str | None:
    """Why candidate ``c`` cannot run (before any replay), or ``None``."""
    tp, pp, mbs, v = c["tp"], c["pp"], c["micro_batch_size"], c["virtual_pipeline_stages"]
    if gpus % (tp * pp):
        return f"tp x pp = {tp * pp} does not divide the {gpus} GPUs"
    if spec.heads % tp:
        return f"tp = {tp} does not divide the {spec.heads} attention heads"
    if spec.layers % (pp * v):
        return f"pp x virtual stages = {pp * v} does not divide the {spec.layers} layers"
    dp = gpus // (tp * pp)
    if global_batch % (mbs * dp):
        return f"micro-batch x dp = {mbs} x {dp} does not divide the global batch of {global_batch}"
    if v > 1 and (pp == 1 or (global_batch // (mbs * dp)) % pp):
        return f"interleaving {v} virtual stages needs pp > 1 dividing the {global_batch // (mbs * dp)} micro-batches"
    if tp > 1 and (mbs * seq_len) % tp:
        return f"sequence parallelism needs tp = {tp} to divide the {mbs * seq_len} tokens of a micro-batch"
    return None


def enumerate_candidates(spec: TransformerSpec, gpus: int, global_batch: int, seq_len: int,
                         space: SearchSpace | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All candidates as ``(runnable layouts, rejected rows)``; a layout has the :data:`LAYOUT_COLUMNS`."""
    values = (space or SearchSpace()).values(spec, gpus)
    runnable, rejected = [], []
    for combo in itertools.product(*values.values()):
        c = dict(zip(values, combo, strict=True))
        c["dp"] = gpus // (c["tp"] * c["pp"]) if gpus % (c["tp"] * c["pp"]) == 0 else 0
        c["num_micro_batches"] = (global_batch // (c["micro_batch_size"] * c["dp"])) if c["dp"] else 0
        layout = {k: c[k] for k in LAYOUT_COLUMNS}
        reason = _reason(spec, gpus, global_batch, seq_len, c)
        if reason is None:
            runnable.append(layout)
        else:
            rejected.append({**layout, "status": "rejected", "reason": reason})
    return runnable, rejected


@functools.lru_cache(maxsize=4)
def _cluster(topology: str, params: tuple[tuple[str, Any], ...]) -> Any:
    from commsim.network.loader import load_topology

    return load_topology(topology, overrides=dict(params) or None)


def predict_candidate(model: dict[str, Any], topology: str, params: tuple[tuple[str, Any], ...],
                      layout: dict[str, Any], seq_len: int, replay: dict[str, Any]) -> dict[str, Any]:
    """Predict one layout in whatever process gets it: its row (``status`` ok, or rejected with the reason)."""
    return predict_layouts(model, topology, params, [layout], seq_len, replay)[0]


def predict_layouts(model: dict[str, Any], topology: str, params: tuple[tuple[str, Any], ...],
                    layouts: list[dict[str, Any]], seq_len: int, replay: dict[str, Any]) -> list[dict[str, Any]]:
    """Predict layouts whose steps replay alike (:func:`~commsim.workloads.prediction.replay_equivalent`) in
    whatever process gets them: their rows, in order.

    The step is replayed once, for the first layout that fits in memory; the others take its replays with
    their own metrics (:func:`~commsim.workloads.prediction.restate`). Should that replay fail, each layout
    is predicted on its own, so every row is what predicting it alone gives.
    """
    from commsim.workloads.prediction import restate

    spec = TransformerSpec(**model)
    rows: list[dict[str, Any]] = []
    done = None
    for layout in layouts:
        config = _config(layout, seq_len)
        out = _predict(spec, topology, params, layout, config, replay if done is None else None)
        if out is None:
            out = restate(done, spec, config)
        if isinstance(out, dict):
            rows.append(out)
        else:
            rows.append(_ok_row(layout, out.metrics))
            done = done or out
    return rows


def _config(layout: dict[str, Any], seq_len: int) -> dict[str, Any]:
    """The training configuration of ``layout``."""
    config = {k: v for k, v in layout.items() if k in TrainingConfig.model_fields}
    config.update(seq_len=seq_len, sequence_parallel=layout["tp"] > 1)
    return config


def _ok_row(layout: dict[str, Any], metrics: dict[str, tuple[float, str]]) -> dict[str, Any]:
    return {**layout, "status": "ok", "reason": "", **{name: metrics[name][0] for name in METRIC_COLUMNS}}


def _predict(spec: TransformerSpec, topology: str, params: tuple[tuple[str, Any], ...], layout: dict[str, Any],
             config: dict[str, Any], replay: dict[str, Any] | None) -> Any:
    """The prediction of ``layout``, or its rejected row; ``None`` when it fits and ``replay`` is ``None`` (it
    is not to be replayed)."""
    from commsim.devices import device_spec
    from commsim.simulation import Simulation
    from commsim.workloads import training_memory
    from commsim.workloads.prediction import predict_training_step

    cluster = _cluster(topology, params)
    try:
        # the step's peak memory by hand (the replay allocates exactly this): a layout that cannot fit is
        # rejected before any replay
        first = device_spec(cluster.device_spec(cluster.devices[0]))
        training_memory(spec, config).require_fit(first.memory, first.name)
        if replay is None:
            return None
        return predict_training_step(spec, config, lambda: Simulation(cluster, record_usage=False), **replay)
    except OutOfMemoryError as error:
        return {**layout, "status": "rejected", "reason": "does not fit in memory: " + str(error).split(". Fix")[0]}
    except ConfigError as error:
        if error.field == "memory per GPU":
            return {**layout, "status": "rejected", "reason": f"does not fit in memory: {error.value} ({error.rule})"}
        return {**layout, "status": "rejected", "reason": str(error)}
    except CommsimError as error:
        return {**layout, "status": "rejected", "reason": str(error)}


def search(spec: TransformerSpec, topology: str, *, global_batch: int, gpus: int | None = None,
           topology_params: dict[str, Any] | None = None, seq_len: int | None = None,
           space: SearchSpace | None = None, jobs: int = 1, dask: Any = None, csv_path: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None, replay: dict[str, Any] | None = None,
           limit: int | None = None) -> SearchResult:
    """Enumerate, reject, predict in parallel and rank the layouts of ``spec`` on ``topology``.

    ``topology`` is a file or shorthand (loaded in each worker, with
    ``topology_params`` applied); ``gpus`` defaults to all its devices; ``replay``
    options go to :func:`~commsim.workloads.prediction.predict_training_step`;
    ``limit`` predicts only ``limit`` runnable layouts, evenly spaced in enumeration order (a sample, for
    timing).
    """
    params = tuple(sorted((topology_params or {}).items()))
    available = len(_cluster(topology, params).devices)
    gpus = available if gpus is None else gpus
    if not 1 <= gpus <= available:
        raise ConfigError(field="--num-gpus", value=gpus, rule=f"must be between 1 and the topology's {available} "
                          "devices", fix=f"give at most {available}")
    if global_batch < 1:
        raise ConfigError(field="--global-batch-size", value=global_batch, rule="must be at least 1",
                          fix="give the sequences per step")
    if jobs < 1:
        raise ConfigError(field="--jobs", value=jobs, rule="must be at least 1", fix="give 1 or more processes")
    seq = seq_len or spec.default_seq_len
    runnable, rejected = enumerate_candidates(spec, gpus, global_batch, seq, space)
    if limit is not None and limit < len(runnable):
        runnable = runnable[:: max(1, len(runnable) // max(limit, 1))][:limit]
    notes: list[str] = []
    rows: list[dict[str, Any]] = list(rejected)
    writer = RowWriter(csv_path, SEARCH_COLUMNS)
    total = len(runnable) + len(rejected)
    for row in rejected:
        writer.write(row)

    def collect(_index: int, finished: list[dict[str, Any]]) -> None:
        for row in finished:
            rows.append(row)
            writer.write(row)
        if progress is not None:
            progress(len(rows), total)

    model = spec.model_dump()
    options = {"fast": True, "fold": "always", "reuse_collectives": True, **(replay or {})}
    if options["fast"] and (options["fold"] != "off" or options["reuse_collectives"]):
        notes.append("layouts predicted with folded layers and reused collectives (commsim.workloads.folding): "
                     "exact where tensor- and data-parallel groups have links of their own, otherwise in-layer and "
                     "repeated collectives are timed without the traffic they share links with")
    try:
        if progress is not None:
            progress(len(rows), total)
        run_tasks(predict_layouts, [(model, topology, params, group, seq, options)
                                     for group in alike_layouts(runnable, seq)], jobs=jobs, dask=dask, collect=collect)
    finally:
        writer.close()
    return SearchResult(table=rank_table(rows), notes=notes)


def alike_layouts(layouts: list[dict[str, Any]], seq_len: int) -> list[list[dict[str, Any]]]:
    """``layouts`` in groups whose steps replay alike (each predicted once: :func:`predict_layouts`), the groups
    longest to predict first.

    Worker processes take tasks in the order given: with the longest first, the last ones to finish are short
    and the processes end together. The order follows :func:`expected_cost`; it changes no result.
    """
    from commsim.config import validate
    from commsim.workloads.prediction import replay_equivalent

    groups: dict[Any, list[dict[str, Any]]] = {}
    for k, layout in enumerate(layouts):
        try:
            key: Any = replay_equivalent(validate(TrainingConfig, _config(layout, seq_len))).model_dump_json()
        except CommsimError:
            key = k     # its prediction says what is wrong with it
        groups.setdefault(key, []).append(layout)
    return sorted(groups.values(), key=lambda group: -expected_cost(group[0]))


def expected_cost(layout: dict[str, Any]) -> float:
    """A rough relative cost of predicting ``layout`` (for ordering work only).

    Two terms: the pipeline passes the periodic replays run (stages × replayed micro-batches × virtual
    stages), and the data-parallel collectives simulated flow by flow (their first runs), which grow with
    the data-parallel size and the gradient bytes per rank. Their weight, 6, is a least-squares fit of the
    CPU time per layout on 26 layouts of Llama-2 70B on 128 H100 (``benchmarks/bench_megatron.py``).
    """
    from commsim.workloads.prediction import periodic_points

    tp, pp, dp, v = layout["tp"], layout["pp"], layout["dp"], layout["virtual_pipeline_stages"]
    m = layout["num_micro_batches"]
    replayed = sum(periodic_points(m, pp, v) or [m])
    return pp * replayed * v + 6.0 * (dp - 1) * tp * pp * dp / tp ** 2


def rank_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table: predicted ones by step time with their ``rank``, then the rejected ones."""
    table = pd.DataFrame(rows).reindex(columns=SEARCH_COLUMNS)
    ok = table[table["status"] == "ok"].sort_values("step_time", kind="stable")
    ok.insert(0, "rank", range(1, len(ok) + 1))
    bad = table[table["status"] != "ok"].copy()
    bad.insert(0, "rank", pd.NA)
    return pd.concat([ok, bad], ignore_index=True) if len(bad) else ok.reset_index(drop=True)
