"""The TPI-LLM study: which models a few edge devices can serve, how fast, with how much memory, and why.

``run`` simulates every model on every testbed size and window (and on the 4
laptops), the all-reduce curves, and the baselines; ``validation`` checks the
paper's claims. See the package docstring for the model and its assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from commsim.devices.spec import DeviceSpec, device_spec
from commsim.faults.injector import accepted_faults, acts_on
from commsim.network.topology import Topology
from commsim.systems._study import Study, StudyContext, StudyOutput
from commsim.systems.tpi_llm import figures
from commsim.systems.tpi_llm.allreduce import ALGORITHMS, link_latency, time_allreduce
from commsim.systems.tpi_llm.hardware import LAPTOP_LINKS, edge_topology, wifi_topology
from commsim.systems.tpi_llm.params import TPIParams
from commsim.systems.tpi_llm.partition import COMPUTE_BYTES, tp_blocks
from commsim.systems.tpi_llm.plans import SYSTEMS, galaxy, offload, pipeline, single_device, tpi
from commsim.systems.tpi_llm.run import BREAKDOWN, InferenceSetup, InferenceStats, needed_memory, simulate_inference
from commsim.systems.tpi_llm.scheduler import loose_condition, tight_condition
from commsim.validation import Check, relative_check
from commsim.workloads.models import TransformerSpec, load_model

__all__ = ["TPILLMStudy", "SUMMARY_COLUMNS", "memory_without_scheduler", "run_setting", "summary_csv"]

SUMMARY_COLUMNS = ["model", "devices", "window", "allreduce", "ttft_s", "token_latency_s", "peak_memory_gb", "fits"]
"""Columns of ``summary.csv``, in order: ``peak_memory_gb`` is what the run needs on its most loaded device,
whether it fits or not; ``fits`` is ``fits`` or ``oom`` (then the times read ``OOM``)."""

LAPTOP_SETTING = "4 laptops"
"""The ``devices`` value of the Wi-Fi laptop rows in ``summary.csv``."""

GB = 1e9

README_KLONET = {"llama-2-3b": 2.0, "llama-2-7b": 3.0, "llama-3.1-8b": 4.0, "llama-2-13b": 3.0, "yi-34b": 14.0}
"""Token latency (s) of TPI-LLM on the 8-device Klonet testbed, public README (FP32, CPU)."""
README_ACCELERATE = {"llama-2-3b": 16.0, "llama-2-7b": 26.0, "llama-3.1-8b": 31.0}
"""Token latency (s) of Accelerate on one 8 GB M1 laptop, public README."""
README_TRANSFORMERS = {"llama-2-3b": 30.0, "llama-2-7b": 56.0, "llama-3.1-8b": 65.0}
"""Token latency (s) of Transformers on one 8 GB M1 laptop, public README."""
CALIBRATION_MODEL = "yi-34b"
"""The README latency ``load_bandwidth`` is calibrated on (the others are predictions)."""
README_HOME = {"llama-2-3b": 2.0, "llama-2-7b": 5.0, "llama-3.1-8b": 8.0, "llama-2-13b": 9.0, "yi-34b": 29.0}
"""Token latency (s) of TPI-LLM on the 4 laptops over Wi-Fi (home testbed), public README."""


def _options(params: TPIParams, ctx: StudyContext | None = None) -> dict[str, Any]:
    return {"prompt_tokens": params.prompt_tokens, "decode_tokens": params.decode_tokens,
            "file_bytes": params.file_bytes, "staging": params.staging, "runtime_memory": params.runtime_memory,
            "release": params.release, "tree_fanout": params.tree_fanout,
            "collective": ctx.collective if ctx is not None else None, "seed": ctx.seed if ctx is not None else 0,
            "faults": list(ctx.faults) if ctx is not None else []}


def _device(params: TPIParams, value: Any, field: str) -> DeviceSpec:
    """A device of the study, its disk read bandwidth replaced by ``load_bandwidth`` when that is set."""
    spec = device_spec(value, field=field)
    if params.load_bandwidth is not None:
        spec = spec.model_copy(update={"disk_read_bandwidth": params.load_bandwidth})
    return spec


def _testbed(params: TPIParams, devices: int, **overrides: Any) -> Any:
    kwargs = {"bandwidth": params.link_bandwidth, "latency": params.link_latency,
              "devices_per_router": params.devices_per_router,
              "device": _device(params, params.testbed_device, "testbed_device")}
    kwargs.update(overrides)
    return edge_topology(devices, **kwargs)


def _laptops(params: TPIParams) -> Any:
    return wifi_topology([(name, _device(params, spec, f"laptops.{name}"), bandwidth, latency)
                          for name, spec, bandwidth, latency in LAPTOP_LINKS])


def run_setting(params: TPIParams, model: TransformerSpec, topology: Any, window: int | None, *,
                allreduce: str | None = None, shares: Any = None, ctx: StudyContext | None = None,
                record: bool = False) -> InferenceStats:
    """One TPI-LLM run of ``model`` on ``topology`` with ``window`` (None: scheduler off)."""
    setup = tpi(model, topology, window=window, allreduce=allreduce or params.allreduce,
                shares=params.shares if shares is None else shares, record=record, **_options(params, ctx))
    stats = simulate_inference(setup)
    # a run that does not fit is measured again on devices that hold anything: its peak is what it needs
    stats.needed_memory = stats.peak_memory.copy() if stats.ok else needed_memory(setup)
    return stats


def summary_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary.csv`` as written: the times of a run that does not fit read ``OOM``."""
    out = summary.copy()
    for column in ("ttft_s", "token_latency_s"):
        out[column] = [("OOM" if fits == "oom" else value) for value, fits in zip(out[column], out["fits"], strict=True)]
    return out


