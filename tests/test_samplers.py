"""Optuna's own NSGA-II and GP evolve over a run's search study: the references live beside it.

Seeded ask/tell studies with fake objective values, nothing trained: the quickstart space
with ``splits: memory`` (fixed-dimensional: K, skew, the aux choices). As ``open_search`` does, the
parameterless E2E trial and a published design are trials of the sibling reference study, so the
search study holds sampled designs only and no wrapper edits Optuna's view of it.
"""

from __future__ import annotations

import hashlib
import math
from itertools import pairwise
from pathlib import Path

import optuna
import pytest
import yaml

from auxsearch.design.graph import design_hash, normalize
from auxsearch.design.space import balanced_splits, parse_space, suggest_design
from auxsearch.store.storage import open_run

ROOT = Path(__file__).resolve().parents[1]
BASE = {"backbone": {"name": "resnet20", "args": {}}, "input_shape": [1, 16, 16], "num_classes": 10,
        "num_units": 10}
COSTS = [4096.0] * 4 + [2048.0] * 3 + [1024.0] * 3  # resnet20's activation elements per unit at 16x16
POP = 10
SHARED = {"K", "skew", "aux.family", "aux.depth"}  # what every quickstart family asks (width: not augment)


def memory_space():
    raw = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    return parse_space({**raw, "splits": "memory"})


def fake_values(design: dict) -> tuple[float, float]:
    """A deterministic score from the design's hash; memory = its largest module's activations."""
    n = int(hashlib.sha256(design_hash(design).encode()).hexdigest()[:8], 16)
    bounds = [0, *design["splits"], len(COSTS)]
    largest = max(sum(COSTS[a:b]) for a, b in pairwise(bounds))
    return 0.5 + (n % 1000) / 2000.0, largest + 100.0 * (n % 7)


def run_study(sampler: optuna.samplers.BaseSampler, n: int, tmp_path: Path) -> optuna.Study:
    studies = open_run(f"journal:{tmp_path / 'study.journal'}", "s", directions=["maximize", "minimize"],
                       sampler=sampler)
    ref = studies.references()
    ref.enqueue_trial({}, user_attrs={"is_e2e": True, "enqueued": "e2e"})  # as open_search does
    published = dict(BASE, splits=balanced_splits(COSTS, 4), aux=[{"family": "momentum"}] * 3)
    ref.enqueue_trial({}, user_attrs={"design": published, "enqueued": "man_k4"})
    for values in ([0.99, sum(COSTS)], [0.97, 0.5 * sum(COSTS)]):
        trial = ref.ask()
        assert not trial.params
        ref.tell(trial, values)
    study = studies.search
    space = memory_space()
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, fake_values(normalize(suggest_design(trial, space, BASE, COSTS))))
    return study


def _in(value, values) -> bool:
    return any(math.isclose(value, v, rel_tol=1e-12, abs_tol=1e-12) if isinstance(v, float) else value == v
               for v in values)


def inherited_share(children, parents_of, name: str) -> float:
    """The share of children whose ``name`` value is one of their parents' values for it."""
    return sum(_in(c.params[name], [p.params[name] for p in parents_of(c) if name in p.params])
               for c in children) / len(children)


@pytest.fixture(scope="module")
def nsga2_study(tmp_path_factory):
    sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=POP)
    return sampler, run_study(sampler, 4 * POP, tmp_path_factory.mktemp("nsga2"))


GENERATION = "NSGAIISampler:generation"  # where Optuna's NSGA-II stores a trial's generation


def test_nsga2_children_inherit_their_parents_values(nsga2_study):
    sampler, study = nsga2_study
    key = GENERATION
    searched = study.trials
    assert len(searched) == 4 * POP and all(t.params and key in t.system_attrs for t in searched)
    generations = sorted({t.system_attrs[key] for t in searched})
    assert generations == [0, 1, 2, 3]  # the references count in no population
    children = [t for t in searched if t.system_attrs[key] >= 1]
    for g in (1, 2, 3):
        parents = sampler.get_parent_population(study, g)
        assert len(parents) == POP and all(p.params for p in parents)
    parents_of = {g: sampler.get_parent_population(study, g) for g in (1, 2, 3)}

    def of(child):
        return parents_of[child.system_attrs[key]]

    shares = {name: inherited_share(children, of, name) for name in sorted(SHARED)}
    # Each of the 4 parameters is mutated (drawn at random) with probability 1/4: about 75% of
    # 30 children inherit (standard deviation 8%); 50% is three deviations below. skew is a
    # float: a random draw never repeats a parent's value, so its share is the evidence.
    assert all(share >= 0.5 for share in shares.values()), shares


def test_random_search_fails_the_same_check(tmp_path):
    study = run_study(optuna.samplers.RandomSampler(seed=0), 4 * POP, tmp_path)
    searched = study.trials
    children = searched[POP:]

    def earlier(child):  # every earlier trial: more than any NSGA-II parent set, so a looser check
        return [t for t in searched if t.number < child.number]

    assert inherited_share(children, earlier, "skew") < 0.1


def test_the_relative_search_space_is_every_shared_parameter(nsga2_study):
    """The search study holds no parameterless trial, so the intersection space Optuna's NSGA-II and GP model
    is the parameters every searched design shares (an E2E trial in the same study would empty it)."""
    sampler, study = nsga2_study
    assert all(t.params for t in study.trials)
    assert set(sampler.infer_relative_search_space(study, study.trials[-1])) == SHARED
    polluted = optuna.create_study(directions=["maximize", "minimize"])
    for t in study.trials:
        polluted.add_trial(t)
    polluted.add_trial(optuna.trial.create_trial(values=[0.99, 1.0]))  # what a parameterless E2E trial does
    assert optuna.samplers.NSGAIISampler(population_size=POP).infer_relative_search_space(
        polluted, polluted.trials[-1]) == {}


def test_gp_models_the_searched_trials(tmp_path):
    sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=4)
    study = run_study(sampler, 7, tmp_path)
    assert SHARED <= set(sampler.infer_relative_search_space(study, study.trials[-1]))
    modelled = [t for t in study.trials if any(k.startswith("gp:relative_params") for k in t.system_attrs)]
    assert len(modelled) >= 2  # trials after the startup ones came from the GP, not from random draws
