"""Output locations, checked and created before anything is computed.

Every command that writes files calls :func:`output_dir` or :func:`output_file`
on its targets first, so an unwritable or odd location (a file where a directory
is needed, ``/dev/null/x``, a directory where a file is needed) is a
:class:`~commsim.errors.ConfigError` naming the flag or field, not a traceback
after minutes of simulation.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> output_dir(root / "a" / "b", field="-o").is_dir()
True
>>> try:
...     output_file(root / "a", field="--csv")
... except ConfigError as error:
...     print(error.field, error.rule)
--csv is a directory, not a file
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from commsim.errors import ConfigError

__all__ = ["output_dir", "output_file"]


def output_dir(path: str | Path, *, field: str) -> Path:
    """Create the directory ``path`` (and its parents) and check it accepts files; return it."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(field=field, value=str(target), rule="is an existing file, not a directory",
                          fix="give a directory path (it is created when missing), or move the file")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".commsim-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(field=field, value=str(target), rule=f"cannot be written ({_reason(exc)})",
                          fix="give a directory you can write to") from None
    return target


def output_file(path: str | Path, *, field: str) -> Path:
    """Create the parent directory of the file ``path`` and check the file can be written; return it.

    An existing file is left as it is (it is overwritten only when the command writes its result).
    """
    target = Path(path)
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(field=field, value=str(target), rule="is a directory, not a file",
                          fix=f"give a file path such as {target / 'out'}{target.suffix or ''}")
    try:
        output_dir(target.parent, field=field)
    except ConfigError as error:
        raise ConfigError(field=field, value=str(target), rule=f"cannot be written: its folder {error.value!r} "
                          f"{error.rule}", fix="give a file path in a directory you can write to") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(field=field, value=str(target), rule="cannot be written (permission denied)",
                          fix="give a file you can write to")
    return target


def _reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else type(exc).__name__
