"""T3 study: the mechanism (tiles, tracker, triggers, contention, arbitration), its totals and bad input.

Small sublayers (Mega-GPT-2 at TP 8 with 2048 tokens) keep every test fast; the
full-size claims run in ``commsim validate --only t3``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from commsim.cli import app
from commsim.cli._app import main
from commsim.errors import ConfigError
from commsim.network.generators import ring, switch
from commsim.systems import StudyContext, get_study
from commsim.systems.t3.calibration import (
    CALIBRATION_CLAIMS,
    _bisect,
    calibrate,
    calibrate_interference,
    fit_saturating_curve,
    motivation_experiment,
    t3_geomean_speedup,
)
from commsim.systems.t3.collective import RingAllGather
from commsim.systems.t3.context import RingContext
from commsim.systems.t3.end_to_end import patched_trace
from commsim.systems.t3.gemm import GemmDriver
from commsim.systems.t3.knobs import (
    DEFAULT_COMM_CU_SCALE,
    DEFAULT_COMM_PEAK_BANDWIDTH,
    DEFAULT_HBM_INTERFERENCE,
    VARIANTS,
    Knobs,
    comm_kernel_rate,
)
from commsim.systems.t3.params import T3Params
from commsim.systems.t3.ring import build_ring
from commsim.systems.t3.shapes import sublayer_gemm
from commsim.systems.t3.sublayer import plans_for, simulate_sublayer
from commsim.systems.t3.tiling import TileGrid, wave_plan
from commsim.workloads import load_model, training_trace

GEMM = sublayer_gemm("megatron-gpt2-8.3b", 8, "ip_bwd", tokens=2048)   # 16 x 24 tiles, 5 waves on 80 CUs
P = GEMM.tp


@pytest.fixture(scope="module")
def default_runs() -> dict:
    return {v: simulate_sublayer(GEMM, v, Knobs()) for v in VARIANTS}


def _last_tile_written(run, knobs: Knobs) -> np.ndarray:
    """[g, c]: when GPU g's epilogue wrote the last local tile of chunk c (from the driver's stage log)."""
    _, plans = plans_for(run.gemm, knobs, cus=80)
    last = np.full((P, P), -np.inf)
    for g, piece, w, _start, _main_end, end in run.waves:
        for c in plans[g][piece].wave_chunks[w]:
            last[g, c] = max(last[g, c], end)
    return last


# ---------------------------------------------------------------------- tiling
def test_tiles_chunks_and_waves_follow_the_staggered_order() -> None:
    grid = TileGrid(m=1024, n=640, k=256, tile_m=128, tile_n=128, group_rows=4)
    plan = wave_plan(grid, tp=4, gpu=2, cus=7, l2_bytes=1e9)
    assert plan.chunk_order.tolist() == [2, 1, 0, 3]
    assert plan.chunk_tile_count.tolist() == [10, 10, 10, 10]
    order = np.concatenate(plan.tiles)
    assert sorted(order.tolist()) == list(range(40))
    assert plan.chunk_of_tile[order[:10]].tolist() == [2] * 10       # its own chunk first
    assert [t.size for t in plan.tiles] == [7, 7, 7, 7, 7, 5]
    # an L2 that holds everything: each operand block is read exactly once over the GEMM
    assert plan.read_bytes.sum() == pytest.approx((1024 * 256 + 256 * 640) * 2)
    assert plan.write_bytes.sum() == pytest.approx(1024 * 640 * 2)
    # no L2 reuse at all: every tile reads its own row block of A and column block of B
    none = wave_plan(grid, tp=4, gpu=2, cus=7, l2_bytes=1e9, l2_reuse=0.0)
    assert none.read_bytes.sum() == pytest.approx(40 * (128 + 128) * 256 * 2)


def test_edge_tiles_store_their_real_size_and_cost_a_whole_tile() -> None:
    grid = TileGrid(m=200, n=130, k=64, tile_m=128, tile_n=128)
    assert grid.tiles == 4
    assert grid.tile_bytes.sum() == 200 * 130 * 2
    plan = wave_plan(grid, tp=2, gpu=0, cus=80, l2_bytes=1e9)
    assert plan.flops.sum() == 4 * 2 * 128 * 128 * 64


# ---------------------------------------------------------------------- tracker and triggers
def test_a_chunks_dma_starts_exactly_when_its_last_tile_is_written() -> None:
    # chunks of 2.4 waves and a fast link: the neighbour's update is in long before the local tiles are done
    knobs = Knobs(link_bandwidth=750e9)
    run = simulate_sublayer(sublayer_gemm("megatron-gpt2-8.3b", 8, "ip_bwd", tokens=8192), "t3", knobs)
    last = _last_tile_written(run, knobs)
    dma = [(g, s, c, start) for g, s, c, start, _end in run.rs_steps]
    assert len(dma) == P * (P - 2)             # step 0 is remote stores, steps 1..p-2 are DMAs
    for g, _s, c, start in dma:
        assert start == pytest.approx(last[g, c], abs=1e-12)
    # and a triggered chunk is never one whose tiles are still being computed
    for t, g, c in run.triggers:
        assert t >= last[g, c] - 1e-12


def test_a_dma_waits_for_the_incoming_update_and_its_own_previous_send(default_runs) -> None:
    run = default_runs["t3"]
    last = _last_tile_written(run, Knobs())
    delivered = {(g, s): end for g, s, _c, _start, end in run.rs_steps}
    checked = 0
    for g, s, c, start, _end in run.rs_steps:
        if s < 2:
            continue
        expected = max(last[g, c], delivered[((g - 1) % P, s - 1)], delivered[(g, s - 1)])
        assert start == pytest.approx(expected, abs=1e-12)
        checked += 1
    assert checked == P * (P - 3)


def test_sequential_reduce_scatter_starts_only_after_the_whole_gemm(default_runs) -> None:
    run = default_runs["sequential"]
    assert min(start for *_, start, _end in run.rs_steps) == pytest.approx(run.gemm_end, abs=1e-12)


def test_coarse_pieces_reduce_scatter_after_their_piece_and_in_stream_order() -> None:
    knobs = Knobs()
    run = simulate_sublayer(GEMM, "coarse", knobs)
    piece_end = {}
    for g, piece, *_rest, end in run.waves:
        piece_end[(g, piece)] = max(piece_end.get((g, piece), 0.0), end)
    first_steps = sorted((start, g) for g, s, _c, start, _end in run.rs_steps if s == 0)
    assert len(first_steps) == knobs.coarse_chunks * P
    # every piece's step 0 on a GPU starts no earlier than that piece's GEMM finished there
    per_gpu: dict[int, list[float]] = {}
    for start, g in first_steps:
        per_gpu.setdefault(g, []).append(start)
    for g, starts in per_gpu.items():
        for piece, start in enumerate(sorted(starts)):
            assert start >= piece_end[(g, piece)] - 1e-12
    assert run.gemm_end < run.rs_end     # the last piece's reduce-scatter is exposed


# ---------------------------------------------------------------------- contention
def test_without_contention_t3_equals_ideal() -> None:
    # the DRAM interference is on (default kappa): with unlimited HBM its utilisation u, and so its penalty, vanish
    knobs = Knobs(device={"base": "mi210_t3", "memory_bandwidth": "1 PB/s"})
    assert knobs.hbm_interference > 0
    runs = {v: simulate_sublayer(GEMM, v, knobs) for v in ("ideal", "t3", "t3_mca")}
    assert runs["t3"].time == pytest.approx(runs["ideal"].time, rel=1e-6)
    assert runs["t3_mca"].time == pytest.approx(runs["ideal"].time, rel=1e-6)
    assert runs["t3"].gemm_end == pytest.approx(runs["ideal"].gemm_end, rel=1e-6)


def test_contention_slows_t3_and_arbitration_gives_the_gemm_priority() -> None:
    knobs = Knobs(hbm_efficiency=0.25)        # HBM scarce: the store phases contend
    runs = {v: simulate_sublayer(GEMM, v, knobs) for v in ("ideal", "t3", "t3_mca")}
    assert runs["ideal"].gemm_end < runs["t3_mca"].gemm_end < runs["t3"].gemm_end
    assert runs["ideal"].time < runs["t3"].time
    # a starvation bound of zero and no admission headroom starve communication while the GEMM saturates HBM
    starved = simulate_sublayer(GEMM, "t3_mca", knobs.with_(mca_min_share=0.0, mca_threshold=0.01))
    assert starved.rs_end > runs["t3_mca"].rs_end


def test_with_a_ten_times_slower_link_t3_hides_nearly_the_whole_gemm() -> None:
    knobs = Knobs(link_bandwidth=7.5e9)
    runs = {v: simulate_sublayer(GEMM, v, knobs) for v in ("sequential", "ideal", "t3")}
    seq = runs["sequential"]
    gemm = seq.gemm_end
    rs, ag = seq.rs_end - seq.gemm_end, seq.ag_end - seq.rs_end
    for v in ("ideal", "t3"):
        hidden = seq.time - runs[v].time
        # all of the GEMM but the first chunk hides under the (now dominant) reduce-scatter, and no more
        assert (1 - 1 / P) * gemm <= hidden <= 1.02 * gemm
        assert seq.time / runs[v].time <= 1 + 1.02 * gemm / (rs + ag)
    fast = {v: simulate_sublayer(GEMM, v, Knobs()) for v in ("sequential", "t3")}
    assert (fast["sequential"].time - fast["t3"].time) / fast["sequential"].gemm_end < (1 - 1 / P)


# ---------------------------------------------------------------------- DRAM interference
def _main_loops(run) -> dict[tuple[int, int], float]:
    """(gpu, wave) -> main-loop duration, from the driver's stage log."""
    return {(g, w): main_end - start for g, _piece, w, start, main_end, _end in run.waves}


