"""Public names imported on first use (PEP 562), so ``import commsim`` stays instant.

A package's ``__init__`` lists where each public name lives instead of importing
it; the module behind a name (and pandas, networkx, plotly, torch behind that)
is imported the first time the name is read. ``from package import Name``,
``package.Name`` and ``dir(package)`` behave as with eager imports, and so does
reading a submodule as an attribute (``commsim.collectives.ring``).

>>> import sys
>>> getattr_, dir_ = lazy_exports("commsim.units", {"parse_quantity": "commsim.units"})
>>> getattr_("parse_quantity").__name__
'parse_quantity'
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package`` for names living in other modules.

    ``where`` maps each public name to the module that defines it. A resolved
    name is cached in the package's namespace, so later reads cost nothing.
    """

    def module_getattr(name: str) -> Any:
        module_name = where.get(name)
        if module_name is not None:
            value = getattr(importlib.import_module(module_name), name)
            setattr(sys.modules[package], name, value)
            return value
        # a submodule read as an attribute before anything imported it
        submodule = f"{package}.{name}"
        if not name.startswith("__") and importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return module_getattr, module_dir
