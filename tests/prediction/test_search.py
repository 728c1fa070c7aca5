"""Layout search: what it rejects and why, how it ranks, and the CSV it keeps."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from commsim.errors import ConfigError
from commsim.search import SEARCH_COLUMNS, SearchSpace, enumerate_candidates, search
from commsim.workloads.models import TransformerSpec

# 6 layers of width 8,192: 4.9 B parameters, 18 bytes each with Adam and fp32 gradients = 88 GB on one GPU,
# more than an H100's 80 GB; with TP 2 it is half that.
WIDE = TransformerSpec(name="wide", layers=6, hidden=8192, heads=64, ffn_hidden=32768, vocab=32000, max_seq_len=128)
TOPOLOGY = "switch:8,450GB/s,1us"
PLAIN = {"virtual_pipeline_stages": [1], "recompute": ["none"], "distributed_optimizer": [False]}


def test_enumeration_rejects_what_does_not_divide():
    spec = TransformerSpec(name="t", layers=6, hidden=768, heads=12, ffn_hidden=3072, vocab=1000, max_seq_len=64)
    space = SearchSpace(tp=[1, 8], pp=[1, 4], micro_batch_size=[1, 3], **PLAIN)
    runnable, rejected = enumerate_candidates(spec, gpus=8, global_batch=16, seq_len=64, space=space)
    reasons = {(r["tp"], r["pp"], r["micro_batch_size"]): r["reason"] for r in rejected}
    assert reasons[(8, 1, 1)] == "tp = 8 does not divide the 12 attention heads"
    assert reasons[(1, 4, 1)] == "pp x virtual stages = 4 does not divide the 6 layers"
    assert reasons[(8, 4, 3)] == "tp x pp = 32 does not divide the 8 GPUs"
    assert reasons[(1, 1, 3)] == "micro-batch x dp = 3 x 8 does not divide the global batch of 16"
    assert [(c["tp"], c["pp"], c["dp"], c["micro_batch_size"], c["num_micro_batches"]) for c in runnable] == \
        [(1, 1, 8, 1, 2)]


def test_search_ranks_by_step_time_and_rejects_what_does_not_fit(tmp_path):
    space = SearchSpace(tp=[1, 2, 3], pp=[1, 2], micro_batch_size=[1], **PLAIN)
    out = search(WIDE, TOPOLOGY, global_batch=8, seq_len=128, space=space, csv_path=tmp_path / "s.csv")
    table = out.table
    ranked, rejected = out.ranked, out.rejected
    assert len(table) == 6 and list(table.columns) == ["rank", *SEARCH_COLUMNS]
    assert ranked["step_time"].is_monotonic_increasing and ranked["step_time"].gt(0).all()
    assert table["rank"].dropna().tolist() == list(range(1, len(ranked) + 1))
    by_layout = {(r.tp, r.pp): r.reason for r in rejected.itertuples()}
    assert by_layout[(1, 1)].startswith("does not fit in memory")
    assert by_layout[(3, 1)] == "tp x pp = 3 does not divide the 8 GPUs"
    assert (2, 1) in {(r.tp, r.pp) for r in ranked.itertuples()}
    assert all(math.isclose(r.mfu * 989e12, r.tflops_per_gpu * 1e12, rel_tol=1e-9) for r in ranked.itertuples())
    saved = pd.read_csv(tmp_path / "s.csv")
    assert len(saved) == 6 and set(saved["status"]) == {"ok", "rejected"}


def test_more_gpus_than_the_cluster_is_an_error():
    with pytest.raises(ConfigError, match="between 1 and the topology's 8"):
        search(WIDE, TOPOLOGY, global_batch=8, gpus=16)
