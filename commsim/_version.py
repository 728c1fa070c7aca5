"""The installed version of commsim, read from the package metadata (``pyproject.toml`` is its one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("commsim")
except PackageNotFoundError:  # imported from a source tree that was never installed: no metadata to read
    __version__ = "0+unknown"
