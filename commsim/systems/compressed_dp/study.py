"""The ``compressed_dp`` study: data-parallel training with compressed gradients, against inter-node bandwidth.

Run it with ``commsim run scenarios/compressed_dp.yaml -o DIR``; it writes
``DIR/iteration_vs_bandwidth.csv`` (compressor, variant, Gbit/s, iteration time,
breakdown, bytes), the regime, run-mean, payload and convergence tables, and a
dashboard. ``commsim validate --only compressed_dp`` runs :mod:`.validation`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from commsim.systems._study import Study, StudyContext, StudyOutput
from commsim.systems.compressed_dp import analysis, figures
from commsim.systems.compressed_dp.params import CompressedDPParams
from commsim.systems.compressed_dp.regimes import STEADY
from commsim.systems.compressed_dp.workload import MAX_CO2_STEPS, MAX_PERIOD, MEASURE_STEPS
from commsim.validation import Check

__all__ = ["CompressedDPStudy"]

CSV_COLUMNS = ["compressor", "spec", "variant", "gbit_per_s", "iteration_time", "compute", "compression",
               "exposed_comm", "payload_packed", "payload_naive", "reply_bytes", "wire_bytes", "dense_bytes",
               "ratio_packed"]


class CompressedDPStudy(Study):
    """Iteration time and bytes per iteration of compressed data-parallel training against bandwidth."""

    name = "compressed_dp"
    title = "Compressed data-parallel training: payloads from real tensors on their collectives, against bandwidth"
    params = CompressedDPParams
    accepts_faults = True

    def run(self, params: CompressedDPParams, ctx: StudyContext) -> StudyOutput:
        prep = analysis.prepare(params, ctx.topology, collective=ctx.collective, progress=ctx.progress,
                                faults=ctx.faults)
        runs = analysis.sweep(prep, ctx.progress)
        steady = analysis.iterations(prep, runs)
        regimes = analysis.warmup_table(prep, runs)
        means = analysis.run_means(prep, runs)
        payloads = analysis.payload_table(prep)
        tables: dict[str, pd.DataFrame] = {"iterations": steady, "regimes": regimes, "run_means": means,
                                           "payloads": payloads}
        figs = [
            figures.iteration_curves(steady, prep.nominal_gbit,
                                     f"{prep.layout.model} on {len(prep.group)} GPUs: steady-state iteration time "
                                     "against inter-node bandwidth (sync solid, CO2 dashed)"),
            figures.bytes_bars(steady, "Bytes per iteration and rank (steady state)"),
            figures.breakdown_bars(steady, _nearest(prep.grid, prep.nominal_gbit),
                                   f"Time breakdown at the topology's {prep.nominal_gbit:.4g} Gbit/s ports"),
            figures.breakdown_bars(steady, min(prep.grid), f"Time breakdown at {min(prep.grid):.4g} Gbit/s"),
            figures.warmup_bars(means, _nearest(prep.grid, prep.nominal_gbit),
                                f"Warm-ups: mean over {params.train_steps} steps vs steady state at "
                                f"{prep.nominal_gbit:.4g} Gbit/s"),
        ]
        if params.convergence.enabled:
            results, summary = self._convergence(params)
            tables["convergence"] = results
            tables["convergence_summary"] = summary
            figs.append(figures.convergence_curves(
                results, f"Tiny-model convergence run (not {prep.layout.model}): {params.convergence.model} of the "
                         f"compression module, {params.convergence.workers} workers, {params.convergence.steps} "
                         "steps on this CPU"))
        result = self._timeline(prep)
        metrics = self._metrics(prep, steady, means, runs)
        csv = {"iteration_vs_bandwidth": steady[CSV_COLUMNS]}
        notes = self._notes(prep, payloads)
        if prep.faults:
            notes.append(f"Scenario faults ({len(prep.faults)}) happen in every simulated run (each bandwidth, variant "
                         "and compressor) at their times from the run's first step; the unlimited-network runs of the "
                         "breakdown see them too.")
        loose = runs[~runs["periodic"]]
        if len(loose):
            notes.append(f"{len(loose)} of {int((runs['variant'] == 'co2').sum())} CO2 runs did not repeat exactly "
                         f"within {MAX_CO2_STEPS} steps (a backlog that settles slowly when communication and compute "
                         "per step are close); their iteration time is the mean of the last "
                         f"{MAX_PERIOD * MEASURE_STEPS} steps (column periodic = false in the regimes table).")
        return StudyOutput(metrics=metrics, tables=tables, csv=csv, figures=figs, result=result, notes=notes)

    # ------------------------------------------------------------------ parts
    def _convergence(self, params: CompressedDPParams) -> tuple[pd.DataFrame, pd.DataFrame]:
        from commsim.compression import convergence_check, convergence_summary

        conv = params.convergence
        results = convergence_check(conv.compressors, model=conv.model, steps=conv.steps, workers=conv.workers,
                                    eval_every=conv.eval_every, seed=params.seed)
        return results, convergence_summary(results)

    def _timeline(self, prep: analysis.Prepared) -> Any:
        p = prep.params
        entry = p.entry(p.timeline.compressor)
        key = next(r.key for r in prep.regimes[entry.name] if r.label == STEADY)
        steps = p.timeline.steps if p.timeline.variant == "sync" else max(p.timeline.steps, p.co2_tau + 2)
        stats = analysis.run(prep, key, p.timeline.variant, _nearest(prep.grid, prep.nominal_gbit), record=True,
                             steps=steps)
        result = stats.result.result
        # each bucket's ops ran on streams of their own (compression.s<step>.b<bucket>...): show the three queues
        result.spans["stream"] = result.spans["stream"].str.replace(r"\.s\d+\.b\d+(\..*)?$", "", regex=True)
        return result

    def _metrics(self, prep: analysis.Prepared, steady: pd.DataFrame, means: pd.DataFrame,
                 runs: pd.DataFrame) -> dict[str, tuple[float, str]]:
        nominal = _nearest(prep.grid, prep.nominal_gbit)
        low = min(prep.grid)
        base = prep.params.compressors[0].name
        metrics: dict[str, tuple[float, str]] = {
            "ranks": (float(len(prep.group)), "count"),
            "parameters": (float(prep.layout.parameters), "count"),
            "compute_time": (prep.compute, "s"),
            "nominal_port_bandwidth": (prep.nominal_gbit, "Gbit/s"),
        }
        for row in steady.itertuples(index=False):
            if row.gbit_per_s in (nominal, low):
                tag = "nominal" if row.gbit_per_s == nominal else f"{low:g}gbit"
                metrics[f"iteration_{tag}_{row.variant}_{_safe(row.compressor)}"] = (float(row.iteration_time), "s")
                speed = getattr(row, "speedup_vs_" + _safe(base))
                metrics[f"speedup_{tag}_{row.variant}_{_safe(row.compressor)}"] = (float(speed), "x")
        for name, part in steady.groupby("compressor", sort=False):
            first = part.iloc[0]
            metrics[f"payload_ratio_{_safe(str(name))}"] = (float(first["ratio_packed"]), "x")
            metrics[f"wire_bytes_{_safe(str(name))}"] = (float(first["wire_bytes"]), "B")
        metrics["simulations"] = (float(len(runs)), "count")
        return metrics

    def _notes(self, prep: analysis.Prepared, payloads: pd.DataFrame) -> list[str]:
        p = prep.params
        lay = prep.layout
        coll = prep.collectives
        estimates = payloads[payloads["counted"].str.startswith("estimate")]
        est = ("; estimates (data-dependent codings of tensors above 2^24 elements, scaled from a real slice): "
               + ", ".join(f"{r.compressor} {r.shape} (split-half deviation {r.deviation:.1%})"
                           for r in estimates.drop_duplicates(["compressor", "shape"]).itertuples(index=False))
               if len(estimates) else "")
        return [
            f"Model: {lay.model} from the commsim catalog, {lay.parameters / 1e9:.3g}B parameters in {lay.layers} "
            f"buckets (one per transformer block; the embedding joins block 0, the final norm and head the last "
            f"block); {p.tokens_per_rank} tokens per GPU and step. Memory is not modelled (plain data-parallel "
            "training of a 7B model with Adam needs more than 80 GB per GPU; the study asks about time only).",
            f"Cluster: {prep.topology_source}, data-parallel over {len(prep.group)} ranks ({coll.ranks_per_node} per "
            f"server), device {prep.spec.name}. Compute per step: forward and backward GEMMs of the catalog shapes "
            f"as roofline kernels (bf16 peak x efficiency {prep.spec.efficiency:g}), {prep.compute * 1e3:.1f} ms "
            "alone; norms, activations and the optimizer are not charged.",
            "Payloads from commsim.compression on real tensors (synthetic heavy-tailed gradients) of every parameter "
            "shape, counted once per shape and reused every step: whole tensors up to 4 x "
            f"{p.count_chunk_elements} elements, larger ones by real row chunks multiplied out when the counts are "
            "exactly affine in the rows (verified on 1, 2 and 3 chunks; block-wise codings, top-k/random-k, "
            "PowerSGD), data-dependent codings whole up to 2^24 elements" + est + ".",
            f"Collectives ({p.collective_mode} mode"
            + (": each connection's bytes as one flow after the schedule's latency, so the phases of a hierarchical "
               "collective pipeline fully" if p.collective_mode == "flows" else "")
            + f"; {prep.config.step_latency * 1e6:g} us software latency per step from the scenario's collective "
            f"settings): all-reduce {coll.all_reduce}, all-gather {coll.all_gather} "
            f"(each rank sends (n-1) times its payload; a size exchange first when sizes vary), parameter server "
            f"{coll.server} (rank {coll.root} gathers, aggregates and replies; methods that leave the downlink "
            "uncompressed reply with the fp32 tensor), PowerSGD's P and Q as chained all-reduces with compute in "
            "between. A bucket's tensors travel in one collective per stage; collectives of a rank run one after the "
            f"other (one NCCL stream). Buckets are released {'as each block' if p.release == 'backward' else 'after the whole backward pass'}"
            "'s backward pass ends.",
            "Compression compute: each compressor's modelled FLOP and memory bytes (Compressor.cost) as device "
            f"kernels ({p.compression_dtype} peak) on a compression stream per rank, before the payload is sent and "
            "after it arrives (n decompressions and an accumulation pass for all-gathered dense-layout payloads, one "
            "decompression plus a scatter-add per other rank for sparse ones, n uploads plus the reply's compression "
            "on the server). They share the device with the backward kernels by the kernel's max-min fairness (equal "
            "byte rates), so a memory-bound compression kernel next to a compute-bound GEMM runs at the GEMM's byte "
            "rate until it ends.",
            "Warm-ups: steps sent dense (fp32 all-reduce) before the compressor takes over ("
            + (", ".join(f"{e.name}: {e.dense_steps} steps" for e in p.compressors if e.dense_steps) or "none")
            + "; PowerSGD's 1000 is PyTorch's start_powerSGD_iter); DGC's sparsity warm-up at the paper's densities, "
              "each stage's length from the spec (an assumption: the paper warms up over 4 epochs). Run means weight "
              f"each regime by its steps in {p.train_steps} steps.",
            f"Variants: sync (step t+1 waits for step t's sync) and CO2 (the sync of step t is waited for before "
            f"step t + {p.co2_tau + 1}, i.e. overlapped with tau = {p.co2_tau} further step(s); CO2's local steps "
            "between syncs are not modelled, every step syncs). Sync simulates one step from idle (every step is a "
            "copy); CO2 runs until the run repeats itself (a pattern of 1 to 4 steps seen 3 times, with no backlog "
            "still building up) and averages it.",
            "Bandwidth sweep: every inter-node link (NIC ports, leaf and spine) scaled by the swept bandwidth over "
            f"the topology's port bandwidth ({prep.nominal_gbit:.4g} Gbit/s, also simulated); intra-node links stay. "
            "Breakdown: compute = kernels alone; compression = iteration on an unlimited network - compute; exposed "
            "communication = iteration - iteration on an unlimited network (it can come out a fraction of a "
            "millisecond below zero where a finite network staggers the compression kernels more favourably).",
            "Bytes per iteration and rank: payload_packed / payload_naive (upload; reply_bytes is what a server "
            "sends back), wire_bytes = what the rank's collectives put on the network (payload x the collective's "
            "volume factor), dense_bytes = the fp32 gradient.",
            "The convergence table and figure come from a tiny model trained on this CPU "
            "(commsim.compression.convergence_check), not from the simulated model: they show each method's loss "
            "per byte sent, e.g. top-k without error feedback behind DGC.",
        ]

    # ------------------------------------------------------------------ validation
    def validation(self) -> list[Check]:
        """See :mod:`commsim.systems.compressed_dp.validation`."""
        from commsim.systems.compressed_dp.validation import checks

        return checks()


def _nearest(grid: list[float], value: float) -> float:
    return min(grid, key=lambda g: abs(math.log(g / value)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
