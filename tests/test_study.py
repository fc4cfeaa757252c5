"""The quickstart study end to end, with a tiny budget, and the study file's error messages."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import optuna
import pytest
import yaml

from auxsearch.cli import main
from auxsearch.config import MemoryConfig, PruningConfig
from auxsearch.design.graph import load_design
from auxsearch.pareto import pareto_front
from auxsearch.search import prepare as study_mod
from auxsearch.search.loop import optimize
from auxsearch.search.objective import Objective
from auxsearch.search.studies import open_search
from auxsearch.store.records import records
from auxsearch.store.storage import RunStudies
from auxsearch.train.result import TrainResult

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"


def write_study(tmp_path: Path, **overrides) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw.update(search_space=str(SPACE), output=str(tmp_path / "run"), n_trials=3,
               train={**raw["train"], "epochs": 1}, data={**raw["data"], "image_size": 8}, confirm={"seeds": 0})
    raw.update(overrides)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _dominated(a: dict, b: dict) -> bool:
    """b dominates a."""
    return (b["score"] >= a["score"] and b["peak_memory_bytes"] <= a["peak_memory_bytes"]
            and (b["score"] > a["score"] or b["peak_memory_bytes"] < a["peak_memory_bytes"]))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    path = write_study(tmp, confirm={"seeds": 2})
    assert main(["run", str(path), "--no-progress"]) == 0
    return path, tmp / "run"


def test_run_writes_every_output_with_content(quick_run):
    _, run = quick_run
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len(rows) == 3 and rows[0]["is_e2e"] == "True" and rows[0]["K"] == "1"
    assert all(r["design_hash"] for r in rows)
    pareto = yaml.safe_load((run / "pareto.yaml").read_text())
    assert pareto["e2e_reference"]["K"] == 1 and pareto["e2e_reference"]["ratio_to_e2e_memory"] == 1.0
    assert pareto["front_kind"] == "confirmed"
    front = pareto["front"]
    assert front and all(len(a["confirmed"]["seeds"]) == 2 for a in front)
    for a in front:
        assert (run / "designs" / f"trial-{a['trial']}.yaml").is_file()
    confirmed = {r["trial"]: r for r in rows if r["confirm_seeds"]}
    assert "e2e" in confirmed  # the E2E reference is confirmed beside the front
    for a in front:  # no design clearly dominates a front design: mean +- std intervals of validation
        for b in confirmed.values():
            beats = (float(b["val_mean"]) - float(b["val_std"]) > a["confirmed"]["val_mean"] + a["confirmed"]["val_std"])
            assert not (beats and int(b["peak_memory_bytes"]) <= a["peak_memory_bytes"]), (a, b)
    html = (run / "report.html").read_text()
    assert "Confirmed designs" in html and "+- " in html  # the confirmed table with its spreads
    assert f"trial {front[0]['trial']}" in html


def test_show_json_matches_the_front_and_export_trains(quick_run, tmp_path, capsys):
    _, run = quick_run
    capsys.readouterr()
    assert main(["show", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    pareto = yaml.safe_load((run / "pareto.yaml").read_text())
    assert [r["trial"] for r in shown["front"]] == [e["trial"] for e in pareto["front"]]
    assert shown["e2e_reference"]["is_e2e"]
    out = tmp_path / "best.yaml"
    assert main(["export", str(run), "--best-score", "-o", str(out)]) == 0
    design = load_design(out)
    assert design.graph["train"]["epochs"] == 1 and design.graph["data"]["name"] == "digits"
    capsys.readouterr()
    assert main(["train", str(out), "--epochs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] > 0.0


def test_rerun_resumes_and_a_finished_study_says_so(quick_run, capsys):
    path, run = quick_run
    capsys.readouterr()
    assert main(["run", str(path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "already finished 3 trials" in captured.err
    assert "E2E reference" in captured.out
    assert main(["run", str(path), "--no-progress", "--n-trials", "4"]) == 0
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED", "INFEASIBLE")]) == 4


def test_export_refuses_what_does_not_exist(quick_run, tmp_path, capsys):
    _, run = quick_run
    assert main(["export", str(run), "--trial", "99", "-o", str(tmp_path / "x.yaml")]) == 2
    assert "--trial" in capsys.readouterr().err
    assert main(["export", str(run), "--max-memory", "1KiB", "-o", str(tmp_path / "x.yaml")]) == 2
    assert "--max-memory" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "not an auxsearch run folder" in capsys.readouterr().err


def test_budget_rejects_designs_before_training_and_duplicates_are_reused(tmp_path):
    path = write_study(tmp_path, memory={"mode": "measured", "budget": "1KiB"}, n_trials=3,
                       enqueue=["man_k4", "man_k4"], objectives=["score", "memory", "seconds", "params"])
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 4, None, progress=False)
    recs = records(st)
    assert [r["state"] for r in recs] == ["COMPLETE", "INFEASIBLE", "INFEASIBLE", "INFEASIBLE"]
    assert recs[0]["is_e2e"] and recs[0]["over_budget"] and recs[0]["score"] > 0.1  # trained, marked
    assert all(r["seconds"] is None and r["peak_memory_bytes"] > 1024 for r in recs[1:])
    assert recs[2]["reused_from"] == "man_k4" and recs[2]["design_hash"] == recs[1]["design_hash"]
    assert [r["trial"] for r in recs[:3]] == ["e2e", "man_k4", "man_k4#2"]
    assert [r["trial"] for r in pareto_front(recs)] == ["e2e"]
    frozen = st.all_trials()[1]
    assert frozen.values[0] == -math.inf and frozen.constraints["memory_budget"] > 0  # worst, constrained out


def _pruner(mode: str = "measured", **pruning):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 1000.0], user_attrs={"history": [0.5, 0.8, 0.9]}))
    cfg = type("C", (), {"pruning": PruningConfig(**{"warmup_epochs": 1, "margin": 0.05, **pruning}),
                         "memory": MemoryConfig(mode=mode)})()
    trial = study.ask()
    return trial, Objective(type("P", (), {"cfg": cfg})(), RunStudies("", None, study, None, None))._pruner(trial)


def test_dominated_curves_are_stopped():
    trial, on_epoch = _pruner()
    res = TrainResult("accuracy", 0, 1000, "measured", 0, 0, "h", "cpu")
    res.history = [0.1]
    assert not on_epoch(res)  # warm-up epoch
    res.history = [0.1, 0.4]
    assert on_epoch(res)  # 0.4 + 0.05 <= 0.8 at epoch 2 with no more memory
    assert "dominated by trials 0 (" in trial.user_attrs["reason"] and "no more memory" in trial.user_attrs["reason"]
    res.peak_memory_bytes = 999  # one byte less than the rival: not dominated (default tolerance 0)
    assert not on_epoch(res)
    res.peak_memory_bytes, res.history = 1000, [0.1, 0.76]  # better than 0.8 - margin at the same epoch
    assert not on_epoch(res)
    res.history = [0.1, 0.4, 0.86]  # epoch 3 is compared with the rival's epoch 3 (0.9), not its final score
    assert not on_epoch(res)


def test_pruning_compares_memory_in_one_unit():
    """Simulated mode compares the trial's simulated peak with rivals' simulated values, not its measured step."""
    trial, on_epoch = _pruner("simulated")
    trial.set_user_attr("simulated_peak_bytes", 1500)
    res = TrainResult("accuracy", 0, 10, "measured", 0, 0, "h", "cpu")  # measured 10 B: would see no rival
    res.history = [0.1, 0.4]
    assert on_epoch(res)
    trial2, on_epoch2 = _pruner("simulated")
    trial2.set_user_attr("simulated_peak_bytes", 900)
    res.peak_memory_bytes = 5000  # measured is large, simulated is below the rival: kept
    assert not on_epoch2(res)


@pytest.mark.parametrize("rival_bytes, pruned, isolation", [
    (1, True, "inprocess"), (1, True, "subprocess"),
    pytest.param(10**15, False, "inprocess", marks=pytest.mark.slow)])  # the no-stop boundary: test_rules, fast
def test_a_real_trial_is_pruned_only_by_a_rival_with_no_more_memory(tmp_path, rival_bytes, pruned, isolation):
    """A completed rival with a perfect validation curve stops a real trial at epoch 2 if it needs no more memory,
    whether the trial trains in the study's process or in a child process of its own."""
    path = write_study(tmp_path, enqueue=[], n_trials=2, train={"epochs": 3, "batch_size": 64, "lr": 0.05},
                       pruning={"enabled": True, "warmup_epochs": 1, "margin": 0.0},  # the rival's 1.0 beats any score
                       isolation=isolation)
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 1, None, progress=False)  # the E2E reference
    st.search.add_trial(optuna.trial.create_trial(values=[1.0, float(rival_bytes)], user_attrs={"history": [1.0, 1.0, 1.0]},
                                           params={}, distributions={}))
    optimize(run, st, 3, None, progress=False)
    trial = records(st)[2]
    assert trial["state"] == ("PRUNED" if pruned else "COMPLETE"), trial["reason"]
    if pruned:
        rivals = re.search(r"dominated by trials ([\w#, ]+) \(", trial["reason"])  # the added rival is search trial 0
        assert len(trial["history"]) == 2 and rivals and "0" in rivals.group(1).split(", "), trial["reason"]
        assert st.all_trials()[2].user_attrs["isolated"] is (isolation == "subprocess")


