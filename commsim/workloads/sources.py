"""One entry point for every trace a user brings: commsim JSON, Chakra ET / JSON, PyTorch profiler JSON.

>>> detect_format("traces/llama.json")
'commsim'
>>> detect_format("astra/all_reduce.3.et")
'chakra'
"""

from __future__ import annotations

import re
from pathlib import Path

from commsim.errors import TraceError
from commsim.workloads.trace import Trace

__all__ = ["FORMATS", "detect_format", "load_any_trace"]

FORMATS = ("auto", "commsim", "chakra", "pytorch")
"""What ``load_any_trace`` reads; ``auto`` tells them apart by the path and the first bytes."""

_CHAKRA_NAME = re.compile(r"\.\d+\.(et|et\.gz)$")


def _json_head(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return ""


def detect_format(path: str | Path) -> str:
    """``commsim``, ``chakra`` or ``pytorch`` for a file, directory or Chakra prefix (by name, then content)."""
    path = Path(path)
    if path.suffix == ".et" or _CHAKRA_NAME.search(path.name):
        return "chakra"
    if path.is_dir():
        if any(path.glob("*.et")) or any(path.glob("*.et.gz")):
            return "chakra"
        first = next(iter(sorted(path.glob("*.json"))), None)
        return "chakra" if first is None else detect_format(first)
    if not path.exists():   # a prefix such as traces/all_reduce for traces/all_reduce.<rank>.et
        return "commsim" if path.suffix == ".json" else "chakra"
    head = _json_head(path)
    if '"traceEvents"' in head or '"schemaVersion"' in head:
        return "pytorch"
    if '"commsim-trace"' in head or '"programs"' in head:
        return "commsim"
    if re.search(r'"(type|dataDeps|data_deps|ctrlDeps|ctrl_deps)"', head) or '"version"' in head:
        return "chakra"
    return "commsim"


def load_any_trace(path: str | Path, fmt: str = "auto", *, process_groups: dict[str, list[int]] | None = None,
                   check: bool = True) -> Trace:
    """Read a trace in any supported format (see :func:`detect_format`) as a :class:`Trace`."""
    if fmt not in FORMATS:
        raise TraceError(field="format", value=fmt, rule="is not a trace format commsim reads",
                         fix=f"use one of {', '.join(FORMATS)}")
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "commsim":
        from commsim.workloads.trace import load_trace

        return load_trace(path, check=check)
    if kind == "chakra":
        from commsim.workloads.chakra import import_chakra

        return import_chakra([path], process_groups=process_groups, check=check)
    from commsim.workloads.kineto import import_pytorch_profile

    return import_pytorch_profile([path], check=check)
