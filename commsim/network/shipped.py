"""Topology files shipped inside the package, found by name wherever commsim is installed.

The files live in ``commsim/topologies`` and are read with
:mod:`importlib.resources`, so a wheel installed outside the repository has them.
A topology argument names one of them by its bare name (``dgx_a100``), by its
file name (``dgx_a100.yaml``) or by the repository path users already write
(``topologies/dgx_a100.yaml``); a file that exists at the given path always wins.

>>> "dgx_a100" in shipped_topologies()
True
>>> topology_file("topologies/dgx_a100.yaml").name
'dgx_a100.yaml'
>>> topology_file("switch:8,50GB/s,500ns") is None
True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["calibration_beside", "shipped_topologies", "shipped_topology", "topologies_folder", "topology_file"]

_PACKAGE = "commsim.topologies"
_CALIBRATION = ".calibration.yaml"


def topologies_folder() -> Path:
    """The folder of the shipped topology files (``commsim/topologies`` of the installed package)."""
    # pip unpacks wheels, so the data is a real folder (a zipped install is not supported)
    return Path(str(resources.files(_PACKAGE)))


def shipped_topologies() -> list[str]:
    """Names of the shipped topology files (without ``.yaml``; calibration files excluded), sorted."""
    return sorted(p.name.removesuffix(".yaml") for p in topologies_folder().iterdir()
                  if p.name.endswith(".yaml") and not p.name.endswith(_CALIBRATION))


def shipped_topology(name: str) -> Path | None:
    """The shipped file named ``name`` (``dgx_a100``, ``dgx_a100.yaml`` or ``topologies/dgx_a100.yaml``), or None."""
    parts = Path(name).parts
    if len(parts) == 2 and parts[0] == "topologies":
        parts = parts[1:]
    if len(parts) != 1:
        return None
    stem = parts[0].removesuffix(".yaml").removesuffix(".yml")
    return topologies_folder() / f"{stem}.yaml" if stem in shipped_topologies() else None


def topology_file(text: str | Path) -> Path | None:
    """The YAML file a topology argument names: an existing path, else a shipped file; None for anything else."""
    path = Path(text)
    if path.is_file():
        return path
    return None if path.is_absolute() else shipped_topology(str(text))


def calibration_beside(topology: str | Path) -> Path | None:
    """``NAME.calibration.yaml`` beside the topology file ``topology`` names, if there is one."""
    path = topology_file(topology)
    if path is None or path.suffix not in (".yaml", ".yml"):
        return None
    beside = path.with_name(f"{path.stem}{_CALIBRATION}")
    return beside if beside.is_file() else None