@pytest.mark.parametrize("change, words", [
    ({"n_trails": 3}, "n_trails: unknown key"),
    ({"n_trials": "many"}, "n_trials: must be of type int"),
    ({"n_trials": 0}, "n_trials: must be >= 1"),
    ({"sampler": {"name": "bayes"}}, "sampler.name: must be one of auto, ehvi, tpe, nsga2, random, gp, grid"),
    ({"train": {"epochs": -1}}, "train.epochs: must be >= 1"),
    ({"train": {"optimizer": "lion"}}, "train.optimizer: must be one of sgd, adamw"),
    ({"memory": {"mode": "guess"}}, "memory.mode: must be one of measured, simulated"),
    ({"memory": {"budget": "lots"}}, "memory.budget: must be a size like 2MiB"),
    ({"search_space": "nowhere.yaml"}, "search_space: search-space file not found"),
    ({"search_space": {"momentum": {"low": 0.9, "high": 1.2}}}, "search_space.momentum.high: must be < 1"),
    ({"search_space": {"modules": {"low": 2, "high": 40}}}, "search_space.modules: K = 40 is larger"),
    ({"backbone": {"name": "resnet21"}}, "backbone.name: unknown backbone 'resnet21'"),
    ({"data": {"name": "mnist"}}, "data.name: unknown"),
    ({"enqueue": ["man_k5"]}, "enqueue.0: neither a published design"),
    ({"objectives": ["memory", "score"]}, "objectives: must start with score, memory"),
    ({"sampler": {"name": "grid"}, "search_space": {"splits": "free"}},
     "search_space.splits: the grid sampler needs splits: balanced"),
    ({"sampler": {"name": "grid"}}, "search_space.skew: the grid sampler needs choices or integer ranges"),
])
def test_bad_study_files_exit_2_naming_the_key(tmp_path, capsys, change, words):
    path = write_study(tmp_path, **change)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntrain: {epochs: 2\n")
    assert main(["validate", str(path)]) == 2
    assert "line" in capsys.readouterr().err


def test_validate_accepts_every_shipped_study(capsys):
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        study_mod.load_study_config(path)  # parses; data for GPU studies may be absent here
    assert main(["validate", str(ROOT / "studies" / "quickstart.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp", "grid", "ehvi"])
def test_every_sampler_runs(tmp_path, sampler):
    space = {"modules": [1, 2, 3], "splits": "balanced", "families": ["dgl", "momentum"], "depth": 1,
             "width": [8, 16], "momentum": 0.99, "learnable_scale": [True, False], "head": "dgl", "pool": 4}
    path = write_study(tmp_path, sampler={"name": sampler, "seed": 1, "n_startup_trials": 1, "population_size": 2},
                       search_space=space, n_trials=3, enqueue=[], pruning={"enabled": False})
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 3, None, progress=False)
    recs = records(st)
    assert len([r for r in recs if r["state"] == "COMPLETE"]) == 3 and recs[0]["is_e2e"]


@pytest.mark.slow  # 16 s; seeded search sequences pinned in CI: test_pinned_search.py
def test_sequential_search_is_reproducible(tmp_path):
    params = []
    for name in ("a", "b"):
        path = write_study(tmp_path / name, n_trials=4, enqueue=[], output=str(tmp_path / name / "run"))
        run = study_mod.prepare(path)
        st = open_search(run)
        optimize(run, st, 4, None, progress=False)
        params.append([(r["params"], r["score"]) for r in records(st)])
    assert params[0] == params[1]


def test_export_of_a_dominated_trial_needs_a_flag(quick_run, tmp_path):
    from auxsearch.errors import ConfigError
    from auxsearch.outputs.export import choose

    def rec(number, score, peak):
        return {"number": number, "trial": str(number), "state": "COMPLETE", "score": score, "peak_memory_bytes": peak,
                "design": {"splits": []}, "is_e2e": number == 0, "design_hash": f"h{number}"}

    records = [rec(0, 0.95, 100), rec(1, 0.90, 50), rec(2, 0.85, 80)]  # trial 2 is dominated by trial 1
    with pytest.raises(ConfigError, match="trial 2 is dominated by trial 1; the search front holds trials 1, 0"):
        choose(records, trial=2)
    assert choose(records, trial=2, allow_dominated=True)["number"] == 2
    assert choose(records, trial=1)["number"] == 1
    _, run = quick_run  # and the flag reaches export through the command line
    front = yaml.safe_load((run / "pareto.yaml").read_text())["front"]
    out = tmp_path / "d.yaml"
    assert main(["export", str(run), "--trial", str(front[0]["trial"]), "--allow-dominated", "-o", str(out)]) == 0


def test_export_with_no_completed_trial_says_so(tmp_path, capsys):
    """A run whose only trial diverged (NaN: pruned) has nothing to export."""
    path = write_study(tmp_path, n_trials=1, enqueue=[], train={"epochs": 1, "batch_size": 64, "lr": 1e9})
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "no completed trial" in capsys.readouterr().err
