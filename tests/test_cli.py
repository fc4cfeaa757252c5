from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from auxsearch.cli import main
from auxsearch.design.graph import load_design

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ROOT / "studies" / "designs"


@pytest.mark.parametrize("path", sorted(DESIGNS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_design_files_load_and_keep_their_hash(path):
    load_design(path)  # raises on a stale design_hash


def test_train_json_on_the_shipped_man_design(capsys, tmp_path):
    weights = tmp_path / "w.pt"
    assert main(["train", str(DESIGNS / "digits_man_k4.yaml"), "--epochs", "1", "--json",
                 "--save", str(weights)]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("metric", "score", "peak_memory_bytes", "memory_mode", "epochs", "seconds", "design_hash"):
        assert key in out
    assert out["metric"] == "accuracy" and out["epochs"] == 1 and out["memory_mode"] == "measured"
    assert 0.0 <= out["score"] <= 1.0 and out["peak_memory_bytes"] > 0
    state = torch.load(weights, weights_only=True)
    assert any(k.startswith("aux.0.ema") for k in state)


def test_memory_json_reports_peak_floor_and_e2e(capsys):
    assert main(["memory", str(DESIGNS / "digits_dgl_k4.yaml"), "--batch-size", "256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["floor_bytes"] <= out["peak_bytes"] < out["e2e_peak_bytes"]
    assert out["memory_mode"] == "simulated"
    assert main(["memory", str(DESIGNS / "digits_dgl_k4.yaml"), "--batch-size", "64", "--input-size", "32", "32",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 32, 32]


def test_draw_writes_html(tmp_path, capsys):
    out = tmp_path / "d.html"
    assert main(["draw", str(DESIGNS / "digits_man_k4.yaml"), "-o", str(out)]) == 0
    assert "plotly" in out.read_text()[:5000].lower()


@pytest.mark.parametrize("text, words", [
    ("backbone: {name: resnet8}\ninput_shape: [1, 16, 16]\nnum_classes: 10\nnum_units: 4\nsplits: [2]\n"
     "aux: [{family: momentum, momentum: 1.2}]\n", "aux.0.momentum: must satisfy 0 < m < 1, got 1.2"),
    ("backbone: {name: resnet9}\ninput_shape: [1, 16, 16]\nnum_classes: 10\nnum_units: 4\n", "backbone.name"),
    ("backbone: {name: resnet8}\ninput_shape: [1, 16, 16]\nnum_classes: 10\nnum_units: 4\n"
     "train: {epochz: 3}\n", "train.epochz: unknown key"),
    ("backbone: [\n", "line"),
])
def test_bad_design_files_exit_2_with_one_line_naming_the_key(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow  # ~1 min alone; exported scripts train in CI: test_the_exported_script_trains_checkpoints_and_resumes_after_a_kill
def test_the_docs_example_script_trains_an_exported_design(capsys):
    import runpy

    example = runpy.run_path(str(ROOT / "docs" / "examples" / "train_exported.py"))
    accuracy = example["main"]([str(DESIGNS / "digits_dgl_k4.yaml"), "--epochs", "4"])
    assert accuracy > 0.8
    assert "epoch 4: local losses" in capsys.readouterr().out
