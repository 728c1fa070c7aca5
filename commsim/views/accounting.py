"""Where each device's time goes: exposed communication intervals and a per-device breakdown.

Works on the spans table of a run (device, stream, kind, start, end; seconds).
*Work* is what keeps a device's compute units busy: spans of kind ``compute``
and ``delay`` (a measured or fixed-time kernel, as imported traces carry).
*Communication* is kind ``comm``. Communication is **exposed** while it runs
and no work does. Each exposed piece is charged to the parallelism of the
communication running then, read from its stream name (``tp_*``, ``pp_*``,
``dp_*``; anything else is ``other``); when several run at once the piece is
split equally between them.

The breakdown splits ``[0, makespan]`` of each device into: ``compute``
(work), ``exposed TP/PP/DP/other comm``, ``other`` (copies, disk reads, not
overlapped by the above), ``bubble`` (nothing running before the device's last
activity: waiting for a pipeline neighbour or a peer) and ``idle`` (after its
last activity, until the run ends). The parts add up to the makespan.

>>> import pandas as pd
>>> spans = pd.DataFrame({"device": ["g0"] * 3, "stream": ["compute", "tp_comm", "dp_comm"],
...                       "kind": ["compute", "comm", "comm"], "start": [0.0, 0.5, 1.5], "end": [1.0, 2.0, 2.5]})
>>> [(round(a, 2), round(b, 2), c) for a, b, c in exposed_intervals(spans)["g0"]]
[(1.0, 1.5, 'TP'), (1.5, 2.0, 'TP+DP'), (2.0, 2.5, 'DP')]
>>> row = device_breakdown(spans, makespan=3.0).iloc[0]
>>> [round(float(row[c]), 2) for c in ("compute", "exposed TP", "exposed DP", "bubble", "idle")]
[1.0, 0.75, 0.75, 0.0, 0.5]
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

__all__ = ["BREAKDOWN_PARTS", "WORK_KINDS", "comm_class", "device_breakdown", "exposed_intervals", "merge"]

WORK_KINDS = ("compute", "delay")
"""Span kinds that count as work (they hide communication)."""

_CLASSES = ("TP", "PP", "DP", "other")
BREAKDOWN_PARTS = ("compute", "exposed TP", "exposed PP", "exposed DP", "exposed other", "other", "bubble", "idle")
"""Columns of :func:`device_breakdown` (seconds), in drawing order."""


def comm_class(stream: str) -> str:
    """``TP``, ``PP``, ``DP`` or ``other`` from a communication stream's name (``tp_comm`` → ``TP``)."""
    head = str(stream).lower()
    for name in ("tp", "pp", "dp"):
        if head.startswith(name) or head.startswith(f"comm:{name}"):
            return name.upper()
    return "other"


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals as sorted, disjoint intervals."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(intervals: list[tuple[float, float]], holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``intervals`` minus ``holes`` (both sorted and disjoint)."""
    out = []
    j = 0
    for start, end in intervals:
        cursor = start
        while j < len(holes) and holes[j][1] <= cursor:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < end:
            if holes[k][0] > cursor:
                out.append((cursor, holes[k][0]))
            cursor = max(cursor, holes[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def _classified(comm: list[tuple[float, float, str]], free: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
    """Cut the exposed time ``free`` where the set of running communication classes changes."""
    edges = sorted({t for s, e, _ in comm for t in (s, e)})
    if not edges:
        return []
    running: dict[float, set[str]] = {}
    events = defaultdict(list)
    for s, e, c in comm:
        events[s].append((1, c))
        events[e].append((-1, c))
    counts: dict[str, int] = defaultdict(int)
    for t in edges:
        for delta, c in events[t]:
            counts[c] += delta
        running[t] = {c for c, n in counts.items() if n > 0}
    out = []
    j = 0
    for start, end in free:
        while j + 1 < len(edges) and edges[j + 1] <= start:
            j += 1
        cursor = start
        k = j
        while cursor < end and k < len(edges):
            stop = min(end, edges[k + 1]) if k + 1 < len(edges) else end
            classes = running.get(edges[k], set())
            if stop > cursor and classes:
                label = "+".join(c for c in _CLASSES if c in classes)
                if out and out[-1][2] == label and out[-1][1] == cursor:
                    out[-1] = (out[-1][0], stop, label)
                else:
                    out.append((cursor, stop, label))
            cursor = stop
            k += 1
    return out


def exposed_intervals(spans: pd.DataFrame) -> dict[str, list[tuple[float, float, str]]]:
    """Per device: (start, end, classes) of the time communication runs and no work does (seconds)."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    if spans.empty:
        return out
    for device, part in spans.groupby("device", sort=False):
        work = merge([(s, e) for s, e, k in zip(part["start"], part["end"], part["kind"], strict=True)
                      if k in WORK_KINDS])
        comm = [(s, e, comm_class(st)) for s, e, k, st in zip(part["start"], part["end"], part["kind"],
                                                              part["stream"], strict=True) if k == "comm" and e > s]
        free = _subtract(merge([(s, e) for s, e, _ in comm]), work)
        out[str(device)] = _classified(comm, free)
    return out


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in intervals)


def device_breakdown(spans: pd.DataFrame, makespan: float,
                     exposed: dict[str, list[tuple[float, float, str]]] | None = None) -> pd.DataFrame:
    """One row per device: seconds of each part of :data:`BREAKDOWN_PARTS` (they add up to ``makespan``).

    ``exposed`` is :func:`exposed_intervals` of the same spans when already computed.
    """
    rows = []
    exposed = exposed_intervals(spans) if exposed is None else exposed
    for device, part in spans.groupby("device", sort=False):
        intervals = list(zip(part["start"], part["end"], part["kind"], strict=True))
        work = merge([(s, e) for s, e, k in intervals if k in WORK_KINDS])
        comm = merge([(s, e) for s, e, k in intervals if k == "comm"])
        busy = merge(work + comm)
        other = _subtract(merge([(s, e) for s, e, k in intervals if k not in WORK_KINDS and k != "comm"]), busy)
        last = max((e for _, e, _ in intervals), default=0.0)
        row = {"device": str(device), "compute": _length(work)}
        for c in _CLASSES:
            row[f"exposed {c}"] = 0.0
        for s, e, label in exposed.get(str(device), []):
            classes = label.split("+")
            for c in classes:
                row[f"exposed {c}"] += (e - s) / len(classes)
        row["other"] = _length(other)
        row["bubble"] = max(last - _length(merge(busy + other)), 0.0)
        row["idle"] = max(makespan - last, 0.0)
        rows.append(row)
    return pd.DataFrame(rows, columns=["device", *BREAKDOWN_PARTS])
