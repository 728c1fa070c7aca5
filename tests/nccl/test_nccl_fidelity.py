"""The calibrated simulator against the measured Azure ND A100 v4 logs, and the calibration itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nccl_data import GPUS, TOPOLOGY

from commsim.collectives.calibrate import (
    compare_simulation,
    fit_nccl,
    leave_one_out,
    summarise,
    vector_from_params,
)

# Relative busbw error (measured time / simulated time - 1, in %) of every size of every log with the shipped
# calibration, as achieved when it was fitted; a change to the model, the executor, the topology or the
# calibration that moves any of them by more than TOLERANCE points fails. For 1 GPU busbw is 0 by definition
# and the error is that of algbw (the same time ratio).
EXPECTED = {
    1: [+3.4, +3.4, +2.3, +4.6, +5.3, +5.7, +6.6, +3.8, +1.7, +3.3, +3.1, +4.0, +2.9, +2.0, -0.6, -4.6, -13.3,
        -10.8, -4.8, +2.2, -0.7, -1.6, +0.4, +0.6, +0.3, +0.4, +0.7, +0.4],
    2: [-4.9, -4.6, -3.7, -4.5, -5.2, -6.7, +0.9, -3.6, -1.5, +0.3, +7.1, +42.9, +49.8, +67.5, +85.3, +59.1,
        -1.7, -1.7, +4.4, -0.0, +5.1, -3.7, +1.5, +3.5, +9.1, +9.6, +9.6, +7.3],
    4: [+2.6, +2.0, +2.0, -0.0, +0.2, +0.8, -1.5, -0.2, +2.7, -2.3, -3.9, -11.2, -0.6, -3.7, -12.1, -5.4, -14.5,
        -1.3, -1.9, -2.3, +4.2, -0.7, -8.2, -1.8, -2.3, -0.2, -0.7, -0.9],
    8: [+5.4, +4.0, +6.4, +2.2, +6.1, +3.7, +3.0, +7.1, +2.1, +2.4, +0.2, -2.1, -4.4, -15.9, -26.0, -31.9, -19.2,
        -4.9, +2.3, +1.0, +6.2, +8.6, +3.7, -7.1, -1.0, -3.6, -2.8, -3.5],
    16: [-14.5, -11.6, -7.6, -3.1, +12.4, +13.0, +25.0, -3.1, -3.7, +0.7, +5.8, +8.8, -2.9, -11.7, -3.2, -8.2,
        +0.2, -3.0, +2.3, +0.9, +2.1, -0.1, +0.7, +0.6, +0.2],
}
TOLERANCE = 1.0  # percentage points


@pytest.fixture(scope="module")
def simulated(logs, calibrated) -> pd.DataFrame:
    """Every size of every log, simulated with the shipped calibration."""
    return compare_simulation([logs[g] for g in GPUS], TOPOLOGY, calibrated)


@pytest.mark.parametrize("gpus", GPUS)
def test_median_busbw_error_at_most_10_percent_from_1_MiB(gpus: int, simulated: pd.DataFrame) -> None:
    rows = simulated[(simulated["ranks"] == gpus) & (simulated["size"] >= 2**20)]
    assert len(rows) >= 11
    assert float(np.median(np.abs(rows["error"]))) <= 0.10


@pytest.mark.parametrize("gpus", GPUS)
def test_every_size_keeps_its_error(gpus: int, simulated: pd.DataFrame) -> None:
    rows = simulated[simulated["ranks"] == gpus]
    achieved = (rows["error"] * 100).round(1).tolist()
    assert len(achieved) == len(EXPECTED[gpus])
    moved = [(int(s), e, a) for s, e, a in zip(rows["size"], EXPECTED[gpus], achieved, strict=True)
             if abs(a - e) > TOLERANCE]
    assert not moved, f"sizes whose error moved (size, expected %, now %): {moved}"


def test_simulated_busbw_is_the_nccl_tests_convention(simulated: pd.DataFrame) -> None:
    big = simulated[(simulated["ranks"] == 8) & (simulated["size"] == 2**30)].iloc[0]
    assert big["predicted_busbw"] == pytest.approx(2**30 / big["predicted_time"] * 2 * 7 / 8)
    assert big["measured_busbw"] == pytest.approx(230.86e9)


def test_refit_reproduces_the_shipped_calibration(logs, calibrated) -> None:
    fit = fit_nccl([logs[g] for g in GPUS], TOPOLOGY)
    assert np.allclose(vector_from_params(fit.free, fit.params), vector_from_params(fit.free, calibrated),
                       rtol=2e-3, atol=1e-10)
    # only size- and scale-free parameters are fitted: per protocol, per link class, and the one-rank copy
    assert len(fit.free) == 13 and not any("gpu" in name or "size" in name for name in fit.free)
    quality = fit.summary()
    assert (quality["median_abs_error"] <= 0.10).all()


def test_held_out_logs_are_predicted(logs) -> None:
    held = summarise(leave_one_out([logs[g] for g in (2, 4, 8, 16)], TOPOLOGY)).to_dict("index")
    # single-server logs predicted from the others: within 10 % median
    for g in (2, 4, 8):
        assert held[f"all_reduce_{g}gpu.log"]["median_abs_error"] <= 0.10
    # without any multi-server log the NIC is taken at the NVLink's fitted efficiency (0.75; the 16-GPU log shows
    # 0.64), so the 16-GPU run is predicted about 15 % too fast; its measured busbw needs the fitted NIC efficiency
    assert 0.10 < held["all_reduce_16gpu.log"]["median_abs_error"] <= 0.16