def memory_without_scheduler(params: TPIParams, model: TransformerSpec, devices: int) -> float:
    """Bytes the master would hold with the scheduler off: all its blocks, KV cache, activations, runtime."""
    blocks = tp_blocks(model, [1.0 / devices] * devices)[0]
    weights = sum(b.nbytes for b in blocks)
    kv = sum(2.0 * b.kv_width for b in blocks if b.kind == "attn") * (params.prompt_tokens + params.decode_tokens)
    return weights + kv * COMPUTE_BYTES + params.runtime_memory


def _row(model: str, devices: Any, window: int | None, allreduce: str, stats: InferenceStats) -> dict[str, Any]:
    return {"model": model, "devices": devices, "window": "off" if window is None else window,
            "allreduce": allreduce, "ttft_s": stats.ttft, "token_latency_s": stats.token_latency,
            "peak_memory_gb": float(stats.needed_memory.max()) / GB, "fits": "fits" if stats.ok else "oom"}


def _detail(setting: str, model: str, devices: Any, window: int | None, allreduce: str,
            stats: InferenceStats) -> dict[str, Any]:
    row = {"setting": setting, **_row(model, devices, window, allreduce, stats), "status": stats.status,
           "master_peak_gb": stats.peak_memory[0] / GB if stats.peak_memory.size else math.nan,
           "worker_peak_gb": stats.peak_memory[1:].max() / GB if stats.peak_memory.size > 1 else math.nan,
           "peak_swapped_gb": stats.peak_swapped.max() / GB if stats.ok and stats.peak_swapped.size else math.nan,
           "startup_s": stats.startup}
    for i, name in enumerate(BREAKDOWN):
        row[f"master_{name}_s"] = float(stats.breakdown[0, i]) if stats.ok else math.nan
    row["master_disk_busy_s"] = float(stats.disk_busy[0]) if stats.ok else math.nan
    row["message"] = stats.message
    return row


def _check_faults(faults: list[Any], settings: dict[str, Topology]) -> None:
    """Every scenario fault must name a link or device of at least one setting's network (none is dropped)."""
    accepted_faults(faults, lambda fault: any(acts_on(fault, topo) for topo in settings.values()),
                    rule=f"names a link or device of none of the study's networks ({', '.join(settings)} devices)",
                    fix="name a testbed link such as ['dev1', 'router1'] or a device such as 'dev1' (laptops: 'm1', "
                        "'i5', 'i7a', 'i7b' on 'ap')")


