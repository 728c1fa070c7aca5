"""The T3 study: every sublayer under every variant, data movement, end to end, claims.

``run`` simulates each (model, TP, sublayer, variant) on its ring (sublayers
with the same GEMM shape are simulated once), builds the tables, runs the
contention-calibration experiment at the chosen parameters, estimates a
training iteration per model, and draws the dashboard: a timeline of one
sublayer under every variant (GEMM stages, DMA triggers, reduce-scatter and
all-gather steps), speed-up and data-movement bars, the end-to-end bars and
the published claims next to the simulated numbers. ``validation`` runs the
defaults and returns one row per claim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from commsim.network.topology import Topology
from commsim.systems._study import Study, StudyContext, StudyOutput
from commsim.systems.t3.analysis import PUBLISHED, geomean, sublayer_table, summary_table
from commsim.systems.t3.calibration import CALIBRATION_CLAIMS, calibration_gemm, motivation_experiment
from commsim.systems.t3.end_to_end import iteration_time
from commsim.systems.t3.figures import (
    claims_figure,
    data_movement_figure,
    end_to_end_figure,
    speedup_figure,
    sweep_figure,
    variant_timeline,
)
from commsim.systems.t3.knobs import DEFAULT_COMM_CU_SCALE, DEFAULT_COMM_PEAK_BANDWIDTH, DEFAULT_HBM_INTERFERENCE, Knobs
from commsim.systems.t3.params import T3Params
from commsim.systems.t3.ring import ring_order
from commsim.systems.t3.shapes import SUBLAYER_LABELS, sublayer_gemm
from commsim.systems.t3.sublayer import SublayerRun, simulate_sublayer
from commsim.validation import Check

__all__ = ["T3Study"]

_SWEEP_VARIANTS = ("sequential", "ideal", "t3", "t3_mca")


class T3Study(Study):
    """T3 (Pati et al., ASPLOS 2024): fine-grained fusion of TP GEMMs with their reduce-scatter."""

    name = "t3"
    title = "T3: track-and-trigger fusion of tensor-parallel GEMMs with their reduce-scatter"
    params = T3Params
    accepts_faults = True

    # ------------------------------------------------------------------ run
    def run(self, params: Any, ctx: StudyContext) -> StudyOutput:
        p: T3Params = params
        knobs = p.knobs()
        rings = _rings(p, ctx.topology)
        cases = [(c.model, c.tp, s) for c in p.configs for s in p.sublayers]
        sweep_tokens = [t for t in p.tokens_sweep if t != p.tokens]
        total = len(cases) * (len(p.variants) + len(sweep_tokens) * len(_SWEEP_VARIANTS))
        done = [0]

        def tick(what: str) -> None:
            done[0] += 1
            ctx.progress(done[0], total, what)

        runs = _simulate(cases, p.variants, p.tokens, p, knobs, rings, tick, ctx.faults)
        table = sublayer_table(runs)
        summary = summary_table(table)
        sweep_rows = [_sweep_row(summary_table(table), p.tokens)]
        for tokens in sweep_tokens:
            part = sublayer_table(_simulate(cases, _SWEEP_VARIANTS, tokens, p, knobs, rings, tick, ctx.faults))
            sweep_rows.append(_sweep_row(summary_table(part), tokens))
        sweep = pd.concat(sweep_rows, ignore_index=True).sort_values(["variant", "tokens"], ignore_index=True)

        size, points = motivation_experiment(knobs, gemm=calibration_gemm(p.tokens))
        calibration = pd.DataFrame([{"all_reduce_cus": pt.comm_cus, "gemm_time": pt.gemm_time,
                                     "allreduce_time": pt.allreduce_time, "time": pt.time, "speedup": pt.speedup}
                                    for pt in points]).assign(allreduce_bytes=size)

        e2e = _end_to_end(p, runs, knobs, rings, ctx) if p.end_to_end else pd.DataFrame()
        claims = _claims(summary, e2e, points, table, knobs)

        tl = p.timeline
        tl_gemm = sublayer_gemm(tl.model, tl.tp, tl.sublayer, tokens=p.tokens, strict_heads=p.strict_heads)
        tl_ring = rings[tl.tp] if tl.tp in rings else _ring_for(tl.tp, ctx.topology)
        tl_runs = {v: simulate_sublayer(tl_gemm, v, knobs, topology=tl_ring, record=True, faults=ctx.faults)
                   for v in p.variants}
        figures = [
            variant_timeline(tl_runs, gpus=tl.gpus, title=f"{tl_gemm.model}@{tl.tp} {SUBLAYER_LABELS[tl.sublayer]}: "
                             f"GEMM stages, DMA triggers, reduce-scatter and all-gather steps"),
            speedup_figure(table), data_movement_figure(table), claims_figure(claims),
        ]
        if len(sweep["tokens"].unique()) > 1:
            figures.append(sweep_figure(sweep))
        if not e2e.empty:
            figures.append(end_to_end_figure(e2e))

        metrics: dict[str, tuple[float, str]] = {}
        for row in summary.itertuples():
            if row.variant == "sequential":
                continue
            metrics[f"{row.variant}_geomean_speedup"] = (100 * row.geomean_speedup, "%")
            metrics[f"{row.variant}_max_speedup"] = (100 * row.max_speedup, "%")
            if row.variant != "ideal":
                metrics[f"{row.variant}_data_movement"] = (100 * row.geomean_dram_change, "%")
        if "t3" in p.variants:
            metrics["t3_rs_read_reduction"] = (float(summary.set_index("variant").loc["t3", "geomean_rs_read_ratio"]),
                                               "x")
        for variant, part in (e2e.groupby("variant") if not e2e.empty else []):
            if variant != "sequential":
                metrics[f"{variant}_training_speedup"] = (100 * (geomean(part["speedup"]) - 1), "%")
        slowdown = _gemm_slowdown(table)
        if slowdown is not None:
            metrics["t3_gemm_slowdown"] = (100 * slowdown, "%")
        metrics["calibration_8cu_speedup"] = (points[1].speedup, "x")
        metrics["calibration_16cu_speedup"] = (points[2].speedup, "x")

        representative = tl_runs.get("t3") or tl_runs[p.variants[-1]]
        tables = {"sublayers": table, "summary": summary, "claims": claims, "calibration": calibration,
                  "tokens_sweep": sweep}
        if not e2e.empty:
            tables["end_to_end"] = e2e
        return StudyOutput(metrics=metrics, tables=tables, csv={"t3_sublayers": table, "t3_summary": summary},
                           figures=figures, result=representative.result, notes=_notes(p, knobs))

    # ------------------------------------------------------------------ validation
    def validation(self) -> list[Check]:
        """One row per published claim, at the default parameters without the token sweep (about a minute)."""
        out = self.run(T3Params(tokens_sweep=[]), StudyContext())
        claims = out.tables["claims"]
        rows = []
        for c in claims.itertuples():
            rows.append(Check("t3", c.claim, float(c.published), float(c.simulated), float(c.tolerance),
                              relative=False, detail=str(c.detail)))
        return rows


# ---------------------------------------------------------------------- helpers
def _ring_for(tp: int, topology: Topology | None) -> Topology | None:
    if topology is None:
        return None
    ring_order(topology, tp)   # a ConfigError says why it is not a ring of tp GPUs
    return topology


def _rings(p: T3Params, topology: Topology | None) -> dict[int, Topology | None]:
    """The topology each TP degree runs on (None: built from the link parameters); checks a given one."""
    return {c.tp: _ring_for(c.tp, topology) for c in p.configs}


def _simulate(cases: list[tuple[str, int, str]], variants: Any, tokens: int, p: T3Params, knobs: Knobs,
              rings: dict[int, Topology | None], tick: Any, faults: list[Any]
              ) -> dict[tuple[str, int, str, str], SublayerRun]:
    """Every case under every variant; identical GEMM shapes are simulated once (the scenario's faults in each)."""
    cache: dict[tuple, SublayerRun] = {}
    runs = {}
    for model, tp, sub in cases:
        gemm = sublayer_gemm(model, tp, sub, tokens=tokens, strict_heads=p.strict_heads)
        for variant in variants:
            key = (gemm.m, gemm.n, gemm.k, tp, variant)
            if key not in cache:
                cache[key] = simulate_sublayer(gemm, variant, knobs, topology=rings.get(tp), faults=faults)
            run = cache[key]
            if run.gemm != gemm:
                run = SublayerRun(**{**run.__dict__, "gemm": gemm})
            runs[(gemm.model, tp, sub, variant)] = run
            tick(f"{gemm.label} {variant}")
    return runs


def _sweep_row(summary: pd.DataFrame, tokens: int) -> pd.DataFrame:
    keep = summary[summary["variant"].isin(_SWEEP_VARIANTS)]
    return pd.DataFrame({"tokens": tokens, "variant": keep["variant"].to_numpy(),
                         "geomean_speedup": 1.0 + keep["geomean_speedup"].to_numpy(),
                         "max_speedup": 1.0 + keep["max_speedup"].to_numpy()})


def _end_to_end(p: T3Params, runs: dict, knobs: Knobs, rings: dict[int, Topology | None],
                ctx: StudyContext) -> pd.DataFrame:
    rows = []
    for i, case in enumerate(p.configs):
        ctx.progress(i, len(p.configs), f"end to end: {case.label}")
        model = case.model
        for variant in p.variants:
            times = {}
            for sub in p.sublayers:
                run = runs[(model, case.tp, sub, variant)]
                times[sub] = (run.gemm_end, run.time - run.gemm_end)
            est = iteration_time(case.model, case.tp, p.tokens, times, knobs, topology=rings.get(case.tp))
            rows.append({"config": case.label, "model": model, "tp": case.tp, "variant": variant,
                         "iteration_time": est.time, "layers": est.layers, "sublayers_fused": " ".join(est.replaced)})
    table = pd.DataFrame(rows)
    base = table[table["variant"] == "sequential"].set_index("config")["iteration_time"]
    table["speedup"] = table["config"].map(base) / table["iteration_time"]
    return table


def _gemm_slowdown(table: pd.DataFrame) -> float | None:
    """Geomean over sublayers of how much later T3's GEMM ends than Ideal's (fraction; None without both)."""
    by = table.set_index(["case", "variant"])["gemm_end"]
    variants = set(table["variant"])
    if not {"t3", "ideal"} <= variants:
        return None
    cases = table["case"].unique()
    return geomean([by[(c, "t3")] / by[(c, "ideal")] for c in cases]) - 1.0


def _fused_dram_change(table: pd.DataFrame) -> tuple[float, float] | None:
    """T3 vs Sequential DRAM bytes of the fused GEMM + reduce-scatter only (no all-gather): geomean, largest cut."""
    if not {"t3", "sequential"} <= set(table["variant"]):
        return None
    fused = table.assign(fused=table[["gemm_read", "gemm_write", "rs_read", "rs_write"]].sum(axis=1))
    by = fused.set_index(["case", "variant"])["fused"]
    change = np.array([by[(c, "t3")] / by[(c, "sequential")] for c in fused["case"].unique()])
    return geomean(change) - 1.0, float(change.min()) - 1.0


def _claims(summary: pd.DataFrame, e2e: pd.DataFrame, points: list, table: pd.DataFrame,
            knobs: Knobs) -> pd.DataFrame:
    """Published against simulated, with the tolerance and a sentence on what the row means."""
    s = summary.set_index("variant")
    rows = []

    def add(key: str, simulated: float, detail: str, claim_text: str | None = None, published: float | None = None,
            tolerance: float | None = None) -> None:
        c = PUBLISHED.get(key)
        rows.append({"claim": claim_text or c.text, "published": published if published is not None else c.value,
                     "simulated": simulated, "tolerance": tolerance if tolerance is not None else c.tolerance,
                     "detail": detail})

    ideal, cu8, cu16 = points[0], points[1], points[2]
    add("", ideal.speedup, "by construction: the all-reduce is sized to take 1.5x the GEMM alone",
        "calibration: GEMM || all-reduce, ideal overlap (x)", CALIBRATION_CLAIMS["ideal"], 0.08)
    ar8, ar16 = (100 * (pt.allreduce_time / ideal.allreduce_time - 1) for pt in (cu8, cu16))
    curve = (f"R = {knobs.comm_peak_bandwidth / 1e9:.2f} GB/s, c = {knobs.comm_cu_scale:.3g} CUs of the kernel rate "
             f"R*(1-exp(-CUs/c))")
    if (knobs.comm_peak_bandwidth, knobs.comm_cu_scale) == (DEFAULT_COMM_PEAK_BANDWIDTH, DEFAULT_COMM_CU_SCALE):
        how = (f"calibrated: {curve} are fitted on the all-reduce's slow-downs on 8 and 16 CUs (paper 41% and 7%; "
               f"here {ar8:.1f}% and {ar16:.1f}%, against the stand-alone kernel on {knobs.rccl_cus} CUs)")
    else:
        how = f"{curve} set by the scenario (not the calibrated defaults); all-reduce {ar8:.1f}% / {ar16:.1f}% slower"
    add("", cu8.speedup, f"{how}; this overall speed-up follows from the 8-CU slow-down (the all-reduce is the "
        "longer of the two)", "calibration: all-reduce on 8 CUs, overall (x)", CALIBRATION_CLAIMS["cus_8"], 0.08)
    add("", cu16.speedup, f"follows from the 16-CU all-reduce slow-down ({ar16:.1f}%, fitted) as long as the GEMM on "
        f"64 CUs ({100 * (cu16.gemm_time / ideal.gemm_time - 1):.1f}% slower, predicted) finishes first: "
        "(1 + 1.5) / (1.5 x 1.07) = 1.56x. The paper's own 7% and 21% imply that 1.56x, not its 1.49x, so this row "
        "cannot come closer without leaving the 7% point",
        "calibration: all-reduce on 16 CUs, overall (x)", CALIBRATION_CLAIMS["cus_16"], 0.08)
    add("", cu16.gemm_time / ideal.gemm_time - 1.0, "prediction: GEMM on the remaining 64 CUs while the all-reduce runs "
        "(HBM shared in proportion to CUs; CU-issued traffic causes no DRAM interference)",
        "calibration: GEMM slow-down on 64 CUs", CALIBRATION_CLAIMS["gemm_slowdown_16"], 0.05)
    if "ideal" in s.index:
        add("ideal_geomean", s.loc["ideal", "geomean_speedup"], "prediction (no contention: comm uses no HBM or CUs)")
        add("ideal_max", s.loc["ideal", "max_speedup"], "prediction; the paper: up to 50%")
    slowdown = _gemm_slowdown(table)
    if "t3" in s.index:
        if knobs.hbm_interference > 0:
            extra = f"; T3's GEMM ends {100 * slowdown:.0f}% later than Ideal's (geomean)" if slowdown is not None else ""
            add("t3_geomean", s.loc["t3", "geomean_speedup"],
                f"calibrates hbm_interference (kappa = {knobs.hbm_interference:.3g}, bisection on this row at the "
                f"default sublayers and 8192 tokens){extra}")
        else:
            add("t3_geomean", s.loc["t3", "geomean_speedup"], "prediction (DRAM interference off)")
        add("t3_max", s.loc["t3", "max_speedup"],
            "prediction, not fully independent: the interference's DRAM-miss-scaled form was preferred to a uniform "
            "main-loop slow-down (about 31% here at its own calibrated kappa) on physical grounds and because it fits "
            "this row better (tolerance on maxima assumed +-5 points)")
    if "t3_mca" in s.index:
        mca = "prediction: MCA serves the GEMM first, so no DRAM interference; its cost is communication throttled"
        add("t3_mca_geomean", s.loc["t3_mca", "geomean_speedup"], mca)
        add("t3_mca_max", s.loc["t3_mca", "max_speedup"], mca + " (tolerance on maxima assumed +-5 points)")
    if "t3" in s.index:
        add("rs_reads", s.loc["t3", "geomean_rs_read_ratio"],
            "prediction: counted reads, (2p-1)/(p-2) chunks with remote first-chunk stores")
        add("data_movement", s.loc["t3", "geomean_dram_change"], "prediction: GEMM + RS + AG bytes, T3 vs Sequential")
        fused = _fused_dram_change(table)
        note = "" if fused is None else (
            f"; counting only the fused GEMM + reduce-scatter bytes (the all-gather is the same in every variant) "
            f"would give {100 * fused[0]:.1f}% geomean and {100 * fused[1]:.1f}% largest: which the paper counts is "
            f"not in the study's sources, so the rows keep GEMM + RS + AG")
        add("data_movement_max", s.loc["t3", "max_dram_reduction"], "prediction: byte counts, timing-independent"
            + note)
    if not e2e.empty and "t3_mca" in set(e2e["variant"]):
        part = e2e[e2e["variant"] == "t3_mca"]["speedup"]
        add("e2e_geomean", geomean(part) - 1.0, "prediction: sublayer times plugged into the training trace")
        top = e2e[e2e["variant"] == "t3_mca"].sort_values("speedup").iloc[-1]
        add("e2e_max", float(np.max(part)) - 1.0,
            f"prediction, at {top['config']}: one TP group, one micro-batch, no data/pipeline parallelism, so the "
            f"TP all-reduces are a large share of the iteration; T3-MCA has no DRAM interference, so that "
            f"mechanism does not move this row")
    return pd.DataFrame(rows)


def _notes(p: T3Params, knobs: Knobs) -> list[str]:
    return [
        f"Tokens per GEMM = {p.tokens} (not published; a parameter, swept with tokens_sweep or commsim sweep).",
        "GEMM: waves of one 128x128 tile per CU (tile_m/tile_n), main loop at the device's efficiency of peak FP16, "
        "operand reads after an LRU L2 of l2_bytes, then a store-bound epilogue (a CU takes its next tile once its "
        "output is written).",
        f"HBM: {100 * p.hbm_efficiency:.0f}% of peak achievable (assumed); when saturated it is shared "
        f"{'in proportion to requesters (CUs; DMA traffic = ' + str(p.dma_weight) + ' CUs)' if knobs.cu_weighted else 'byte-fairly'}.",
        f"Communication kernels on k CUs move at most R*(1-exp(-k/c)) bytes/s (link steps and local reductions), R = "
        f"{p.comm_peak_bandwidth / 1e9:.2f} GB/s, c = {p.comm_cu_scale:.3g} CUs (a saturating curve: workgroups' "
        "request streams share a limited set of memory channels and link queues). "
        + ("Calibrated on TWO published numbers, the motivation figure's all-reduce slow-downs (41% on 8 CUs, 7% on 16 "
           "CUs, against the stand-alone kernel); the 8- and 16-CU overall speed-ups and the GEMM's slow-down on 64 CUs "
           "follow. " if (p.comm_peak_bandwidth, p.comm_cu_scale) == (DEFAULT_COMM_PEAK_BANDWIDTH, DEFAULT_COMM_CU_SCALE)
           else "(Set by the scenario, not the calibrated defaults.) ")
        + f"Stand-alone RS/AG kernels use {p.rccl_cus} CUs (up to {knobs.comm_rate(p.rccl_cus) / 1e9:.1f} GB/s against "
        f"a {p.link_bandwidth / 1e9:.0f} GB/s link; assumed, more than 16 because the paper's all-reduce is slower on "
        f"16 CUs than alone), the coarse-grained RS {p.coarse_comm_cus} CUs (up to "
        f"{knobs.comm_rate(p.coarse_comm_cus) / 1e9:.1f} GB/s); the baseline RS reads 2 and writes 1 chunk per step "
        "(read-modify-write).",
        "T3: staggered tile order, a tracker per chunk triggers a DMA when the last local tile and the incoming "
        "update are in, near-memory reduction (update costs nmc_update_cost of a write), first chunk stored "
        "straight into the neighbour, no CUs for communication.",
        f"DRAM interference (T3 without MCA): while the RS DMAs and near-memory updates move u of a GPU's HBM "
        f"bandwidth, each byte its GEMM main loop reads from DRAM costs kappa*u times its transfer time in extra "
        f"stalls, kappa = hbm_interference = {p.hbm_interference:.3g} "
        + ("(the default: calibrated on ONE published number, the T3 geomean sublayer speed-up of 20%; T3 max, "
           "T3-MCA, data movement and end to end are predictions). "
           if p.hbm_interference == DEFAULT_HBM_INTERFERENCE else "(set by the scenario; 0: off). ")
        + "Communication kernels on CUs (Sequential, coarse, every all-gather, the motivation experiment) and "
        "the Ideal variant are not affected; neither is T3-MCA, which serves the GEMM first.",
        f"T3-MCA: GEMM memory traffic has priority; communication admitted up to {100 * p.mca_threshold:.0f}% HBM "
        f"utilisation and guaranteed {100 * p.mca_min_share:.0f}% while the GEMM saturates HBM (assumed values).",
        f"Coarse-grained: {p.coarse_chunks} GEMM pieces on the CUs but {p.coarse_comm_cus}, each piece reduce-scattered "
        f"by a kernel on {p.coarse_comm_cus} CUs while the next computes.",
        "Ideal: T3's dataflow with communication that uses no HBM and no CUs (overlap without contention).",
        "Every variant ends with the same ring all-gather (T3 fuses only GEMM + reduce-scatter).",
        "End to end: one TP group, one micro-batch of tokens, no pipeline/data parallelism; layers extrapolated "
        "from 1- and 2-layer replays; for parallel blocks (PaLM) only FC-2 fwd and IP bwd have their own all-reduce.",
    ]
