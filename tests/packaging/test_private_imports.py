"""No module of commsim reaches into another package's private names.

A private module (``commsim.collectives._executor``) or a private name
(``_LateEvent``) belongs to the package that holds it: only modules inside that
package may import it; everyone else uses the package's public API (its
``__all__``). The scan reads every file of commsim/ as source (nothing is
imported): ``import`` and ``from ... import`` statements (relative ones resolved,
those inside functions included) and strings that name a module the way lazy
exports and registries do (``"commsim.collectives._schedule"``,
``"commsim.systems.t3.study:T3Study"``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import commsim

PACKAGE_ROOT = Path(commsim.__file__).parent

_MODULE_STRING = re.compile(r"commsim(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?")


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of the module at ``path`` (under ``root``, the commsim folder) and whether it is a package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _references(source: str, module: str, is_package: bool) -> list[tuple[int, str, str | None]]:
    """(line, module, imported name or None) of every commsim module the source imports or names in a string."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found.extend((node.lineno, base, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            target, _, name = node.value.partition(":")
            found.append((node.lineno, target, name or None))
    return [ref for ref in found if ref[1] == "commsim" or ref[1].startswith("commsim.")]


def _owner(target: str, name: str | None, root: Path) -> str | None:
    """The package that owns the private part of ``target`` (and ``name``), or None if all of it is public."""
    parts = target.split(".")
    for k, part in enumerate(parts):
        if _is_private(part):
            return ".".join(parts[:k])
    if name is not None and _is_private(name):
        # a module's private name belongs to the package the module is in
        is_package = (root.parent.joinpath(*parts) / "__init__.py").exists()
        return target if is_package else ".".join(parts[:-1])
    return None


def cross_package_private_imports(root: Path) -> list[tuple[str, int, str, str | None]]:
    """(importing module, line, target module, name) of every private import from outside its owner."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        for line, target, name in _references(path.read_text(encoding="utf-8"), module, is_package):
            owner = _owner(target, name, root)
            if owner is not None and module != owner and not module.startswith(owner + "."):
                out.append((module, line, target, name))
    return out


def test_no_module_imports_another_packages_private_names() -> None:
    found = cross_package_private_imports(PACKAGE_ROOT)
    assert found == [], "import these through the owning package's public API (add them to its __all__):\n" + \
        "\n".join(f"{m}:{line} imports {t}{'.' + n if n else ''}" for m, line, t, n in found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "commsim"
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    for folder in {p.parent for p in root.rglob("*.py")} | {root}:
        (folder / "__init__.py").touch()
    return root


@pytest.mark.parametrize(("source", "target", "name"), [
    ("from commsim.kernel.fluid import _LateEvent\n", "commsim.kernel.fluid", "_LateEvent"),
    ("from commsim.collectives._executor import CollectiveRun\n", "commsim.collectives._executor", "CollectiveRun"),
    ("def f():\n    import commsim.collectives._schedule\n", "commsim.collectives._schedule", None),
    ("from ..collectives._registry import ALGORITHMS\n", "commsim.collectives._registry", "ALGORITHMS"),
    ("from commsim import collectives as c\nWHERE = {'x': 'commsim.collectives._schedule'}\n",
     "commsim.collectives._schedule", None),
    ("STUDY = 'commsim.collectives.ring:_hidden'\n", "commsim.collectives.ring", "_hidden"),
])
def test_the_scan_finds_each_form_of_private_import(tmp_path: Path, source: str, target: str, name: str | None) -> None:
    root = _tree(tmp_path, {"workloads/replay.py": source, "kernel/fluid.py": "", "collectives/_executor.py": "",
                            "collectives/_registry.py": "", "collectives/_schedule.py": "",
                            "collectives/ring.py": ""})
    found = cross_package_private_imports(root)
    assert [(m, t, n) for m, _, t, n in found] == [("commsim.workloads.replay", target, name)]


@pytest.mark.parametrize("source", [
    "from commsim.workloads._index import TraceIndex\n",  # a private module of its own package's parent
    "from commsim.workloads.replay.plan import _Plan\n",  # a private name of a module in its own package
    "from ._index import TraceIndex\n",
    "from commsim.collectives import CollectiveRun, tile\n",  # the public API
    "from commsim.kernel.fluid import __doc__\n",  # dunders are not private
])
def test_the_scan_allows_a_package_its_own_private_names(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, {"workloads/replay/engine.py": source, "workloads/replay/plan.py": "",
                            "workloads/_index.py": "", "kernel/fluid.py": ""})
    assert cross_package_private_imports(root) == []