def _roofline(plan, w: int, knobs: Knobs, ctx: RingContext) -> tuple[float, float]:
    """Roofline time of wave ``w`` alone and its DRAM intensity d = reads / (time · HBM)."""
    t = float(plan.flops[w]) / (min(plan.tiles[w].size, ctx.cus) / ctx.cus * ctx.peak_rate)
    return t, float(plan.read_bytes[w]) / t / ctx.hbm_capacity


def _gemm_next_to_a_flow(knobs: Knobs, *, mca: bool = False, dma: bool = True) -> tuple[RingContext, GemmDriver]:
    """The test GEMM on every GPU while one long flow runs from GPU 0 to GPU 1 (read there, updated here)."""
    ctx = RingContext(build_ring(P, bandwidth=knobs.link_bandwidth, latency=knobs.link_latency, device=knobs.device),
                      P, knobs, mca=mca, record=False)
    _, plans = plans_for(GEMM, knobs, cus=80)
    driver = GemmDriver(ctx, [list(pl) for pl in plans], cus=80)
    ctx.send(np.array([0]), np.array([1e9]), src_coef=1.0, dst_coef=1.0, dma=dma, on_delivered=lambda _idx: None)
    driver.start()
    ctx.sim.run()
    return ctx, driver


def test_dram_interference_slows_the_main_loop_by_exactly_one_plus_kappa_u_d() -> None:
    knobs = Knobs(hbm_interference=40.0)
    ctx, driver = _gemm_next_to_a_flow(knobs)
    u = knobs.link_bandwidth / ctx.hbm_capacity            # 75 GB/s read on GPU 0, 75 GB/s updated on GPU 1
    _, plans = plans_for(GEMM, knobs, cus=80)
    loops = {(g, w): end - start for g, _p, w, start, end, _e in driver.stage_log}
    slowed = 0
    for (g, w), duration in loops.items():
        t, d = _roofline(plans[g][0], w, knobs, ctx)
        factor = 1.0 + knobs.hbm_interference * u * d if g in (0, 1) else 1.0   # only where the DMA traffic is
        assert duration == pytest.approx(t * factor, rel=1e-9), (g, w)
        slowed += factor > 1.0 + 1e-6
    reading = sum(int((plans[g][0].read_bytes > 0).sum()) for g in (0, 1))
    assert slowed == reading >= 4          # every wave that reads from DRAM on GPUs 0 and 1 (L2 hits do not queue)


