"""benchmarks/bench_peers.py's own logic: which peers run or are skipped, the best of each figure,
and the ratios it prints. No peer is needed: every figure here is made up."""

from __future__ import annotations

import pathlib
import sys

import click
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_peers  # noqa: E402
from bench_peers import Measured, goal_line, select_peers, table_rows, tool_for  # noqa: E402


def test_select_peers_keeps_the_tables_order_and_always_imgshard():
    assert select_peers("streaming, tf-cache") == ("imgshard", "tf-cache", "streaming")
    assert select_peers("") == ("imgshard",)


def test_select_peers_names_an_unknown_peer():
    with pytest.raises(click.BadParameter, match="unknown peer webdataset; choose from imgshard"):
        select_peers("litdata,webdataset")


def test_measured_best_is_the_fastest_rate_or_the_smallest_size():
    assert Measured((100.0, 300.0, 200.0)).best == 300.0
    assert Measured((100.0, 300.0), higher=False).best == 100.0
    assert Measured((1500.0, 2500.0)).spread() == "1,500-2,500"
    assert Measured((451.6,)).spread() == "452"


def figures(imgshard_float32: float) -> dict[str, dict[str, Measured]]:
    rates = {row: Measured((1000.0,)) for row in bench_peers.ROWS}
    sizes = {row: Measured((400.0,), higher=False) for row in bench_peers.ROWS if "MB" in row}
    own = {**rates, **sizes, "epoch, float32 batches (img/s)": Measured((imgshard_float32,))}
    return {"imgshard": own, "tf-cache": {**rates, **sizes,
                                          "bytes on disk (MB)": Measured((800.0,), False)}}


def test_table_rows_give_imgshard_over_the_peer():
    rows = {row[0]: row for row in table_rows(figures(2500.0))}
    assert rows["figure"] == ("figure", "imgshard [spread]", "tf-cache [spread] ratio")
    assert rows["epoch, float32 batches (img/s)"][1:] == ("2,500 [2,500]", "1,000 [1,000] 2.50x")
    assert rows["bytes on disk (MB)"][2] == "800 [800] 0.50x"


def test_goal_line_says_whether_the_float32_goal_is_met():
    assert goal_line(figures(1200.0)).endswith("1.20x (goal >= 1.2x: met)")
    assert goal_line(figures(1100.0)).endswith("1.10x (goal >= 1.2x: NOT met)")
    assert goal_line({"imgshard": figures(1.0)["imgshard"]}) is None


def test_a_peer_that_does_not_import_is_skipped_in_one_line(tmp_path, monkeypatch):
    missing = str(tmp_path / "no-venv" / "python")
    assert tool_for("litdata", missing, str(tmp_path)) == (
        f"litdata: skipped (litdata does not import with {missing}; see --peers-python)")
    monkeypatch.setattr(bench_peers.importlib.util, "find_spec", lambda name: None)
    assert tool_for("tfrecord", missing, str(tmp_path)).startswith(
        "tfrecord: skipped (TensorFlow is not installed here")
    assert tool_for("imgshard", missing, str(tmp_path)).name == "imgshard"


def test_the_torchvision_stand_in_holds_what_streaming_imports(tmp_path):
    folder = bench_peers.torchvision_stand_in(str(tmp_path))
    package = pathlib.Path(folder) / "torchvision"
    assert "class VisionDataset" in (package / "datasets" / "__init__.py").read_text()
    assert "def to_tensor" in (package / "transforms" / "functional.py").read_text()
