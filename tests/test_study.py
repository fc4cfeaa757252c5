"""The quickstart study end to end, with a tiny budget, and the study file's error messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml

from auxsearch import study as study_mod
from auxsearch.cli import main
from auxsearch.config import PruningConfig
from auxsearch.graph import load_design
from auxsearch.report import pareto_front
from auxsearch.training import TrainResult

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"


def write_study(tmp_path: Path, **overrides) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw.update(search_space=str(SPACE), output=str(tmp_path / "run"), n_trials=3,
               train={**raw["train"], "epochs": 1}, data={**raw["data"], "image_size": 8})
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
    path = write_study(tmp)
    assert main(["run", str(path), "--no-progress"]) == 0
    return path, tmp / "run"


def test_run_writes_every_output_with_content(quick_run):
    _, run = quick_run
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len(rows) == 3 and rows[0]["is_e2e"] == "True" and rows[0]["K"] == "1"
    assert all(r["design_hash"] for r in rows)
    pareto = yaml.safe_load((run / "pareto.yaml").read_text())
    assert pareto["e2e_reference"]["K"] == 1 and pareto["e2e_reference"]["ratio_to_e2e_memory"] == 1.0
    front = pareto["front"]
    assert front
    for a in front:
        assert not any(_dominated(a, b) for b in front if b is not a)
        assert (run / "designs" / f"trial-{a['trial']}.yaml").is_file()
    all_done = [{"score": float(r["score"]), "peak_memory_bytes": int(r["peak_memory_bytes"])}
                for r in rows if r["state"] == "COMPLETE"]
    for a in front:  # non-dominated among *all* completed trials, not just among itself
        assert not any(_dominated(a, b) for b in all_done)
    html = (run / "report.html").read_text()
    assert "E2E" in html and "Hypervolume" in html.replace("hypervolume", "Hypervolume")


def test_show_json_matches_the_front_and_export_trains(quick_run, tmp_path, capsys):
    _, run = quick_run
    capsys.readouterr()
    assert main(["show", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    pareto = yaml.safe_load((run / "pareto.yaml").read_text())
    assert [r["number"] for r in shown["front"]] == [e["trial"] for e in pareto["front"]]
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
    path = write_study(tmp_path, memory={"mode": "measured", "budget": "1KiB"}, n_trials=2,
                       enqueue=["man_k4", "man_k4"])
    run = study_mod.prepare(path)
    st = study_mod.open_study(run)
    study_mod.optimize(run, st, 3, None, progress=False)
    recs = study_mod.records(st)
    assert [r["state"] for r in recs] == ["INFEASIBLE"] * 3
    assert all(r["seconds"] is None and r["peak_memory_bytes"] > 1024 for r in recs)
    assert recs[2]["reused_from"] == 1 and recs[2]["design_hash"] == recs[1]["design_hash"]
    assert pareto_front(recs) == []


def test_dominated_curves_are_stopped():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 1000.0], user_attrs={"history": [0.5, 0.8, 0.9]}))
    run = type("R", (), {"cfg": type("C", (), {"pruning": PruningConfig(warmup_epochs=1, margin=0.05)})()})()
    trial = study.ask()
    on_epoch = study_mod.Objective(run)._pruner(trial, None)
    res = TrainResult("accuracy", 0, 1000, "measured", 0, 0, "h", "cpu")
    res.history = [0.1]
    assert not on_epoch(res)  # warm-up epoch
    res.history = [0.1, 0.4]
    assert on_epoch(res)  # 0.4 + 0.05 <= 0.8 at epoch 2 with no more memory
    assert "dominated by trials [0]" in trial.user_attrs["reason"]
    res.peak_memory_bytes = 500  # a design that uses far less memory is not compared with it
    assert not on_epoch(res)


@pytest.mark.parametrize("change, words", [
    ({"n_trails": 3}, "n_trails: unknown key"),
    ({"n_trials": "many"}, "n_trials: must be of type int"),
    ({"n_trials": 0}, "n_trials: must be >= 1"),
    ({"sampler": {"name": "bayes"}}, "sampler.name: must be one of tpe, nsga2, random, gp, grid"),
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
    ({"sampler": {"name": "grid"}}, "search_space.splits: the grid sampler needs splits: balanced"),
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


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp", "grid"])
def test_every_sampler_runs(tmp_path, sampler):
    space = {"modules": [1, 2, 3], "splits": "balanced", "families": ["dgl", "momentum"], "depth": 1,
             "width": [8, 16], "momentum": 0.99, "learnable_scale": [True, False], "head": "dgl", "pool": 4}
    path = write_study(tmp_path, sampler={"name": sampler, "seed": 1, "n_startup_trials": 1, "population_size": 2},
                       search_space=space, n_trials=3, enqueue=[], pruning={"enabled": False})
    run = study_mod.prepare(path)
    st = study_mod.open_study(run)
    study_mod.optimize(run, st, 3, None, progress=False)
    recs = study_mod.records(st)
    assert len([r for r in recs if r["state"] == "COMPLETE"]) == 3 and recs[0]["is_e2e"]


def test_sequential_search_is_reproducible(tmp_path):
    params = []
    for name in ("a", "b"):
        path = write_study(tmp_path / name, n_trials=4, enqueue=[], output=str(tmp_path / name / "run"))
        run = study_mod.prepare(path)
        st = study_mod.open_study(run)
        study_mod.optimize(run, st, 4, None, progress=False)
        params.append([(r["params"], r["score"]) for r in study_mod.records(st)])
    assert params[0] == params[1]


def test_export_of_a_dominated_trial_needs_a_flag(quick_run, tmp_path):
    from auxsearch.errors import ConfigError
    from auxsearch.export import choose

    def rec(number, score, peak):
        return {"number": number, "state": "COMPLETE", "score": score, "peak_memory_bytes": peak,
                "design": {"splits": []}, "is_e2e": number == 0}

    records = [rec(0, 0.95, 100), rec(1, 0.90, 50), rec(2, 0.85, 80)]  # trial 2 is dominated by trial 1
    with pytest.raises(ConfigError, match="not on the Pareto front"):
        choose(records, trial=2)
    assert choose(records, trial=2, allow_dominated=True)["number"] == 2
    assert choose(records, trial=1)["number"] == 1
    _, run = quick_run  # and the flag reaches export through the command line
    front = yaml.safe_load((run / "pareto.yaml").read_text())["front"]
    out = tmp_path / "d.yaml"
    assert main(["export", str(run), "--trial", str(front[0]["trial"]), "--allow-dominated", "-o", str(out)]) == 0


def test_export_with_no_completed_trial_says_so(tmp_path, capsys):
    path = write_study(tmp_path, memory={"mode": "measured", "budget": "1KiB"}, n_trials=1, enqueue=[])
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "no completed trial" in capsys.readouterr().err