@pytest.mark.parametrize(("mca", "dma"), [(True, True), (False, False)])
def test_no_dram_interference_under_mca_or_from_communication_kernels(mca: bool, dma: bool) -> None:
    knobs = Knobs(hbm_interference=40.0)
    ctx, driver = _gemm_next_to_a_flow(knobs, mca=mca, dma=dma)
    _, plans = plans_for(GEMM, knobs, cus=80)
    for g, _p, w, start, end, _e in driver.stage_log:
        assert end - start == pytest.approx(_roofline(plans[g][0], w, knobs, ctx)[0], rel=1e-9), (g, w)


def test_interference_off_leaves_the_main_loops_at_their_roofline() -> None:
    off = Knobs(hbm_interference=0.0)
    runs = {v: simulate_sublayer(GEMM, v, off) for v in ("ideal", "t3")}
    assert RingContext(build_ring(P, bandwidth=75e9, latency=5e-7, device="mi210_t3"), P, off).interference is None
    ideal, t3 = _main_loops(runs["ideal"]), _main_loops(runs["t3"])
    assert ideal.keys() == t3.keys()
    for key, duration in t3.items():          # main loops never saturate HBM: T3's equal Ideal's, wave by wave
        assert duration == pytest.approx(ideal[key], rel=1e-9), key
    on = simulate_sublayer(GEMM, "t3", Knobs())
    assert on.gemm_end > 1.1 * runs["t3"].gemm_end and on.time > runs["t3"].time
    # the penalty applies only while DMA traffic is on a GPU's HBM: wave 0's main loop precedes all of it
    first = _main_loops(on)
    for g in range(P):
        assert first[(g, 0)] == pytest.approx(ideal[(g, 0)], rel=1e-9)


