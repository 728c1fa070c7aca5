"""``commsim compress`` end to end, and the docstring examples of the compression package."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from commsim.cli import app

runner = CliRunner()


class TestCommand:
    def test_table_and_csv(self, tmp_path: Path):
        csv = tmp_path / "out.csv"
        result = runner.invoke(
            app, ["compress", "-c", "none", "-c", "signsgd", "-c", "topk:ratio=0.01", "-s", "1000x8", "--csv", str(csv)]
        )
        assert result.exit_code == 0, result.output
        assert "signsgd" in result.output and "topk:ratio=0.01" in result.output and "8,000 elements" in result.output
        table = pd.read_csv(csv).set_index("compressor")
        assert table.loc["signsgd", "bytes_packed"] == 1000 and table.loc["signsgd", "ratio_packed"] == 32
        assert table.loc["none", "bytes_naive"] == 32_000
        assert table.loc["topk:ratio=0.01", "bytes_naive"] == 80 * 12

    def test_pt_file_source(self, tmp_path: Path):
        path = tmp_path / "grads.pt"
        torch.save({"a": torch.randn(64, 64), "b": torch.randn(10)}, path)
        result = runner.invoke(app, ["compress", "-c", "fp16", "-f", str(path)])
        assert result.exit_code == 0, result.output
        assert "2 tensors, 4,106 elements" in result.output

    def test_model_gradient_source(self):
        result = runner.invoke(app, ["compress", "-c", "powersgd:rank=2", "-m", "convnet"])
        assert result.exit_code == 0, result.output
        assert "convnet gradients" in result.output

    def test_default_source_is_resnet18(self):
        result = runner.invoke(app, ["compress", "-c", "powersgd:rank=1", "--kind", "weight"])
        assert result.exit_code == 0, result.output
        assert "11,173,962 elements" in result.output and "243.3" in result.output

    def test_list(self):
        result = runner.invoke(app, ["compress", "--list"])
        assert result.exit_code == 0 and "fedzip" in result.output and "ef=true" in result.output

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["-c", "topk:ratio=0"], "topk.ratio"),
            (["-c", "nope"], "not a known compressor"),
            (["-f", "/does/not/exist.pt"], "does not exist"),
            (["-s", "10x"], "positive integers"),
            (["-s", "0"], "positive"),
            (["-s", "10", "-m", "convnet"], "one source"),
            (["-m", "resnet"], "transformer or convnet"),
            (["--layers", "vgg"], "resnet18"),
        ],
    )
    def test_bad_input_exits_2_with_a_message(self, args, message):
        result = runner.invoke(app, ["compress", *args])
        assert result.exit_code == 2
        assert message in result.output and "Fix:" in result.output
        assert "Traceback" not in result.output
