"""The ``commsim`` command line. Each command lives in its own private module."""

from commsim.cli import (  # noqa: F401
    _calibrate,
    _calibrate_megatron,
    _collective,
    _compress,
    _run,
    _search,
    _topology,
    _trace,
    _train,
    _validate,
)
from commsim.cli._app import app, main

__all__ = ["app", "main"]