def test_mca_avoids_the_dram_interference_penalty() -> None:
    runs = {v: simulate_sublayer(GEMM, v, Knobs()) for v in ("ideal", "t3", "t3_mca")}
    assert runs["ideal"].gemm_end <= runs["t3_mca"].gemm_end < runs["t3"].gemm_end
    assert runs["t3_mca"].time < runs["t3"].time
    off = {v: simulate_sublayer(GEMM, v, Knobs(hbm_interference=0.0)) for v in ("t3", "t3_mca")}
    assert off["t3_mca"].time == pytest.approx(runs["t3_mca"].time, rel=1e-12)   # MCA: no interference at all
    # without interference MCA only redistributes a work-conserving HBM: no real gain over T3
    assert off["t3_mca"].time >= off["t3"].time * (1 - 2e-3)


def test_interference_keeps_the_kernel_rates_exact(monkeypatch) -> None:
    import commsim.systems.t3.context as context
    from commsim.simulation import Simulation

    monkeypatch.setattr(context, "Simulation", lambda *a, **kw: Simulation(*a, **{**kw, "verify": True}))
    run = simulate_sublayer(sublayer_gemm("megatron-gpt2-8.3b", 8, "op_fwd", tokens=1024), "t3", Knobs())
    assert run.time > 0        # verify=True raises if an incremental rate ever differs from a full solve


def test_interference_calibration_hits_its_target() -> None:
    gemms = [GEMM, sublayer_gemm("megatron-gpt2-8.3b", 8, "op_fwd", tokens=2048), GEMM]
    off, _ = t3_geomean_speedup(Knobs(hbm_interference=0.0), gemms)
    target = off - 0.05
    cal = calibrate_interference(Knobs(), gemms, target=target, kappa_range=(0.0, 200.0), iters=20)
    assert cal.converged and cal.hbm_interference > 0
    assert cal.geomean_speedup == pytest.approx(target, abs=1e-3)
    again, _ = t3_geomean_speedup(Knobs(hbm_interference=cal.hbm_interference), gemms)
    assert again == pytest.approx(cal.geomean_speedup, abs=1e-12)
    out_of_range = calibrate_interference(Knobs(), gemms, target=off + 0.5, kappa_range=(0.0, 200.0), iters=4)
    assert not out_of_range.converged
    assert T3Params().hbm_interference == DEFAULT_HBM_INTERFERENCE > 0


def test_same_inputs_same_results() -> None:
    a, b = (simulate_sublayer(GEMM, "t3_mca", Knobs()) for _ in range(2))
    assert a.time == b.time and a.dram == b.dram and a.triggers == b.triggers


# ---------------------------------------------------------------------- bytes
def test_rs_bytes_on_the_wire_are_identical_across_variants(default_runs) -> None:
    expected = (P - 1) * GEMM.output_bytes       # every GPU sends p-1 chunks of output/p
    for variant, run in default_runs.items():
        assert run.wire_bytes == pytest.approx(expected, rel=1e-12), variant


def test_dram_reads_of_the_reduce_scatter(default_runs) -> None:
    out = GEMM.output_bytes
    assert default_runs["sequential"].rs_reads == pytest.approx((2 * P - 1) / P * out)   # read-modify-write
    assert default_runs["t3"].rs_reads == pytest.approx((P - 2) / P * out)   # DMA reads; step 0 is remote stores
    no_remote = simulate_sublayer(GEMM, "t3", Knobs(remote_first_chunk=False))
    assert no_remote.rs_reads == pytest.approx((P - 1) / P * out)
    assert no_remote.wire_bytes == pytest.approx(default_runs["t3"].wire_bytes)


