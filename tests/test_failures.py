"""Out of memory, NaN losses, errors and hard crashes: recorded with the right state, the study goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from auxsearch.design.graph import save_design
from auxsearch.search import prepare as study_mod
from auxsearch.search.loop import optimize
from auxsearch.search.studies import open_search
from auxsearch.store.records import records

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def fault_study(tmp_path: Path, mode: str, n_trials: int, **extra) -> Path:
    backbone = {"python": "faulty_backbone:units", "args": {"mode": mode}}
    split = {"backbone": backbone, "input_shape": [1, 8, 8], "num_classes": 10, "num_units": 4,
             "splits": [2], "aux": [{"family": "dgl", "depth": 1, "width": 8}]}
    save_design(split, tmp_path / "split_at_2.yaml")
    raw = {"name": f"fault-{mode}", "data": {"name": "digits", "image_size": 8}, "backbone": backbone,
           "search_space": {"modules": 2, "splits": "balanced", "families": ["dgl"], "depth": 1, "width": 8},
           "train": {"epochs": 1, "batch_size": 128, "lr": 0.05}, "n_trials": n_trials,
           "output": str(tmp_path / "run"), "enqueue": ["split_at_2.yaml"], "pruning": {"enabled": False}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_study(path: Path) -> list[dict]:
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, run.cfg.n_trials, None, progress=False)
    return records(st)


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # the hook imports faulty_backbone (spawned children inherit sys.path)


@pytest.mark.parametrize("isolation", ["inprocess", "subprocess"])
def test_out_of_memory_is_infeasible_with_the_memory_reached(tmp_path, isolation):
    recs = run_study(fault_study(tmp_path, "oom", 2, isolation=isolation))
    e2e, split = recs[0], recs[1]
    assert e2e["is_e2e"] and e2e["state"] == "INFEASIBLE"
    assert "out of memory" in e2e["reason"] and "can't allocate memory" in e2e["reason"]
    assert e2e["peak_memory_bytes"] > 0  # the simulated peak of the step that did not fit
    assert split["state"] == "COMPLETE" and split["score"] > 0


def test_nan_loss_is_pruned_with_the_reason(tmp_path):
    recs = run_study(fault_study(tmp_path, "nan", 2))
    assert recs[0]["state"] == "PRUNED" and "non-finite loss" in recs[0]["reason"]
    assert recs[1]["state"] == "COMPLETE"


def test_an_error_fails_the_trial_with_its_traceback_and_the_study_goes_on(tmp_path):
    path = fault_study(tmp_path, "error", 1)
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 1, None, progress=False)
    first = st.all_trials()[0]
    assert first.state.name == "FAIL"
    assert "ValueError: the faulty unit raised on purpose" in first.user_attrs["reason"]
    assert "faulty_backbone.py" in first.user_attrs["traceback"]
    assert st.all_trials()[1].state.name == "COMPLETE"


def test_a_hard_crash_kills_only_the_trial_process(tmp_path):
    path = fault_study(tmp_path, "kill", 1, isolation="subprocess")
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 1, None, progress=False)
    assert st.all_trials()[0].state.name == "FAIL"
    assert "process died" in st.all_trials()[0].user_attrs["reason"]
    assert st.all_trials()[1].state.name == "COMPLETE"


@pytest.mark.torchvision  # segmentation scenes
def test_an_isolated_trial_may_start_dataloader_workers(tmp_path, capsys):
    """A data set read item by item (segmentation scenes: a DataLoader, not tensors on the device) in an
    isolated trial with a loader worker: the trial process must be allowed children (it was daemonic, and
    every file-backed study failed every trial on CUDA, where trials are isolated by default)."""
    from auxsearch.cli import main

    raw = {"name": "isolated-loader", "task": {"name": "segmentation", "args": {"levels": 2, "decoder_channels": 8}},
           "data": {"name": "scenes", "image_size": 32, "num_train": 64, "num_test": 32, "seed": 0},
           "backbone": {"name": "resnet8"}, "isolation": "subprocess",
           "search_space": {"modules": 2, "splits": "balanced", "families": ["dgl"], "depth": 1, "width": 8},
           "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "optimizer": "adamw", "loader_workers": 1,
                     "bn_recalibration_batches": 1, "device": "cpu"},
           "sampler": {"name": "tpe"}, "n_trials": 2, "confirm": {"seeds": 0}, "output": str(tmp_path / "run")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--no-progress"]) == 0, capsys.readouterr().err
    recs = [r for r in records_of(tmp_path / "run")]
    assert [r["state"] for r in recs] == ["COMPLETE", "COMPLETE"], [r["reason"] for r in recs]


def records_of(run: Path) -> list[dict]:
    from auxsearch.outputs.runfolder import load_run

    return load_run(run)[1]