class TPILLMStudy(Study):
    """TPI-LLM (arXiv 2410.00531): tensor-parallel inference on edge devices, star all-reduce, sliding window."""

    name = "tpi_llm"
    title = "TPI-LLM: tensor-parallel LLM inference on edge devices"
    params = TPIParams
    accepts_faults = True

    # ------------------------------------------------------------------ run
    def run(self, params: TPIParams, ctx: StudyContext) -> StudyOutput:
        p = params
        progress: Callable[[float, float, str], None] = ctx.progress
        windows = p.window_values()
        specs = {name: load_model(name) for name in p.models}
        settings: list[tuple[str, Any, Topology]] = [("testbed", n, _testbed(p, n)) for n in p.device_counts]
        if p.laptops:
            settings.append(("laptops", LAPTOP_SETTING, _laptops(p)))
        jobs = [(setting, devices, topo, name, window) for setting, devices, topo in settings for name in p.models
                for window in windows]
        _check_faults(ctx.faults, {str(devices): topo for _, devices, topo, _, _ in jobs})
        extra = len(p.models) * 4 if p.baselines else 0
        total = len(jobs) + extra + 1
        first_window = next((w for w in windows if w is not None), 2)
        big = max(p.device_counts)
        rows, details, memory_rows = [], [], []
        recorded: InferenceStats | None = None
        results: dict[tuple[str, Any, int | None], InferenceStats] = {}
        for k, (setting, devices, topo, name, window) in enumerate(jobs):
            progress(k, total, f"{name} on {devices}{' devices' if setting == 'testbed' else ''}, window "
                               f"{'off' if window is None else window}")
            record = (setting == "testbed" and devices == big and name == p.timeline_model and window == first_window)
            shares = p.laptop_shares if setting == "laptops" else p.shares
            stats = run_setting(p, specs[name], topo, window, shares=shares, ctx=ctx, record=record)
            results[(name, devices, window)] = stats
            if record:
                recorded = stats
            rows.append(_row(name, devices, window, p.allreduce, stats))
            details.append(_detail(setting, name, devices, window, p.allreduce, stats))
            for d, peak in zip(stats.devices, stats.peak_memory.tolist(), strict=True):
                memory_rows.append({"model": name, "devices": devices, "window": "off" if window is None else window,
                                    "device": d, "peak_gb": peak / GB, "status": stats.status})
        summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
        runs = pd.DataFrame(details)
        if p.timeline_model not in p.models:   # the timeline model is not in the grid: record it on its own
            recorded = run_setting(p, load_model(p.timeline_model), _testbed(p, big), first_window, ctx=ctx,
                                   record=True)
        progress(len(jobs), total, "all-reduce curves")
        curves_latency, curves_bandwidth = self._curves(p, big)
        baselines = pd.DataFrame()
        if p.baselines:
            baselines = self._baselines(p, specs, results, big, first_window, ctx,
                                        lambda i, what: progress(len(jobs) + 1 + i, total, what))
        progress(total, total, "done")
        conditions = self._conditions(runs, recorded)
        out_figures = self._figures(p, summary, runs, curves_latency, curves_bandwidth, baselines, recorded, big,
                                    first_window)
        metrics = self._metrics(p, summary, curves_latency, big, first_window)
        notes = self._notes(p, ctx)
        tables = {"runs": runs, "device_memory": pd.DataFrame(memory_rows), "allreduce_vs_latency": curves_latency,
                  "allreduce_vs_bandwidth": curves_bandwidth, "scheduler_conditions": conditions}
        if not baselines.empty:
            tables["baselines"] = baselines
        return StudyOutput(metrics=metrics, tables=tables, csv={"summary": summary_csv(summary)}, figures=out_figures,
                           result=recorded.result if recorded is not None else None, notes=notes)

    # ------------------------------------------------------------------ pieces of run
    def _curves(self, p: TPIParams, devices: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """All-reduce time per algorithm vs per-link latency and vs link bandwidth (one decode token)."""
        nbytes = load_model(p.curve_model).hidden * COMPUTE_BYTES

        def row(algorithm: str, latency: float, bandwidth: float) -> dict[str, Any]:
            topo = _testbed(p, devices, latency=latency, bandwidth=bandwidth)
            return {"algorithm": algorithm, "link_latency_ms": latency * 1e3, "bandwidth_mbps": bandwidth * 8 / 1e6,
                    "bytes": nbytes, "time_ms": time_allreduce(topo, algorithm, nbytes, tree_fanout=p.tree_fanout) * 1e3}

        return (pd.DataFrame([row(a, lat, p.link_bandwidth) for a in ALGORITHMS for lat in p.curve_latencies]),
                pd.DataFrame([row(a, p.link_latency, bw) for a in ALGORITHMS for bw in p.curve_bandwidths]))

    def _baselines(self, p: TPIParams, specs: dict[str, TransformerSpec],
                   results: dict[tuple[str, Any, int | None], InferenceStats], devices: int, window: int,
                   ctx: StudyContext, progress: Callable[[int, str], None]) -> pd.DataFrame:
        options = _options(p, ctx)
        topo = _testbed(p, devices)
        baseline = _device(p, p.baseline_device, "baseline_device")
        rows = []
        i = 0
        for name, spec in specs.items():
            runs = {
                SYSTEMS[0]: results.get((name, devices, window)),
                SYSTEMS[1]: results.get((name, devices, None)),
                SYSTEMS[2]: galaxy(spec, topo, shares=p.shares, **options),
                SYSTEMS[3]: pipeline(spec, topo, window=window, **options),
                SYSTEMS[4]: offload(spec, baseline, budget=p.offload_budget, **options),
                SYSTEMS[5]: single_device(spec, baseline, **options),
            }
            for system, job in runs.items():
                if isinstance(job, InferenceSetup):
                    progress(i, f"baseline {system}: {name}")
                    i += 1
                    job = simulate_inference(job)
                if job is None:
                    continue
                where = f"{devices} testbed devices" if system in SYSTEMS[:4] else "1 baseline device"
                rows.append({"model": name, "system": system, "where": where, "status": job.status,
                             "ttft_s": job.ttft, "token_latency_s": job.token_latency,
                             "peak_memory_gb": job.max_peak_memory / GB})
        table = pd.DataFrame(rows)
        tpi_latency = table[table["system"] == SYSTEMS[0]].set_index("model")["token_latency_s"]
        table["tpi_llm_reduction"] = 1.0 - table["model"].map(tpi_latency) / table["token_latency_s"]
        return table

    @staticmethod
    def _conditions(runs: pd.DataFrame, recorded: InferenceStats | None) -> pd.DataFrame:
        """Steady-state conditions of the recorded run's master (measured block times and loads)."""
        if recorded is None or recorded.result is None:
            return pd.DataFrame()
        spans = recorded.result.spans
        master = recorded.devices[0]
        t_start = recorded.token_ends[-2]
        t_end = recorded.token_ends[-1]
        part = spans[(spans["device"] == master) & (spans["start"] >= t_start) & (spans["end"] <= t_end)]
        kernels = part[part["kind"] == "compute"]
        loads = part[part["kind"] == "disk"]
        comm = part[part["name"].str.startswith("all-reduce")]
        rows = []
        for kind in ("attn", "ffn"):
            c = kernels[kernels["name"].str.startswith(kind)]
            lo = loads[loads["name"].str.startswith(f"load {kind}")]
            rows.append({"block": kind, "compute_s": float((c["end"] - c["start"]).mean()),
                         "allreduce_s": float((comm["end"] - comm["start"]).mean()),
                         "load_s": float((lo["end"] - lo["start"]).mean())})
        table = pd.DataFrame(rows)
        busy = (table["compute_s"] + table["allreduce_s"]).tolist()
        load = table["load_s"].tolist()
        table["tight_condition"] = tight_condition(busy, load)
        table["loose_condition"] = loose_condition(busy, load)
        return table

    def _figures(self, p: TPIParams, summary: pd.DataFrame, runs: pd.DataFrame, curves_latency: pd.DataFrame,
                 curves_bandwidth: pd.DataFrame, baselines: pd.DataFrame, recorded: InferenceStats | None,
                 devices: int, window: int) -> list[Any]:
        out = [
            figures.allreduce_curve(curves_latency, "link_latency_ms", "per-link latency (ms)",
                                    f"All-reduce of one token ({p.curve_model}) on {devices} devices vs link latency "
                                    f"({p.link_bandwidth * 8 / 1e6:g} Mbps)"),
            figures.allreduce_curve(curves_bandwidth, "bandwidth_mbps", "link bandwidth (Mbps)",
                                    f"All-reduce of one token ({p.curve_model}) on {devices} devices vs bandwidth "
                                    f"({p.link_latency * 1e3:g} ms per link)"),
        ]
        for w in p.windows:
            out.append(figures.token_latency_bars(summary, w))
        out.append(figures.memory_bars(summary, devices))
        part = runs[(runs["setting"] == "testbed") & (runs["devices"] == devices)
                    & (runs["window"].astype(str) == str(window)) & (runs["status"] == "ok")]
        if not part.empty:
            out.append(figures.breakdown_bars(part, [f"master_{b}_s" for b in BREAKDOWN],
                                              f"Where the master's decode time goes, {devices} devices, window "
                                              f"{window} (disk reads overlap these)"))
        if not baselines.empty:
            out.append(figures.baseline_bars(baselines))
        if recorded is not None and recorded.result is not None and len(recorded.token_ends) >= 2:
            shown = recorded.devices[:2]
            out.append(figures.prefetch_timeline(
                recorded.result.spans, recorded.token_ends[-2], recorded.token_ends[-1], shown,
                f"One decode token of {p.timeline_model} on {devices} devices, window {window}: disk loads (io) run "
                f"beside kernels and all-reduces; grey = stalls waiting for a load"))
        return out

    @staticmethod
    def _metrics(p: TPIParams, summary: pd.DataFrame, curves: pd.DataFrame, devices: int,
                 window: int) -> dict[str, tuple[float, str]]:
        metrics: dict[str, tuple[float, str]] = {}
        at = summary[(summary["devices"].astype(str) == str(devices)) & (summary["window"].astype(str) == str(window))]
        for _, row in at.iterrows():
            metrics[f"{row['model']} token latency ({devices} dev, w={window})"] = (row["token_latency_s"], "s")
        served = summary[summary["token_latency_s"].notna()]
        metrics["configurations that fit in memory"] = (float(len(served)), f"of {len(summary)}")
        base = curves[np.isclose(curves["link_latency_ms"], p.link_latency * 1e3)]
        for _, row in base.iterrows():
            metrics[f"{row['algorithm']} all-reduce of one token"] = (row["time_ms"] / 1e3, "s")
        return metrics

    @staticmethod
    def _notes(p: TPIParams, ctx: StudyContext) -> list[str]:
        notes = [
            "summary.csv: devices is the number of testbed devices, or '4 laptops' for the Wi-Fi setting; window "
            "is the scheduler's window in blocks, or 'off' (scheduler off: every block resident); peak_memory_gb is "
            "what the run needs on its most loaded device in decimal GB (1e9 bytes), whether it fits or not (a run "
            "that does not fit is replayed on devices with unlimited RAM to measure it); fits says fits or oom, and "
            "the latencies of an oom row read OOM (it does not fit in RAM + swap; see the runs table).",
            "Testbed: edge_cpu_8core preset (8 cores at 614 GFLOPS FP32 peak x 0.5, 25.6 GB/s DRAM, 8 GB + 4 GB "
            "swap). Every device loads weights at load_bandwidth "
            f"({'its own disk rate' if p.load_bandwidth is None else f'{p.load_bandwidth / 1e6:g} MB/s'}; the "
            "default 730 MB/s is calibrated so that Yi-34B on 8 testbed devices decodes at the public README's "
            "14 s/token: every other latency, including the laptops and Accelerate, is a prediction).",
            f"Time to first token is the prompt's forward pass over all {p.prompt_tokens} prompt tokens: GEMMs sized "
            "by the prompt length (2·T·parameters FLOP per block), attention over the prompt under the causal mask, "
            "the two all-reduces per layer of the whole prompt's activations (T x hidden FP32 values: bandwidth, "
            "not only latency, counts here) and the window loads the pass needs; each kernel is a roofline on the "
            "device. Compute-rate assumptions of the edge CPU (edge_cpu_8core): 8 cores x 2.4 GHz x 32 FP32 FLOP "
            "per cycle (AVX2: two 8-wide FMA units, 2 FLOP per FMA, per Intel's published core design) = 614 "
            "GFLOP/s peak, of which 0.5 is achieved (an assumption for FP32 GEMMs in PyTorch on CPU, not fitted); "
            "25.6 GB/s DRAM (dual-channel DDR4-1600, assumed). The paper states only the core count and FP32.",
            "Network: each device behind its own home router, routers on one core router; "
            f"{p.link_bandwidth * 8 / 1e6:g} Mbps and {p.link_latency * 1e3:g} ms per link; a route's time is its "
            "latency plus bytes over the bottleneck rate (fluid max-min sharing, no per-hop store-and-forward).",
            "Laptops: assumed M1 / i5 / i7 specs (the laptop_* device presets) on a Wi-Fi star; each laptop's "
            "link is its own full-duplex link (shared airtime is not modelled: optimistic).",
            "Weights FP32 in memory, read from "
            f"{p.file_dtype} files ({p.file_bytes:g} B/parameter){' with a staging copy while loading' if p.staging else ''}; "
            f"the master holds embedding and head; prompt {p.prompt_tokens} tokens; token latency is the mean of "
            f"{p.decode_tokens} decode token(s), the loader prefetching into the next token as a longer generation "
            "would; TTFT counts from the prompt with the first window already loaded.",
            f"Runtime memory {p.runtime_memory / GB:g} GB per device (0.22 GB measured for import torch on CPU + "
            "0.28 GB assumed for transformers, KV-store and buffers).",
            f"Tree all-reduce: {p.tree_fanout}-ary heap tree from the master (fan-out 3 gives the paper's 16 tau on "
            "8 devices); ps: a server behind its own router; ring: reduce-scatter + all-gather.",
            "Swap: a block whose bytes are partly in swap reads that part at the swap bandwidth before its kernel "
            "(a lower bound: evictions and LRU thrashing are not charged).",
            "Baselines: Accelerate-like offloading and the single device run on the baseline device (an M1 with "
            f"32 GB of swap by default), offload budget {p.offload_budget:g} of RAM; Galaxy = ring tensor "
            "parallelism with every slice resident; pipeline uses the same window as TPI-LLM.",
        ]
        if ctx.topology is not None:
            notes.append("The scenario's topology is not used: the study builds the testbed and Wi-Fi networks from "
                         "its parameters (link_bandwidth, link_latency, devices_per_router).")
        if ctx.faults:
            notes.append(f"Scenario faults ({len(ctx.faults)}) act in every inference run whose network has the link "
                         "or device they name (testbed sizes, the laptops, Galaxy and pipeline), at their times from "
                         "the run's start (t0 is later: the first window loads first); the single-device baselines "
                         "and the all-reduce curves run without them.")
        return notes

    # ------------------------------------------------------------------ validation
    def validation(self) -> list[Check]:
        return validation_checks(TPIParams())


def validation_checks(p: TPIParams, models: list[str] | None = None) -> list[Check]:
    """The study's checks against the paper (``models`` limits the per-model rows)."""
    area = "tpi_llm"
    checks: list[Check] = []
    tau = p.link_latency
    topo8 = _testbed(p, 8)
    for algorithm, hops in (("star", 8), ("tree", 16), ("ring", 56)):
        measured = link_latency(topo8, algorithm, tree_fanout=p.tree_fanout)
        checks.append(relative_check(area, f"{algorithm} all-reduce link latency, 8 devices, 4-link routes",
                                     hops * tau, measured, 1e-9,
                                     f"paper: {hops} tau (tau = {tau * 1e3:g} ms per link); simulated "
                                     f"{measured / tau:.6g} tau with a vanishing message"))
    shared = _testbed(p, 3, devices_per_router=3)
    apart = _testbed(p, 3)
    for label, topo, hops in (("behind one router", shared, 2), ("behind their own routers", apart, 4)):
        one_way = link_latency(topo, "star") / 2
        checks.append(relative_check(area, f"star, 3 devices {label}: worker-to-master latency", hops * tau, one_way,
                                     1e-9, f"paper: {hops} tau each way (all-reduce {2 * hops} tau); simulated "
                                           f"{one_way / tau:.6g} tau"))
    names = models or p.models
    specs = {name: load_model(name) for name in names}
    window = 2
    star: dict[str, InferenceStats] = {}
    for name in names:
        star[name] = run_setting(p, specs[name], topo8, window)
    if "llama-2-70b" in specs:
        stats = star["llama-2-70b"]
        peak = stats.max_peak_memory
        held = ", ".join(f"{v / GB:.2f}" for v in stats.peak_memory[:2])
        checks.append(relative_check(area, "Llama-2-70B peak memory per device, 8 devices, window 2", 3.1e9, peak,
                                     0.10, f"paper: 3.1 GB; simulated peaks master/worker {held} GB: runtime "
                                           f"{p.runtime_memory / GB:g} GB (assumed) + head and embedding FP32 + the "
                                           "embedding's FP16 staging copy at the token boundary"))
        off = memory_without_scheduler(p, specs["llama-2-70b"], 8)
        checks.append(Check(area, "Llama-2-70B peak memory cut by the scheduler, 8 devices", 0.90, 1.0 - peak / off,
                            0.05, False, f"paper: 90% less; without the scheduler the master needs {off / GB:.1f} GB "
                                         f"(out of memory on 8 GB + 4 GB), with window 2 {peak / GB:.2f} GB"))
    fast = _testbed(p, 8, bandwidth=1e9 / 8)
    for name in names:
        base = star[name]
        quick = run_setting(p, specs[name], fast, window)
        change = (base.token_latency - quick.token_latency) / base.token_latency
        checks.append(Check(area, f"{name}: token latency change 300 Mbps -> 1 Gbps (8 devices, window 2)", 0.0,
                            change, 0.10, False, f"paper: barely changes; {base.token_latency:.3f} s -> "
                                                 f"{quick.token_latency:.3f} s ({change:+.1%}); pass if under 10%"))
    for name in names:
        ring = run_setting(p, specs[name], topo8, window, allreduce="ring")
        a, b = star[name].token_latency, ring.token_latency
        checks.append(Check(area, f"{name}: star beats ring on token latency (8 devices, window 2)", 1.0,
                            float(a < b), 0.0, False, f"star {a:.3f} s vs ring {b:.3f} s ({a / b - 1:+.1%}); "
                                                       "1 = star faster"))
    for name, published in README_KLONET.items():
        if name not in star:
            continue
        simulated = star[name].token_latency
        role = "calibration target of load_bandwidth" if name == CALIBRATION_MODEL else "prediction"
        checks.append(relative_check(area, f"{name}: token latency on the 8-device testbed (README)", published,
                                     simulated, 0.30, f"README (Klonet, 8 devices): {published:g} s; {role}"))
    wifi = _laptops(p)
    for name, published in README_HOME.items():
        if name not in specs:
            continue
        home = run_setting(p, specs[name], wifi, window, shares=p.laptop_shares)
        checks.append(relative_check(area, f"{name}: token latency on the 4 laptops over Wi-Fi (README)", published,
                                     home.token_latency, 0.30, f"README (home, 4 laptops): {published:g} s; "
                                                               "prediction (assumed laptop specs)"))
    device = _device(p, p.baseline_device, "baseline_device")
    for name, published in README_ACCELERATE.items():
        if name not in star:
            continue
        acc = simulate_inference(offload(specs[name], device, budget=p.offload_budget, **_options(p)))
        mine = star[name].token_latency
        reduction = 1.0 - mine / acc.token_latency
        expected = 1.0 - README_KLONET[name] / published
        checks.append(Check(area, f"{name}: token latency cut vs Accelerate offloading", expected, reduction, 0.10,
                            False, f"paper: over 80% less (README {README_KLONET[name]:g} s vs {published:g} s = "
                                   f"{expected:.1%}); simulated {mine:.2f} s (8 devices) vs {acc.token_latency:.2f} s "
                                   "(Accelerate-like offload on one M1)"))
    for name, published in README_TRANSFORMERS.items():
        if name not in star:
            continue
        one = simulate_inference(single_device(specs[name], device, **_options(p)))
        mine = star[name].token_latency
        reduction = 1.0 - mine / one.token_latency
        expected = 1.0 - README_KLONET[name] / published
        checks.append(Check(area, f"{name}: token latency cut vs Transformers on one device", expected, reduction,
                            0.10, False, f"paper: over 90% less (README {README_KLONET[name]:g} s vs {published:g} s = "
                                         f"{expected:.1%}); simulated {mine:.2f} s (8 devices) vs "
                                         f"{one.token_latency:.2f} s (whole model on one M1, "
                                         f"{one.peak_swapped.max() / GB:.1f} GB in swap; the swap model is a lower "
                                         "bound: no eviction or thrashing cost)"))
    return checks
