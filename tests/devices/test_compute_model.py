"""The per-kernel compute model: GEMM tiles and waves, memory-bound kernels, launches, data files.

A hand-made device keeps the numbers round: 10 compute units, 100 TFLOP/s (so 10 TFLOP/s per unit),
FP32 vector peak 10 TFLOP/s, 10 TB/s of HBM. Its model: 100 x 100 tiles, the main loop at 50 % of
the unit's peak, a tile prologue/epilogue worth 100 steps of k, memory kernels at 80 % of HBM, 5 us per
kernel launch. One GEMM wave of k = 400 then takes 2·100·100·(400 + 100) / (10e12 · 0.5) = 2 us.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commsim.devices import (
    PRESETS,
    ComputeModel,
    KernelShape,
    compute_model_names,
    device_spec,
    load_compute_model,
)
from commsim.devices.device import kernel_activity, launch_delay
from commsim.errors import ConfigError
from commsim.network.generators import switch
from commsim.simulation import Simulation

MODEL = ComputeModel(name="hand", tile_m=100, tile_n=100, gemm_efficiency=0.5, gemm_k_overhead=100,
                     memory_efficiency=0.8, launch_overhead=5e-6)
SPEC = device_spec({"name": "hand", "peak_flops": {"bf16": "100 TFLOPS", "fp32": "10 TFLOPS"},
                    "memory_bandwidth": "10 TB/s", "memory": "80 GB", "compute_units": 10,
                    "compute_model": MODEL, "copy_engines": 1})
WAVE = 2 * 100 * 100 * (400 + 100) / (10e12 * 0.5)   # one wave of tiles with k = 400: 2 us


def run_alone(spec, **kernel):
    sim = Simulation(switch(n=2, bandwidth="80 GB/s", latency=0.0, device=spec))
    ends = {}

    def body():
        yield sim.devices["gpu0"].compute(**kernel)
        ends["done"] = sim.now

    sim.process(body())
    sim.run()
    return ends["done"]


# ------------------------------------------------------------------ GEMM quantisation
def test_one_wave_of_tiles_by_hand():
    # 10 tiles of 100 x 100 fill the 10 units once
    assert MODEL.gemm_time(SPEC, 1000, 100, 400) == pytest.approx(WAVE, rel=1e-12)
    assert MODEL.gemm_time(SPEC, 1, 1, 400) == pytest.approx(WAVE, rel=1e-12)   # a part tile costs a whole one


def test_a_shape_just_above_a_wave_costs_a_whole_extra_wave():
    # 1001 rows -> 11 tiles on 10 units -> two waves, twice the time for 0.1 % more work
    assert MODEL.gemm_time(SPEC, 1001, 100, 400) == pytest.approx(2 * WAVE, rel=1e-12)
    # the same across the batch: 10 GEMMs of one tile are one wave, 11 are two
    assert MODEL.gemm_time(SPEC, 100, 100, 400, batch=10) == pytest.approx(WAVE, rel=1e-12)
    assert MODEL.gemm_time(SPEC, 100, 100, 400, batch=11) == pytest.approx(2 * WAVE, rel=1e-12)
    # and across n: 101 columns need a second tile per row
    assert MODEL.gemm_time(SPEC, 500, 101, 400) == pytest.approx(WAVE, rel=1e-12)     # 10 tiles
    assert MODEL.gemm_time(SPEC, 600, 101, 400) == pytest.approx(2 * WAVE, rel=1e-12)  # 12 tiles


def test_efficiency_rises_with_k_as_k_over_k_plus_k0():
    def achieved(k):
        flops = 2.0 * 1000 * 100 * k
        return flops / (MODEL.gemm_time(SPEC, 1000, 100, k) * 100e12)

    assert achieved(100) == pytest.approx(0.5 * 100 / 200, rel=1e-12)
    assert achieved(900) == pytest.approx(0.5 * 900 / 1000, rel=1e-12)


@given(m=st.integers(1, 5000), n=st.integers(1, 5000), k=st.integers(1, 5000), batch=st.integers(1, 8))
def test_gemm_time_never_beats_the_fitted_peak_and_grows_with_every_dimension(m, n, k, batch):
    t = MODEL.gemm_time(SPEC, m, n, k, batch)
    assert t >= 2.0 * batch * m * n * k / (100e12 * 0.5) * (1 - 1e-12)
    for bigger in ((m + 1, n, k, batch), (m, n + 1, k, batch), (m, n, k + 1, batch), (m, n, k, batch + 1)):
        assert MODEL.gemm_time(SPEC, *bigger) >= t


def test_a_gemm_kernel_runs_its_modelled_time_on_the_fluid_kernel():
    flops = 2.0 * 1001 * 100 * 400
    nbytes = 2.0 * (1001 * 400 + 400 * 100 + 1001 * 100)
    end = run_alone(SPEC, flops=flops, nbytes=nbytes, kernel=KernelShape("gemm", ((1001, 100, 400, 1),)))
    assert end == pytest.approx(5e-6 + 2 * WAVE, rel=1e-9)


# ------------------------------------------------------------------ memory-bound kernels and launches
def test_a_memory_bound_kernel_moves_its_bytes_at_the_achievable_bandwidth():
    # 1 GB at 80 % of 10 TB/s: 125 us; its 0.8 GFLOP on the 10 TFLOP/s vector units would take 80 us
    end = run_alone(SPEC, flops=8e8, nbytes=1e9, kernel=KernelShape("memory", launches=2))
    assert end == pytest.approx(2 * 5e-6 + 1e9 / 8e12, rel=1e-9)


def test_unfused_attention_adds_its_gemms_and_its_softmax_traffic():
    score = (200, 200, 50, 4)            # 4 x (2 x 2) tiles = 16 tiles: two waves of k = 50
    gemm = 2 * 2 * 100 * 100 * (50 + 100) / (10e12 * 0.5)
    gemm_bytes = 4 * (200 * 50 + 50 * 200 + 200 * 200) * 2
    timing = MODEL.timing(SPEC, 1e9, gemm_bytes + 1e8, "bf16", KernelShape("attention", (score,), launches=4))
    assert timing.compute_time == pytest.approx(gemm + 1e8 / 8e12, rel=1e-12)
    assert timing.launch_delay == pytest.approx(20e-6)
    fused = MODEL.timing(SPEC, 1e9, gemm_bytes + 1e8, "bf16", KernelShape("fused_attention", (score,)))
    assert fused.compute_time == pytest.approx(gemm, rel=1e-12)     # fused: the traffic overlaps the GEMMs


def test_launch_overhead_is_paid_per_kernel_an_op_stands_for():
    assert launch_delay(SPEC, KernelShape("memory", launches=3)) == pytest.approx(15e-6)
    assert launch_delay(SPEC, None) == pytest.approx(5e-6)
    one = run_alone(SPEC, flops=0.0, nbytes=8e6, kernel=KernelShape("memory", launches=1))
    three = run_alone(SPEC, flops=0.0, nbytes=8e6, kernel=KernelShape("memory", launches=3))
    assert three - one == pytest.approx(10e-6, rel=1e-9)


def test_a_calibrated_kernel_still_shares_hbm_with_a_copy():
    sim = Simulation(switch(n=2, bandwidth="80 GB/s", latency=0.0, device=SPEC))
    gpu = sim.devices["gpu0"]
    ends = {}

    def run(name, factory):
        yield factory()
        ends[name] = sim.now

    sim.process(run("kernel", lambda: gpu.compute(flops=0.0, nbytes=1e9, kernel=KernelShape("memory"))))
    sim.process(run("copy", lambda: gpu.copy(1e9)))
    sim.run()
    assert ends["kernel"] > 5e-6 + 1e9 / 8e12 * 1.2      # slower than alone: the copy takes HBM too


# ------------------------------------------------------------------ the roofline stays for the rest
@pytest.mark.parametrize("shape", [None, KernelShape("gemm", ((1001, 100, 400, 1),), launches=7),
                                   KernelShape("memory", launches=3)])
def test_an_uncalibrated_device_keeps_the_roofline(shape):
    spec = PRESETS["a100_sxm4_80gb"]
    assert spec.kernel_model() is None
    flops, nbytes = 5e12, 4e9
    expected = max(flops / (312e12 * 0.7), nbytes / 2.039e12)
    amount, coefs = kernel_activity(spec, flops, nbytes, "bf16", None, shape)
    assert amount * max(coefs[0], coefs[1] / spec.memory_bandwidth) == pytest.approx(expected, rel=1e-12)
    assert launch_delay(spec, shape) == 0.0
    assert run_alone(spec, flops=flops, nbytes=nbytes, kernel=shape) == pytest.approx(expected, rel=1e-9)


def test_an_explicit_efficiency_overrides_the_model():
    amount, coefs = kernel_activity(SPEC, 1e12, 0.0, "bf16", 0.25, KernelShape("gemm", ((10, 10, 10, 1),)))
    assert amount * coefs[0] == pytest.approx(1e12 / 25e12)


# ------------------------------------------------------------------ data files
def test_the_shipped_models_load_through_importlib_resources():
    assert {"a100_40gb", "a100_80gb", "h100_sxm", "h800"} <= set(compute_model_names())
    fitted = load_compute_model("a100_40gb")
    for name in ("a100_80gb", "h100_sxm", "h800"):
        derived = load_compute_model(name)
        # spec-sheet scaling: the fitted fractions carry over, the spec supplies peak, SMs and HBM
        keep = {"name", "sources", "gemm_k_overhead"}
        assert derived.model_dump(exclude=keep) == fitted.model_dump(exclude=keep)
        assert all("carried over from a100_40gb" in text for key, text in derived.sources.items()
                   if key != "gemm_k_overhead")
        assert derived.sources["gemm_k_overhead"].startswith("derived from the spec sheet")
    for name in ("gemm_efficiency", "memory_efficiency"):
        assert "fitted" in fitted.sources[name] and "iteration_time.csv" in fitted.sources[name]
    for name in ("tile_m", "tile_n", "launch_overhead"):
        assert "assumption" in fitted.sources[name]


@pytest.mark.parametrize(("model", "preset"), [("a100_40gb", "a100_sxm4_40gb"), ("a100_80gb", "a100_sxm4_80gb"),
                                               ("h100_sxm", "h100_sxm")])
def test_the_tile_epilogue_depth_is_the_ridge_point_plus_the_prologue(model, preset):
    # 64 steps of pipeline fill + peak / HBM bandwidth steps to write the fp16 tile at the SM's share of HBM
    spec = PRESETS[preset]
    assert load_compute_model(model).gemm_k_overhead == pytest.approx(
        64 + spec.peak("fp16") / spec.memory_bandwidth, abs=0.06)


@pytest.mark.parametrize(("model", "preset"), [("a100_40gb", "a100_sxm4_40gb"), ("a100_80gb", "a100_sxm4_80gb"),
                                               ("h100_sxm", "h100_sxm"), ("h800", "h800")])
def test_the_data_files_state_the_spec_sheet_figures_of_their_preset(model, preset):
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("commsim.devices.data").joinpath(f"{model}.yaml").read_text())
    assert data["device"] == preset
    assert data["spec"]["compute_units"]["value"] == PRESETS[preset].compute_units
    assert data["spec"]["compute_units"]["source"]
    bandwidth = data["spec"]["memory_bandwidth"]["value"]
    from commsim.units import parse_quantity

    assert parse_quantity(bandwidth, "bandwidth") == pytest.approx(PRESETS[preset].memory_bandwidth)


def test_a_device_names_its_compute_model_or_gets_a_clear_error():
    spec = device_spec({"base": "h100_sxm", "compute_model": "h100_sxm"})
    assert spec.kernel_model().name == "h100_sxm"
    with pytest.raises(ConfigError) as info:
        device_spec({"base": "h100_sxm", "compute_model": "h100_pcie"})
    assert "compute_model" in str(info.value) and "a100_40gb" in str(info.value)


def test_a_calibrated_h100_is_faster_than_a_calibrated_a100_by_its_spec_sheet():
    a100 = device_spec({"base": "a100_sxm4_80gb", "compute_model": "a100_80gb"})
    h100 = device_spec({"base": "h100_sxm", "compute_model": "h100_sxm"})
    shape = (8192, 8192, 8192, 1)
    ratio = a100.kernel_model().gemm_time(a100, *shape) / h100.kernel_model().gemm_time(h100, *shape)
    # per-SM peak ratio (989/132) / (312/108), times the waves of 64 x 64 tiles on 108 vs 132 SMs, times
    # the main loop plus prologue/epilogue depth of each
    waves_a = math.ceil(64 * 64 / 108)
    waves_h = math.ceil(64 * 64 / 132)
    depth = (8192 + a100.kernel_model().gemm_k_overhead) / (8192 + h100.kernel_model().gemm_k_overhead)
    assert ratio == pytest.approx((989 / 132) / (312 / 108) * waves_a / waves_h * depth, rel=1e-9)
    assert 2.5 < ratio < 3.5
