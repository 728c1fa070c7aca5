"""The README's Python example runs as written (docs that match the code)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no Python example under '### Python'"
    return match.group(1)


def test_readme_python_example_runs_as_a_saved_script(tmp_path: Path) -> None:
    # as a user would: saved to a file and run with python (the sweep's spawned workers import it again)
    for folder in ("scenarios", "topologies", "workloads"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    script = tmp_path / "example.py"
    script.write_text(_python_example(), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "my_dashboard.html").stat().st_size > 1000
    assert (tmp_path / "what_if.html").stat().st_size > 1000


def test_the_example_guards_the_sweep_for_spawned_workers() -> None:
    assert 'if __name__ == "__main__":' in _python_example()
