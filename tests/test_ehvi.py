"""The ehvi sampler: memory known before training, the score modelled, the candidate with the largest
expected hypervolume improvement trained next; ``sampler: auto`` picks it where it applies."""

from __future__ import annotations

import random

import numpy as np
import optuna
import pytest
import torch
from test_study import write_study

from auxsearch.errors import ConfigError
from auxsearch.pareto import Normalised
from auxsearch.search import prepare as study_mod
from auxsearch.search.ehvi import (
    CandidateTrial,
    EHVISampler,
    encode,
    expected_improvement,
    improvement,
)
from auxsearch.search.loop import optimize
from auxsearch.search.samplers import sampler_name
from auxsearch.search.studies import open_search

FAMILIES = ("good", "poor")


def toy_design(trial) -> tuple[str, dict]:
    """K in 2..6 and a family: memory falls with K, the score depends on the family alone."""
    k = trial.suggest_int("K", 2, 6)
    fam = trial.suggest_categorical("family", list(FAMILIES))
    return f"{k}-{fam}", {"K": k, "family": fam}


def toy_memory(design: dict) -> float:
    return 100.0 - 10.0 * design["K"]


def toy_score(design: dict) -> float:
    return 0.9 if design["family"] == "good" else 0.5


def toy_sampler(**kw) -> EHVISampler:
    def design_of(t):
        return (t.user_attrs["design_hash"], t.user_attrs["design"]) if "design" in t.user_attrs else None

    return EHVISampler(toy_design, toy_memory, design_of, **kw)


def tell(study: optuna.Study, trial: optuna.Trial) -> dict:
    h, d = toy_design(trial)
    trial.set_user_attr("design_hash", h)
    trial.set_user_attr("design", d)
    study.tell(trial, [toy_score(d), toy_memory(d)])
    return d


def test_it_trains_the_lean_design_of_the_family_that_scores():
    """After one good and two poor heavy designs, the next is a good family design with the most
    modules (the leanest: known before training), not a poor one nor a heavy one."""
    sampler = toy_sampler(seed=0, n_startup_trials=0, candidates=64)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for params in ({"K": 2, "family": "good"}, {"K": 2, "family": "poor"}, {"K": 3, "family": "poor"}):
        study.enqueue_trial(params)
        tell(study, study.ask())
    chosen = tell(study, study.ask())
    assert chosen == {"K": 6, "family": "good"}
    assert tell(study, study.ask()) == {"K": 5, "family": "good"}  # the next leanest good one, never a repeat


def test_startup_trials_are_random_draws_and_no_design_repeats():
    sampler = toy_sampler(seed=3, n_startup_trials=20, candidates=8)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen = [tuple(tell(study, study.ask()).values()) for _ in range(10)]  # the whole space: 5 K x 2 families
    assert len(set(seen)) == 10
    assert seen != sorted(seen)


def test_trials_without_a_recorded_design_count_with_their_recorded_memory():
    """Trials told by hand (no design attribute) still form the front: their recorded memory stands in for
    the oracle's, so the choice is the same as when the designs are known."""
    def run(with_design: bool) -> dict:
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=toy_sampler(seed=0, n_startup_trials=0, candidates=64))
        for params in ({"K": 2, "family": "good"}, {"K": 2, "family": "poor"}, {"K": 3, "family": "poor"}):
            study.enqueue_trial(params)
            trial = study.ask()
            if with_design:
                tell(study, trial)
            else:
                d = toy_design(trial)[1]
                study.tell(trial, [toy_score(d), toy_memory(d)])
        return tell(study, study.ask())

    assert run(False) == run(True) == {"K": 6, "family": "good"}


