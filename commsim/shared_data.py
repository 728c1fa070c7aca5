"""Where the shared measurement data (nccl-tests logs, the Megatron-LM tables) is, when it is there.

The measurements are not shipped with commsim: they sit in ``../shared/data``
beside a source checkout, or wherever ``$COMMSIM_SHARED_DATA`` points. The
validation areas that need them report "not applicable" rows naming the folder
they looked in when the data is absent (for example in an installed wheel).

>>> shared_data_folder("no-such-data-set").name
'no-such-data-set'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_DATA_VARIABLE", "shared_data_folder"]

SHARED_DATA_VARIABLE = "COMMSIM_SHARED_DATA"
"""The environment variable naming the shared data folder (it holds one folder per data set)."""


def shared_data_folder(data_set: str) -> Path:
    """The folder of ``data_set``: under ``$COMMSIM_SHARED_DATA`` if set, else under ``../shared/data``
    beside the source checkout commsim runs from (the folder need not exist)."""
    root = os.environ.get(SHARED_DATA_VARIABLE)
    if root:
        return Path(root) / data_set
    # an editable install runs from the checkout (commsim/ beside pyproject.toml); its sibling holds the data
    checkout = Path(__file__).resolve().parents[1]
    return checkout.parent / "shared" / "data" / data_set