def test_the_ledger_counts_what_the_hbm_carried(default_runs) -> None:
    for variant in ("sequential", "coarse", "t3", "t3_mca"):
        run = default_runs[variant]
        assert run.hbm_bytes == pytest.approx(run.dram_total, rel=1e-9), variant
    assert default_runs["ideal"].hbm_bytes < default_runs["ideal"].dram_total   # its communication is free


def test_t3_moves_less_data_and_is_faster_than_sequential(default_runs) -> None:
    seq = default_runs["sequential"]
    for variant in ("ideal", "t3", "t3_mca"):
        assert default_runs[variant].time < seq.time
    assert default_runs["t3"].dram_total < seq.dram_total
    assert default_runs["ideal"].time <= default_runs["t3"].time * (1 + 1e-9)


# ---------------------------------------------------------------------- calibration and end to end
def test_calibrated_default_reproduces_both_all_reduce_points() -> None:
    size, points = motivation_experiment(Knobs())
    ideal, cu8, cu16 = points
    assert ideal.speedup == pytest.approx(1.667, abs=0.005)                # by construction
    # the two numbers comm_peak_bandwidth and comm_cu_scale were fitted on: all-reduce 41% / 7% slower than alone
    assert cu8.allreduce_time / ideal.allreduce_time - 1 == pytest.approx(CALIBRATION_CLAIMS["ar_slowdown_8"], abs=2e-3)
    assert cu16.allreduce_time / ideal.allreduce_time - 1 == pytest.approx(CALIBRATION_CLAIMS["ar_slowdown_16"],
                                                                           abs=2e-3)
    assert cu8.speedup == pytest.approx(1.18, abs=0.01)                   # follows: the all-reduce is the longer
    # then the overall 16-CU point is (1 + 1.5) / (1.5 x 1.07) as long as the GEMM on 64 CUs finishes first
    assert cu16.gemm_time < cu16.allreduce_time
    assert cu16.speedup == pytest.approx(2.5 / (1.5 * 1.07), abs=0.005)
    assert size > 0


def test_comm_kernel_rate_is_monotone_saturating_and_link_bound_with_many_cus() -> None:
    knobs = Knobs()
    rates = np.array([knobs.comm_rate(k) for k in range(81)])
    assert rates[0] == 0.0 and np.all(np.diff(rates) > 0)                 # monotone in CUs
    assert np.all(np.diff(rates, 2) < 0)                                  # each added CU adds less
    assert np.all(rates < knobs.comm_peak_bandwidth)
    assert rates[80] == pytest.approx(knobs.comm_peak_bandwidth, rel=1e-4)  # saturates at R ...
    # ... just above the link: CU-bound on 8 and 16 CUs, link-bound from 24 (the stand-alone kernel's 32 included)
    assert rates[8] < rates[16] < knobs.link_bandwidth < rates[24] < rates[knobs.rccl_cus]
    assert comm_kernel_rate(8, 80e9, 8.0) == pytest.approx(80e9 * (1 - np.exp(-1)), rel=1e-12)

    def all_gather_time(cus: int) -> float:
        ctx = RingContext(build_ring(P, bandwidth=knobs.link_bandwidth, latency=knobs.link_latency,
                                     device=knobs.device), P, knobs, record=False)
        ag = RingAllGather(ctx, np.full(P, 100e6), cus=cus)
        ag.start(np.arange(P))
        ctx.sim.run()
        return float(np.nanmax(ag.done_at))

    link_bound = all_gather_time(80)
    assert all_gather_time(knobs.rccl_cus) == pytest.approx(link_bound, rel=1e-12)
    assert link_bound == pytest.approx((P - 1) * 100e6 / knobs.link_bandwidth, rel=1e-3)   # at the link rate
    assert all_gather_time(8) / link_bound == pytest.approx(knobs.link_bandwidth / rates[8], rel=1e-3)