def test_designs_over_the_budget_are_never_chosen():
    """With a budget of 55 only K = 5 and 6 fit (memory 100 - 10 K): the random startup draws and the model's
    choices both stay under it, though a heavier good design would add hypervolume."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=toy_sampler(seed=0, n_startup_trials=2, candidates=8, budget=55.0))
    chosen = [tell(study, study.ask()) for _ in range(4)]  # the whole space under the budget: 2 K x 2 families
    assert sorted((d["K"], d["family"]) for d in chosen) == [(5, "good"), (5, "poor"), (6, "good"), (6, "poor")]


def test_the_asked_parameters_are_the_chosen_candidates():
    """The trial asks its parameters as usual; the sampler answers with the candidate it scored."""
    sampler = toy_sampler(seed=1, n_startup_trials=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.enqueue_trial({"K": 2, "family": "good"})
    tell(study, study.ask())
    trial = study.ask()
    chosen = dict(sampler._chosen[trial.number])
    assert toy_design(trial)[1] == {"K": chosen["K"], "family": chosen["family"]}


def test_expected_improvement_of_certain_and_dominated_points():
    norm = Normalised(0.0, 1.0, 0.0, 100.0)
    front = [(1.0, 100.0)]
    # certain (std 0): exactly the area it adds, (0.6 + 0.01) x (0.5 - 0) in normalised units
    assert expected_improvement(norm, front, 0.6, 0.0, 50.0) == pytest.approx(0.61 * 0.5)
    assert expected_improvement(norm, front, 0.9, 0.0, 100.0) == 0.0  # dominated: no area
    assert expected_improvement(norm, front, 0.6, 0.2, 50.0) > expected_improvement(norm, front, 0.6, 0.0, 50.0) * 0.99
    assert expected_improvement(norm, front, 0.6, 0.0, 20.0) > expected_improvement(norm, front, 0.6, 0.0, 50.0)


def test_candidate_draws_stay_in_their_ranges_and_encode_to_the_unit_interval():
    cand = CandidateTrial(random.Random(0))
    for _ in range(200):
        assert 2 <= cand.suggest_int("a", 2, 64, log=True) <= 64
        assert cand.suggest_int("b", 0, 10, step=5) in (0, 5, 10)
        c = cand.suggest_float("c", 0.1, 0.5, step=0.2)
        assert any(abs(c - v) < 1e-12 for v in (0.1, 0.3, 0.5))
        assert 1e-3 <= cand.suggest_float("d", 1e-3, 1.0, log=True) <= 1.0
        assert cand.suggest_categorical("e", ["x", "y"]) in ("x", "y")
        row = encode(cand.params, cand.distributions)
        assert len(row) == 6 and all(0.0 <= v <= 1.0 for v in row) and sum(row[4:]) == 1.0


def test_auto_is_ehvi_for_the_quickstart_and_tpe_where_ehvi_cannot_serve(tmp_path):
    run = study_mod.prepare(write_study(tmp_path / "a", sampler={"name": "auto"}))
    assert sampler_name(run) == "ehvi"
    three = study_mod.prepare(write_study(tmp_path / "b", sampler={"name": "auto"},
                                          objectives=["score", "memory", "seconds"]))
    assert sampler_name(three) == "tpe"
    with pytest.raises(ConfigError, match=r"sampler.name: ehvi models the score against memory: objectives "
                                          r"must be \[score, memory\], not \['score', 'memory', 'seconds'\]"):
        study_mod.prepare(write_study(tmp_path / "c", sampler={"name": "ehvi"}, objectives=["score", "memory", "seconds"]))


@pytest.mark.parametrize("mode", ["simulated", "measured"])
def test_a_study_with_ehvi_trains_the_designs_it_chose(tmp_path, mode):
    """A real (tiny) study: every searched design is new, and the peak the sampler knew before training is the
    one the trial recorded (simulated; measured on the CPU: one real step, the same counter as the trial's)."""
    path = write_study(tmp_path, sampler={"name": "ehvi", "seed": 0, "n_startup_trials": 1, "candidates": 3},
                       n_trials=3, enqueue=[], pruning={"enabled": False}, memory={"mode": mode},
                       train={"epochs": 1, "batch_size": 32, "lr": 0.05, "seed": 0, "device": "cpu"})
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 3, None, progress=False)
    done = [t for t in st.all_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 3 and done[0].user_attrs["is_e2e"]
    hashes = [t.user_attrs["design_hash"] for t in done]
    assert len(set(hashes)) == 3
    sampler = st.search.sampler
    for t in done[1:]:  # the sampler's memory for each design it saw equals what the trial recorded
        assert sampler.memory[t.user_attrs["design_hash"]] == t.values[1]


def test_improvement_equals_differencing_the_hypervolume():
    rng = random.Random(5)
    for _ in range(200):
        norm = Normalised(0.2, 0.9, 10.0, 110.0)
        front = [(rng.uniform(0.1, 1.0), rng.uniform(0.0, 130.0)) for _ in range(rng.randrange(0, 7))]
        peak, scores = rng.uniform(0.0, 130.0), [rng.uniform(0.0, 1.1) for _ in range(5)]
        got = improvement(norm, front, np.array(scores), peak)
        want = [norm.hypervolume([*front, (sc, peak)]) - norm.hypervolume(front) for sc in scores]
        assert got == pytest.approx(want, abs=1e-12)


DETECTION = {"task": {"name": "detection", "args": {"levels": 2, "fpn_channels": 8, "head_convs": 1}},
             "data": {"name": "scenes", "image_size": 32, "num_train": 32, "num_test": 16, "seed": 0},
             "backbone": {"name": "resnet8"},
             "search_space": {"modules": {"low": 2, "high": 3}, "splits": "balanced", "families": ["dgl"],
                              "depth": 1, "width": 8, "end": ["local", "global_ema"]}}


@pytest.mark.torchvision
def test_auto_is_ehvi_on_detection_when_memory_is_measured_and_the_oracle_is_the_trials_peak(tmp_path):
    """Detection cannot be faked, but a study that measures memory knows a candidate's peak from real steps
    before training it: auto picks ehvi, and the peak the sampler knew is the trial's to within 1% (the oracle's
    batch is synthetic, and a detection step's memory depends on its boxes: 0.06-0.12% apart here)."""
    path = write_study(tmp_path / "a", **DETECTION, sampler={"name": "auto", "seed": 0, "n_startup_trials": 1,
                                                           "candidates": 2},
                       memory={"mode": "measured"}, n_trials=3, enqueue=[], pruning={"enabled": False},
                       train={"epochs": 1, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "seed": 0,
                              "device": "cpu", "bn_recalibration_batches": 0})
    run = study_mod.prepare(path)
    assert sampler_name(run) == "ehvi"
    st = open_search(run)
    optimize(run, st, 3, None, progress=False)
    done = [t for t in st.all_trials() if t.state.name == "COMPLETE" and not t.user_attrs.get("is_e2e")]
    assert done
    for t in done:
        assert st.search.sampler.memory[t.user_attrs["design_hash"]] == pytest.approx(t.values[1], rel=0.01)


@pytest.mark.torchvision  # get_task("detection") loads torchvision's ops
def test_ehvi_on_detection_measures_candidates_on_the_studys_device(monkeypatch):
    """On CUDA a simulatable study's oracle is the simulator; detection's is real steps on the GPU."""
    from auxsearch.model import engine as engine_mod
    from auxsearch.train import memory

    calls = []
    monkeypatch.setattr(engine_mod, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(memory, "measure", lambda d, bs, size, cfg, device: calls.append(device) or 1)
    monkeypatch.setattr(memory, "simulate_in_study", lambda d, cfg: calls.append("simulated") or 2)
    from auxsearch.config import StudyConfig, from_mapping

    cfg = from_mapping(StudyConfig, {"name": "x", "memory": {"mode": "measured"}}, "")
    box = {"task": {"name": "detection", "args": {"levels": 2}}, "backbone": {"name": "resnet8"},
           "input_shape": [3, 32, 32], "num_classes": 4, "num_units": 4, "splits": [2], "aux": [{"family": "dgl"}]}
    assert memory.peak_in_study(box, cfg) == 1 and calls == ["cuda"]
    digits = {**box, "task": {"name": "classification", "args": {}}, "input_shape": [1, 16, 16], "num_classes": 10}
    assert memory.peak_in_study(digits, cfg) == 2 and calls == ["cuda", "simulated"]
