"""Errors survive being rebuilt from their args: SimPy re-raises that way, pickle (Dask, processes) too."""

from __future__ import annotations

import pickle

import pytest
import simpy

from commsim.errors import ConfigError, OutOfMemoryError, RoutingError, StallError, TopologyError, UnitError

ERRORS = [
    ConfigError(field="links[0].bandwidth", value=-5, rule="must be positive", fix="give a bandwidth above 0"),
    TopologyError(field="topology", rule="is disconnected", fix="add links", source="t.yaml"),
    UnitError(field="latency", value="5 parsecs", rule="has an unknown time unit", fix="use s, ms, us"),
    OutOfMemoryError("gpu0 (rank 0, op 'acts')", 4e9, 78e9, 80e9),
    StallError(0.25, ["transfer gpu0->gpu1 of 1 GiB via (no route)"]),
    RoutingError(field="route", value="gpu0 -> gpu2", rule="has no path in the topology", fix="add a link"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_rebuilt_and_unpickled_errors_read_the_same(error: Exception) -> None:
    rebuilt = type(error)(*error.args)
    unpickled = pickle.loads(pickle.dumps(error))
    assert str(rebuilt) == str(error) == str(unpickled)
    assert type(unpickled) is type(error)


def test_simpy_reraises_a_config_error_from_a_process() -> None:
    env = simpy.Environment()

    def fails():
        yield env.timeout(1.0)
        raise ConfigError(field="workload.tp", value=3, rule="does not divide 32 heads", fix="use 1, 2, 4, 8")

    env.process(fails())
    with pytest.raises(ConfigError, match=r"workload\.tp = 3: does not divide 32 heads\. Fix: use 1, 2, 4, 8\."):
        env.run()