def test_saturating_fit_recovers_its_curve_and_the_calibration_its_defaults() -> None:
    rates = (comm_kernel_rate(8, 90e9, 6.0), comm_kernel_rate(16, 90e9, 6.0))
    peak, scale = fit_saturating_curve((8, 16), rates)
    assert peak == pytest.approx(90e9, rel=1e-12) and scale == pytest.approx(6.0, rel=1e-12)
    with pytest.raises(ValueError, match="not on a saturating curve"):
        fit_saturating_curve((8, 16), (50e9, 110e9))                      # linear or steeper: no saturation
    # the calibration, from another curve, lands on the defaults (a coarse bisection keeps it fast)
    cal = calibrate(Knobs(comm_peak_bandwidth=100e9, comm_cu_scale=10.0), rate_range=(45e9, 80e9), iters=12,
                    tol=1e-3)
    assert cal.converged
    assert cal.comm_peak_bandwidth == pytest.approx(DEFAULT_COMM_PEAK_BANDWIDTH, rel=2e-3)
    assert cal.comm_cu_scale == pytest.approx(DEFAULT_COMM_CU_SCALE, rel=5e-3)
    ideal, cu8, cu16 = cal.points
    assert cu8.allreduce_time / ideal.allreduce_time == pytest.approx(1.41, abs=2e-3)
    assert cu16.allreduce_time / ideal.allreduce_time == pytest.approx(1.07, abs=2e-3)


def test_bisection_finds_a_monotone_target() -> None:
    x, ok = _bisect(lambda v: v * v, 0.0, 4.0, 2.0, increasing=True)
    assert ok and x == pytest.approx(2 ** 0.5, abs=1e-6)
    _, ok = _bisect(lambda v: v, 0.0, 1.0, 5.0, increasing=True)
    assert not ok


def test_end_to_end_trace_replaces_the_sublayers_that_have_an_all_reduce() -> None:
    times = {s: (1e-3, 2e-3) for s in ("op_fwd", "fc2_fwd", "fc1_bwd", "ip_bwd")}
    spec = load_model("megatron-gpt2-8.3b").model_copy(update={"layers": 1})
    trace = training_trace(spec, {"tp": 8, "strict_heads": False, "track_memory": False})
    patched, replaced = patched_trace(trace, times)
    assert replaced == ("fc1_bwd", "fc2_fwd", "ip_bwd", "op_fwd")
    delays = {op.id: op.seconds for op in patched.programs[0].ops if op.kind == "delay"}
    assert delays == {"f0.0.out_proj": 1e-3, "f0.0.tp1": 2e-3, "f0.0.fc2": 1e-3, "f0.0.tp2": 2e-3,
                      "b0.0.fc1_dgrad": 1e-3, "b0.0.tp2": 2e-3, "b0.0.qkv_dgrad": 1e-3, "b0.0.tp1": 2e-3}
    palm = training_trace(load_model("palm-540b").model_copy(update={"layers": 1}),
                          {"tp": 32, "strict_heads": False, "track_memory": False})
    assert patched_trace(palm, times)[1] == ("fc2_fwd", "ip_bwd")   # a parallel block: one all-reduce per pass


# ---------------------------------------------------------------------- faults
def test_a_failed_ring_link_sends_the_collectives_the_long_way_round(default_runs) -> None:
    ring8 = ring(n=P, bandwidth=75e9, latency=5e-7, device="mi210_t3")
    down = [{"kind": "link_down", "at": 0, "link": ["gpu0", "gpu1"]}]
    for variant in ("sequential", "t3"):
        clean = simulate_sublayer(GEMM, variant, Knobs(), topology=ring8)
        assert clean.time == default_runs[variant].time        # the scenario's ring is the study's own
        faulty = simulate_sublayer(GEMM, variant, Knobs(), topology=ring8, faults=down)
        # GPU 0's chunks now cross the other P - 1 links, sharing them with the ring's own steps
        assert faulty.time > clean.time * 1.05, variant
        assert faulty.wire_bytes == pytest.approx(clean.wire_bytes, rel=1e-12)     # the same bytes, rerouted
        slow_rs = [end - start for g, _s, _c, start, end in faulty.rs_steps if g == 0]
        fast_rs = [end - start for g, _s, _c, start, end in clean.rs_steps if g == 0]
        assert min(slow_rs) > max(fast_rs) * (1 + 1e-9), variant


