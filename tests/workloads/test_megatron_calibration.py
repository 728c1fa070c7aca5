"""Kernel shapes in traces, the 2020 Megatron-LM schedule, and the compute-model fit to the DGX A100 rows.

The fit tests replay the four one-server DGX A100 rows of ../shared/data/megatron-lm-2020-scaling
(skipped when the shared data is absent).
"""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from commsim.cli import app
from commsim.devices import load_compute_model
from commsim.errors import ConfigError
from commsim.validators import run_validation
from commsim.workloads import training_trace
from commsim.workloads._costs import block_costs
from commsim.workloads.megatron_calibration import (
    DGX_A100_TOPOLOGY,
    FIT_PARAMETERS,
    MegatronRow,
    MegatronSetup,
    as_megatron_2020,
    fit_megatron,
    read_megatron_csv,
    shared_table,
)
from commsim.workloads.models import TransformerSpec
from commsim.workloads.trace import dump_trace, parse_trace

CSV = shared_table()
needs_data = pytest.mark.skipif(not CSV.is_file(), reason="shared Megatron-LM table not present")
SETUP = MegatronSetup(topology=DGX_A100_TOPOLOGY, nccl_calibration=DGX_A100_TOPOLOGY.with_suffix(".calibration.yaml"))
TINY = TransformerSpec(name="tiny", layers=2, hidden=64, heads=4, ffn_hidden=256, vocab=128, max_seq_len=32)


# ------------------------------------------------------------------ kernel shapes travel with the ops
def test_block_costs_say_which_kernels_they_are():
    costs = block_costs(TINY, batch=2, seq_len=32, tp=2, dtype="fp16", flash_attention=False)
    fwd, bwd = costs.forward, costs.backward
    assert fwd["qkv"].kernel == "gemm" and fwd["qkv"].gemms == ((64, 96, 64, 1),)   # T = 64 tokens, 3·64/2 wide
    assert fwd["fc2"].gemms == ((64, 64, 128, 1),)
    assert bwd["fc1_wgrad"].gemms == ((64, 128, 64, 1),)                            # k = tokens
    # unfused attention: score (32 x 32 x 16) and context (32 x 16 x 32) per head and sequence, four kernels
    assert fwd["attn"].kernel == "attention" and fwd["attn"].launches == 4
    assert fwd["attn"].gemms == ((32, 32, 16, 4), (32, 16, 32, 4))
    assert sum(2.0 * m * n * k * b for m, n, k, b in bwd["attn_bwd"].gemms) == pytest.approx(
        2 * sum(2.0 * m * n * k * b for m, n, k, b in fwd["attn"].gemms))
    assert fwd["norm1"].kernel == "memory" and fwd["norm1"].launches == 2
    assert fwd["act"].kernel == "memory" and fwd["act"].launches == 1   # bias + GeLU fused
    flash = block_costs(TINY, batch=2, seq_len=32, tp=2, dtype="fp16", flash_attention=True)
    assert flash.forward["attn"].kernel == "fused_attention" and flash.forward["attn"].launches == 1


def test_training_ops_carry_their_shapes_through_a_saved_trace():
    trace = training_trace(TINY, tp=2, micro_batch_size=2, seq_len=32, track_memory=False)
    ops = {op.id: op for op in trace.programs[0].ops}
    assert ops["f0.0.qkv"].kernel_shape().gemms == ((64, 96, 64, 1),)
    assert ops["f0.lm_head"].gemms == [(64, 64, 64, 1)]                 # vocab 128 / tp 2
    assert ops["optimizer"].kernel == "memory"
    again = parse_trace(dump_trace(trace))
    back = {op.id: op for op in again.programs[0].ops}
    assert back["b0.0.attn_bwd"].kernel_shape() == ops["b0.0.attn_bwd"].kernel_shape()


# ------------------------------------------------------------------ the 2020 schedule
def test_synchronous_tp_makes_the_weight_gradient_wait_for_the_all_reduce():
    trace = training_trace(TINY, tp=2, micro_batch_size=2, seq_len=32, track_memory=False)
    sync = {op.id: op for op in as_megatron_2020(trace).programs[0].ops}
    assert "b0.0.tp2" in sync["b0.0.fc1_wgrad"].deps
    overlapped = {op.id: op for op in trace.programs[0].ops}
    assert "b0.0.tp2" not in overlapped["b0.0.fc1_wgrad"].deps


# ------------------------------------------------------------------ the fit
@needs_data
def test_the_fit_finds_the_shipped_parameters_from_elsewhere():
    rows = [r for r in read_megatron_csv(CSV) if r.dp == 1]
    shipped = load_compute_model("a100_40gb")
    start = shipped.model_copy(update={"gemm_efficiency": 0.5, "memory_efficiency": 0.9})
    fit = fit_megatron(rows, start, SETUP, max_iterations=4)
    for name in FIT_PARAMETERS:
        assert getattr(fit.model, name) == pytest.approx(getattr(shipped, name), rel=0.01), name
    assert all(abs(p.error) < 0.02 for p in fit.predictions)


@needs_data
def test_a_fit_that_needs_a_parameter_beyond_its_bound_is_refused_by_name():
    # twice as fast as measured would need GEMMs above peak: the model cannot, and says which parameter
    rows = [dataclasses.replace(r, measured=r.measured / 2) for r in read_megatron_csv(CSV) if r.dp == 1]
    with pytest.raises(ConfigError) as info:
        fit_megatron(rows, load_compute_model("a100_40gb"), SETUP, max_iterations=1)
    assert "gemm_efficiency" in str(info.value) and "bound" in str(info.value)


def test_a_missing_table_or_column_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_megatron_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("case,hidden_size\n1B,1920\n")
    with pytest.raises(ConfigError, match="missing"):
        read_megatron_csv(bad)
    result = CliRunner().invoke(app, ["calibrate", "megatron", str(tmp_path / "nope.csv"), "-o",
                                      str(tmp_path / "out.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_an_unknown_recompute_mode_or_an_uneven_micro_batch_is_refused():
    row = MegatronRow("1B", 1920, 15, 24, 1, 1, 1, 16, 1024, 51200, 1.076)
    with pytest.raises(ConfigError, match="recompute"):
        dataclasses.replace(SETUP, recompute="sometimes").training_config(row, dp=1)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        dataclasses.replace(SETUP, micro_batch_size=5).training_config(row, dp=1)


@needs_data
def test_the_shipped_model_reproduces_the_2020_dgx_a100_rows_in_the_validation_area():
    table = run_validation(["megatron"]).set_index("case")
    assert len(table) == 12 and set(table["status"]) == {"pass"}
    fitted = table[table.index.str.contains("fitted")]
    predicted = table[table.index.str.contains("predicted")]
    held = table[table.index.str.contains("held out")]
    assert len(fitted) == len(predicted) == len(held) == 4
    assert (fitted["error"].abs() < 0.02).all()          # the rows of the fit
    assert (predicted["error"].abs() < 0.08).all()       # 128-way DP: not in the fit
    assert (held["error"].abs() < 0.05).all()            # each one-server row from a fit to the other three
    for size in ("1B TP1", "8B TP8"):                    # the DP all-reduce adds exposed time
        dp1 = table.loc[f"{size} DP1 iteration time (fitted)", "simulated"]
        assert table.loc[f"{size} DP128 iteration time (predicted, not in the fit)", "simulated"] > dp1
