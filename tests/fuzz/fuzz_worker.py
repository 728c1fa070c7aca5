"""Run fuzz cases through the real ``commsim`` command line in long-lived, capped worker processes.

A worker (``python fuzz_worker.py --serve``) imports commsim once, caps its own
address space (``resource.setrlimit``) and then runs one case per request line:
it calls the same entry point as the ``commsim`` console script in the case's
own directory, with stdout and stderr captured, and answers with one JSON line.
The parent (:class:`WorkerPool`) kills and replaces a worker whose case outlives
the time cap, so a hang costs one case, not the suite.

``python fuzz_worker.py --report [--jobs N]`` runs the whole corpus and prints the counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

MEMORY_CAP = 3 << 30  # bytes of address space per worker (torch alone maps ~1 GiB)
TIME_CAP = 30.0  # seconds per case, enforced in the worker and, with a margin, by the parent


class _Hang(BaseException):
    """Raised by the alarm in the worker when a case outlives the time cap."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang()


def _run_case(argv: list[str], directory: str) -> dict:
    from commsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    verdict, code, detail = "ok", 0, ""
    previous = os.getcwd()
    os.chdir(directory)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_CAP)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Hang:
        verdict, code = "hang", -1
    except MemoryError:
        verdict, code, detail = "memory", -1, traceback.format_exc(limit=-8)
    except BaseException:  # anything escaping the entry point is what the fuzzer hunts
        verdict, code, detail = "traceback", -1, traceback.format_exc(limit=-8)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir(previous)
    stderr = err.getvalue()
    if verdict == "ok" and "Traceback (most recent call last)" in stderr + out.getvalue():
        verdict, detail = "traceback", stderr[-2000:]
    return {"verdict": verdict, "code": code, "stderr": stderr[-3000:], "detail": detail[-3000:],
            "seconds": time.perf_counter() - start}


def serve() -> None:
    """Answer one JSON request per stdin line: ``{"argv": [...], "dir": "..."}``."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    os.environ["COLUMNS"] = "200"
    import commsim.cli  # noqa: F401  (pay the imports once)

    reply = sys.__stdout__
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        answer = _run_case(request["argv"], request["dir"])
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


class Worker:
    """One worker subprocess, ready to take requests on its stdin (see :func:`run_cases`)."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONHASHSEED": "0", "NO_COLOR": "1", "TERM": "dumb"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        ready = self._read(120.0)
        if not ready or not ready.get("ready"):
            raise RuntimeError("fuzz worker did not start")

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def classify(case, answer: dict) -> str:
    """``clean_error``, ``accepted``, ``silent_accept`` (a must-reject input accepted), ``traceback``, ``hang``…"""
    verdict = answer["verdict"]
    if verdict != "ok":
        return verdict
    if answer["code"] == 0:
        return "silent_accept" if case.must_reject else "accepted"
    return "clean_error"


def run_cases(cases: list, workers: int = 1) -> list[tuple[object, dict, str]]:
    """Run ``cases`` over ``workers`` worker processes (round robin); return (case, answer, class) triples."""
    with tempfile.TemporaryDirectory(prefix="commsim-fuzz-") as root:
        pool: list[Worker | None] = [None] * max(1, workers)
        queue = list(enumerate(cases))
        # one thread per worker would be simpler to read; a select loop keeps it to one process and no threads
        busy: dict[int, tuple[int, object, float]] = {}
        answers: dict[int, tuple[object, dict, str]] = {}
        while queue or busy:
            for slot in range(len(pool)):
                if slot in busy or not queue:
                    continue
                if pool[slot] is None or pool[slot].proc.poll() is not None:
                    pool[slot] = Worker()
                index, case = queue.pop(0)
                directory = Path(root) / f"case{index}"
                directory.mkdir()
                for name, text in case.files.items():
                    (directory / name).write_text(text, encoding="utf-8", errors="surrogateescape")
                worker = pool[slot]
                worker.proc.stdin.write(json.dumps({"argv": case.argv, "dir": str(directory)}) + "\n")
                worker.proc.stdin.flush()
                busy[slot] = (index, case, time.monotonic())
            streams = {pool[slot].proc.stdout: slot for slot in busy}
            ready, _, _ = select.select(list(streams), [], [], 1.0)
            for stream in ready:
                slot = streams[stream]
                index, case, _ = busy.pop(slot)
                line = stream.readline()
                if line:
                    answer = json.loads(line)
                else:
                    pool[slot].close()
                    pool[slot] = None
                    answer = {"verdict": "crash", "code": -1, "stderr": "", "detail": "worker died", "seconds": 0.0}
                answers[index] = (case, answer, classify(case, answer))
            for slot, (index, case, started) in list(busy.items()):
                if time.monotonic() - started > TIME_CAP + 30.0:
                    busy.pop(slot)
                    pool[slot].close()
                    pool[slot] = None
                    answer = {"verdict": "hang", "code": -1, "stderr": "", "detail": "worker hang", "seconds": 0.0}
                    answers[index] = (case, answer, "hang")
        for worker in pool:
            if worker is not None:
                worker.proc.stdin.close()
                worker.close()
        results = [answers[i] for i in sorted(answers)]
    return results


def counts(results: list[tuple[object, dict, str]]) -> Counter:
    """How many cases ended in each class."""
    return Counter(kind for _case, _answer, kind in results)


FAILURES = ("traceback", "hang", "memory", "crash", "silent_accept")


def main() -> None:
    if "--serve" in sys.argv:
        serve()
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from fuzz_corpus import corpus

    jobs = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 2
    cases = corpus()
    start = time.perf_counter()
    results = run_cases(cases, workers=jobs)
    print(f"{len(cases)} inputs in {time.perf_counter() - start:.0f} s: {dict(counts(results))}")
    for case, answer, kind in results:
        if kind in FAILURES:
            last = (answer["detail"] or answer["stderr"]).strip().splitlines()[-1:] or [""]
            print(f"  {kind:14s} {case.id}  ->  {last[0][:160]}")


if __name__ == "__main__":
    main()
