"""Optional dependencies (pip extras) and the one error that names the extra to install.

commsim's core (kernel, network, collectives, replay, studies without tensors)
needs neither PyTorch nor Dask. The compressors and the compressed data-parallel
study need ``pip install 'commsim[torch]'``; ``--dask`` needs
``pip install 'commsim[dask]'``. A feature that needs a missing extra raises
:class:`~commsim.errors.MissingExtraError` saying so, never a bare ImportError.

>>> require_extra("dask", field="--dask", value="tcp://scheduler:8786")  # installed here: nothing happens
>>> sorted(EXTRAS)
['chakra', 'dask', 'torch']
"""

from __future__ import annotations

import importlib.util
from typing import Any

from commsim.errors import MissingExtraError

__all__ = ["EXTRAS", "missing_extra", "require_extra"]

EXTRAS: dict[str, tuple[str, str]] = {
    "chakra": ("chakra", "MLCommons Chakra"),
    "dask": ("distributed", "Dask distributed"),
    "torch": ("torch", "PyTorch"),
}
"""Each extra: the module that shows it is installed and what it is called."""


def _error(extra: str, field: str, value: Any) -> MissingExtraError:
    module, what = EXTRAS[extra]
    shown = {} if value is None else {"value": value}
    return MissingExtraError(field=field, rule=f"needs {what} (module {module!r}), which is not installed",
                             fix=f"pip install 'commsim[{extra}]'", **shown)


def require_extra(extra: str, *, field: str, value: Any = None) -> None:
    """Raise :class:`MissingExtraError` for ``field`` (= ``value``, when given) unless ``extra`` is installed."""
    if importlib.util.find_spec(EXTRAS[extra][0]) is None:
        raise _error(extra, field, value)


def missing_extra(exc: ModuleNotFoundError, *, field: str, value: Any = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` an import failure stands for, if the missing module is an extra's."""
    top = (exc.name or "").split(".")[0]
    extra = next((name for name, (module, _) in EXTRAS.items() if module == top), None)
    return None if extra is None else _error(extra, field, value)
