"""The README's "Calibrate on your cluster" walk-through runs as written (from the repository root), with the written
files sent to a temporary folder, and prints what the README says it prints."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
from nccl_data import CLUSTERS, REPO
from typer.testing import CliRunner

from commsim.cli import app
from commsim.collectives.calibrate import load_calibration

runner = CliRunner()


def _walkthrough_commands() -> list[list[str]]:
    """The ``commsim`` commands of the README section, continuation lines joined, split like a shell."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Calibrate on your cluster", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            if words and words[0] == "commsim":
                commands.append(words[1:])
    return commands


def _redirect(words: list[str], folder: Path) -> list[str]:
    """The command as a shell in the repository root runs it (globs expanded, sorted), with its written files
    (``-o``, ``--csv``) moved to ``folder``: the shipped calibration stays."""
    out = []
    for word in words:
        out += sorted(glob.glob(word, root_dir=REPO)) if "*" in word else [word]
    for i, word in enumerate(out[:-1]):
        if word in ("-o", "--output", "--csv"):
            out[i + 1] = str(folder / Path(out[i + 1]).name)
    return out


def test_walkthrough_has_the_three_commands() -> None:
    commands = _walkthrough_commands()
    assert [c[:2] for c in commands] == [["calibrate", "nccl-tests"], ["collective", "-t"], ["collective", "-t"]]


def test_walkthrough_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CLUSTERS["h100_cluster01"].logs()  # skips without the shared data
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("COLUMNS", "200")
    fit, compare, predict = (_redirect(c, tmp_path) for c in _walkthrough_commands())
    result = runner.invoke(app, fit)
    assert result.exit_code == 0, result.output
    # the README: 8 parameters, a leave-one-scale-out check of the 10x2 logs
    assert "8 parameters fitted to 20 logs" in " ".join(result.output.split())
    assert "leave-one-scale-out" in result.output
    written = load_calibration(tmp_path / "h100_cluster01.calibration.yaml")
    assert written.p2p_channel_bandwidth == pytest.approx(21.5e9, rel=0.01)
    result = runner.invoke(app, compare)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp.csv").is_file() and "median |error|" in result.output
    result = runner.invoke(app, predict)
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.output.splitlines() if line.strip().startswith("1073741824"))
    assert row[2] == "nvls_tree/Simple" and float(row[5]) == pytest.approx(406, abs=2)  # the README's busbw
