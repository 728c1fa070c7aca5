"""Fuzz: hundreds of malformed inputs through the real ``commsim`` command line end cleanly.

Each case runs in a long-lived worker subprocess (``fuzz_worker.py``) that calls
the console script's entry point with a time cap (30 s per case) and an
address-space cap (3 GiB, ``resource.setrlimit``). A case fails the test when it
ends in a traceback, a hang, a crash or a memory blow-up, or when an input marked
"must be rejected" is accepted. A sample (one case in 30) runs when slow tests are
deselected; the full corpus is ``slow`` (still part of ``make test``), in two chunks the xdist
workers share.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_corpus import corpus
from fuzz_worker import FAILURES, run_cases

CASES = corpus()
CHUNKS = 2  # one worker process per xdist worker: each chunk pays the imports once


def _check(cases: list) -> Counter:
    results = run_cases(cases, workers=1)
    failed = [f"{kind}: {case.id} -> argv {case.argv}\n    "
              + ((answer["detail"] or answer["stderr"]).strip().splitlines() or [""])[-1][:300]
              for case, answer, kind in results if kind in FAILURES]
    assert not failed, f"{len(failed)} of {len(cases)} fuzz cases failed:\n" + "\n".join(failed)
    for case, answer, kind in results:
        if kind == "clean_error":  # one message on stderr, never an empty failure
            assert answer["stderr"].strip(), f"{case.id}: exit {answer['code']} with nothing on stderr"
    return Counter(kind for _case, _answer, kind in results)


def test_the_corpus_is_large_varied_and_has_unique_ids():
    assert len(CASES) >= 300
    assert len({case.id for case in CASES}) == len(CASES)
    families = Counter(case.family for case in CASES)
    assert set(families) == {"scenario", "topology", "trace", "flags", "sweep", "nccl", "compress"}
    assert sum(case.must_reject for case in CASES) > 0.7 * len(CASES)


def test_a_sample_of_the_corpus_ends_cleanly():
    counts = _check(CASES[::30])
    assert counts["clean_error"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_the_full_corpus_ends_cleanly(chunk):
    _check(CASES[chunk::CHUNKS])