def test_scenario_faults_reach_the_t3_study(tmp_path) -> None:
    from commsim.scenario import simulate

    params = {"configs": [{"model": "megatron-gpt2-8.3b", "tp": 8}], "sublayers": ["ip_bwd"], "tokens": 2048,
              "tokens_sweep": [], "end_to_end": False, "variants": ["sequential", "t3"],
              "timeline": {"model": "megatron-gpt2-8.3b", "tp": 8, "sublayer": "ip_bwd"}}
    scenario = {"name": "t3-faults", "topology": "topologies/mi210_ring8.yaml",
                "workload": {"kind": "study", "study": "t3", "params": params}}
    clean = simulate(scenario).tables["sublayers"].set_index("variant")["time"]
    failed = simulate({**scenario, "faults": [{"kind": "link_down", "at": 0, "link": ["gpu3", "gpu4"]}]}
                      ).tables["sublayers"].set_index("variant")["time"]
    for variant in ("sequential", "t3"):
        assert failed[variant] > clean[variant] * 1.05, variant


def test_the_default_parameters_give_the_default_knobs_and_every_knob_is_a_parameter() -> None:
    from dataclasses import fields

    assert T3Params().knobs() == Knobs()
    changed = T3Params(link_bandwidth="150 GB/s", hbm_arbitration="bytes", mca_min_share=0.2).knobs()
    assert (changed.link_bandwidth, changed.cu_weighted, changed.mca_min_share) == (150e9, False, 0.2)
    assert {f.name for f in fields(Knobs)} - {"cu_weighted"} <= set(T3Params.model_fields)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("params", "needle"), [
    ({"tokens": 0}, "tokens = 0: must be at least 1"),
    ({"tokens": -8}, "tokens = -8: must be at least 1"),
    ({"configs": [{"model": "megatron-gpt2-8.3b", "tp": 7}]}, "does not divide the hidden size (3072)"),
    ({"configs": [{"model": "t-nlg-17b", "tp": 8}], "strict_heads": True}, "number of attention heads (28)"),
    ({"configs": [{"model": "t-nlg-17b", "tp": 3}]}, "TP degree that does not divide the hidden size (4256)"),
    ({"configs": [{"model": "gpt-5", "tp": 8}]}, "is not in the model catalog"),
    ({"tokens_sweep": [2048, 0]}, "tokens_sweep has 0"),
    ({"coarse_comm_cus": 80}, "leaves no CU"),
    ({"hbm_interference": -1}, "hbm_interference = -1: must be at least 0"),
    ({"tokens": 64, "configs": [{"model": "megatron-gpt2-8.3b", "tp": 16}]}, "a reduce-scatter chunk needs"),
])
def test_bad_parameters_fail_with_a_clear_message(params: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_study("t3").parse(params)
    message = str(info.value)
    assert needle in message and "Fix:" in message and message.startswith("workload.params")


@pytest.mark.parametrize(("topology", "needle"), [
    (switch(n=8), "it has 1 switch node"),
    (ring(n=16), "it has 16 devices"),
])
def test_a_topology_that_is_not_a_ring_of_tp_gpus_is_refused(topology, needle: str) -> None:
    study = get_study("t3")
    params = study.parse({"configs": [{"model": "megatron-gpt2-8.3b", "tp": 8}], "sublayers": ["op_fwd"],
                          "tokens": 2048, "tokens_sweep": [], "end_to_end": False})
    with pytest.raises(ConfigError) as info:
        study.run(params, StudyContext(topology=topology))
    assert "is not a ring of 8 GPUs" in str(info.value) and needle in str(info.value)


def test_scenario_runs_end_to_end_and_bad_topology_exits_2(tmp_path, capsys) -> None:
    params = {"configs": [{"model": "megatron-gpt2-8.3b", "tp": 8}], "sublayers": ["ip_bwd"], "tokens": 2048,
              "tokens_sweep": [1024], "end_to_end": True,
              "timeline": {"model": "megatron-gpt2-8.3b", "tp": 8, "sublayer": "ip_bwd"}}
    path = tmp_path / "t3.yaml"
    path.write_text(yaml.safe_dump({"name": "t3-small", "topology": "topologies/mi210_ring8.yaml",
                                    "workload": {"kind": "study", "study": "t3", "params": params}}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "-o", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    for name in ("dashboard.html", "t3_sublayers.csv", "sublayers.csv", "claims.csv", "end_to_end.csv",
                 "tokens_sweep.csv", "calibration.csv"):
        assert (out / name).exists(), name
    html = (out / "dashboard.html").read_text()
    assert "DMA trigger" in html and "GEMM stage" in html
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "t3-bad", "topology": "switch:8",
                                   "workload": {"kind": "study", "study": "t3", "params": params}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(bad), "-o", str(tmp_path / "bad")])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is not a ring of 8 GPUs" in err and "Fix:" in err
