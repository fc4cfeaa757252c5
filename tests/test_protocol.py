"""The evaluation protocol: the search never reads test, confirmation reads it once, spreads decide dominance."""

from __future__ import annotations

import json

import pytest
import torch
from test_study import write_study
from torch.utils.data import TensorDataset

from auxsearch.cli import main
from auxsearch.commands import run_study
from auxsearch.outputs.export import choose
from auxsearch.pareto import clearly_dominates, confirmed_front, knee, stat
from auxsearch.search import prepare as study_mod
from auxsearch.store.records import load_records
from auxsearch.tasks import get_task


def _permute_test_labels(monkeypatch):
    task = type(get_task("classification"))
    original = task.load_data

    def load(self, cfg, key="data"):
        data = original(self, cfg, key)
        images, labels = data.test.tensors
        g = torch.Generator().manual_seed(123)
        shuffled = labels[torch.randperm(len(labels), generator=g)]
        assert (shuffled != labels).any()
        return type(data)(**{**data.__dict__, "test": TensorDataset(images, shuffled)})

    monkeypatch.setattr(task, "load_data", load)


def _search(tmp_path, name):
    path = write_study(tmp_path / name, n_trials=3, enqueue=["man_k4"], output=str(tmp_path / name / "run"),
                       train={"epochs": 2, "batch_size": 64, "lr": 0.05, "seed": 0},
                       pruning={"enabled": True, "warmup_epochs": 1, "margin": 0.0}, confirm={"seeds": 1})
    run = study_mod.prepare(path)
    run_study(run, progress=False)
    recs = load_records(run.storage_url, run.cfg.name)
    return recs


def test_permuting_test_labels_changes_nothing_the_search_sees(tmp_path, monkeypatch):
    plain = _search(tmp_path, "plain")
    _permute_test_labels(monkeypatch)
    permuted = _search(tmp_path, "permuted")
    see = [(r["params"], r["design_hash"], r["state"], r["score"], r["history"]) for r in plain]
    assert see == [(r["params"], r["design_hash"], r["state"], r["score"], r["history"]) for r in permuted]
    conf = {r["design_hash"]: r["confirmed"] for r in plain if r["confirmed"]}
    conf_p = {r["design_hash"]: r["confirmed"] for r in permuted if r["confirmed"]}
    assert conf.keys() == conf_p.keys() and conf
    for h in conf:  # confirmation: same validation, and test is read there (permuted labels score lower)
        assert conf[h]["val"] == conf_p[h]["val"]
        assert conf_p[h]["test"]["mean"] < conf[h]["test"]["mean"]


def _rec(n, peak, vals, tests=None, e2e=False):
    tests = tests or vals
    return {"number": n, "trial": str(n), "state": "COMPLETE", "score": vals[0], "peak_memory_bytes": peak, "design_hash": f"h{n}",
            "design": {"splits": []}, "is_e2e": e2e, "K": 1 if e2e else 2,
            "confirmed": {"seeds": list(range(len(vals))), "val": stat(vals), "test": stat(tests),
                          "peak_memory_bytes": peak, "test_scores": {}}}


def test_a_gap_inside_the_spread_dominates_nothing():
    a = _rec(1, 100, [0.90, 0.94, 0.92])  # 0.92 +- 0.02
    b = _rec(2, 100, [0.93, 0.95, 0.94])  # 0.94 +- 0.01: higher mean, overlapping intervals
    c = _rec(3, 100, [0.97, 0.97, 0.98])  # clearly above a
    assert not clearly_dominates(b, a) and clearly_dominates(c, a)
    assert clearly_dominates(c, b)  # 0.9733 - 0.0058 = 0.9676 > 0.94 + 0.01 = 0.95
    assert sorted(r["number"] for r in confirmed_front([a, b])) == [1, 2]  # both kept: seeds cannot tell


def test_more_memory_never_dominates():
    lean = _rec(1, 50, [0.80, 0.80, 0.81])
    fat = _rec(2, 100, [0.99, 0.99, 0.99])
    assert not clearly_dominates(fat, lean) and [r["number"] for r in confirmed_front([lean, fat])] == [1, 2]


def test_export_chooses_on_validation_means_not_test():
    # trial 1 has the better validation mean, trial 2 the better test mean: export must pick 1.
    r1 = _rec(1, 80, [0.95, 0.96, 0.95], tests=[0.80, 0.81, 0.80])
    r2 = _rec(2, 80, [0.90, 0.91, 0.90], tests=[0.99, 0.99, 0.98])
    e2e = _rec(0, 100, [0.94, 0.95, 0.94], e2e=True)
    assert choose([e2e, r1, r2])["number"] == 1
    assert choose([e2e, r1, r2], max_memory=90)["number"] == 1
    assert knee(confirmed_front([e2e, r1, r2]))["number"] in (0, 1)


def test_stat_is_mean_and_sample_std():
    s = stat([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and stat([5.0])["std"] == 0.0


def test_show_json_names_validation_and_test_keys(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=2, enqueue=[], confirm={"seeds": 2})
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["front_kind"] == "confirmed"
    for entry in shown["front"] + [shown["e2e_reference"]]:
        assert isinstance(entry["val_score"], float)
        c = entry["confirmed"]
        assert len(c["seeds"]) == 2 and set(c) >= {"val_mean", "val_std", "test_mean", "test_std"}
        assert len(c["test_values"]) == 2 and c["test_std"] >= 0
    # extending to three seeds trains only the new seed of each confirmed design
    n_designs = len({e["design_hash"] for e in shown["front"] + [shown["e2e_reference"]]})
    assert main(["confirm", str(tmp_path / "run"), "--seeds", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{n_designs} retrainings ran" in out
    assert main(["confirm", str(tmp_path / "run"), "--seeds", "3", "--no-progress"]) == 0
    assert "0 retrainings ran" in capsys.readouterr().out  # resumable: nothing left to do
