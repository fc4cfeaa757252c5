from __future__ import annotations

import optuna
import pytest

from auxsearch.errors import ConfigError
from auxsearch.graph import normalize
from auxsearch.space import (
    balanced_splits,
    check_space,
    check_space_task,
    grid,
    parse_space,
    suggest_design,
)

BASE = {"backbone": {"name": "resnet20", "args": {}}, "input_shape": [1, 16, 16], "num_classes": 10,
        "num_units": 10}
COSTS = [4096.0] * 4 + [2048.0] * 3 + [1024.0] * 3


def test_fixed_trial_gives_the_expected_design_with_readable_names():
    space = parse_space({"modules": {"low": 1, "high": 4}})
    trial = optuna.trial.FixedTrial({"K": 3, "split_1": 2, "split_2": 6, "aux.family": "momentum",
                                     "aux.depth": 2, "aux.width": 32, "aux.momentum": 0.99,
                                     "aux.learnable_scale": False, "aux.head": "dgl"})
    d = normalize(suggest_design(trial, space, BASE, COSTS))
    assert d["splits"] == [2, 6]
    assert d["aux"][0] == d["aux"][1]
    assert d["aux"][0]["family"] == "momentum" and d["aux"][0]["momentum"] == 0.99
    assert d["aux"][0]["learnable_scale"] is False and d["aux"][0]["pool"] == 8


def test_k1_is_the_end_to_end_design():
    space = parse_space({"modules": {"low": 1, "high": 4}})
    d = suggest_design(optuna.trial.FixedTrial({"K": 1}), space, BASE, COSTS)
    assert d["splits"] == [] and d["aux"] == []


def test_per_module_aux_names_and_balanced_splits():
    space = parse_space({"modules": 3, "splits": "balanced", "per_module": True, "families": ["dgl", "augment"]})
    trial = optuna.trial.FixedTrial({"aux0.family": "dgl", "aux0.depth": 1, "aux0.width": 16,
                                     "aux1.family": "augment", "aux1.depth": 2})
    d = normalize(suggest_design(trial, space, BASE, COSTS))
    assert [a["family"] for a in d["aux"]] == ["dgl", "augment"]
    assert d["splits"] == balanced_splits(COSTS, 3)


def test_balanced_splits_even_out_the_cost():
    assert balanced_splits([1.0] * 8, 4) == [2, 4, 6]
    splits = balanced_splits(COSTS, 2)
    left = sum(COSTS[: splits[0]])
    assert abs(left - sum(COSTS) / 2) <= max(COSTS)
    assert balanced_splits([100.0, 1.0, 1.0], 3) == [1, 2]


def test_random_designs_from_the_default_space_are_all_valid():
    space = parse_space({"modules": {"low": 1, "high": 10}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), directions=["maximize", "minimize"])
    for _ in range(40):
        t = study.ask()
        normalize(suggest_design(t, space, BASE, COSTS))  # raises if invalid
        study.tell(t, [0.0, 0.0])


@pytest.mark.parametrize("raw, key, words", [
    ({"momentum": {"low": 0.9, "high": 1.2}}, "search_space.momentum.high", "must be < 1"),
    ({"depth": {"low": 3, "high": 1}}, "search_space.depth", "`low <= high`"),
    ({"depth": {"low": 0, "high": 2}}, "search_space.depth.low", "must be >= 1"),
    ({"width": []}, "search_space.width", "empty"),
    ({"width": ["wide"]}, "search_space.width.0", "type int"),
    ({"families": ["dgl", "fancy"]}, "search_space.families.1", "augment, dgl, infopro, momentum"),
    ({"splits": "random"}, "search_space.splits", "free or balanced"),
    ({"depht": 2}, "search_space.depht", "unknown key"),
    ({"depth": {"low": 1, "top": 3}}, "search_space.depth.top", "unknown key"),
])
def test_bad_spaces_name_the_key(raw, key, words):
    with pytest.raises(ConfigError) as info:
        parse_space(raw)
    assert info.value.key == key and words in str(info.value)


def test_k_larger_than_the_backbone_is_refused():
    with pytest.raises(ConfigError, match="larger than the backbone's 10 units"):
        check_space(parse_space({"modules": {"low": 2, "high": 12}}), 10)


def test_grid_lists_every_searched_dimension_and_refuses_what_is_not_finite():
    space = parse_space({"modules": [2, 3], "splits": "balanced", "families": ["dgl", "momentum"], "depth": 1,
                         "width": [8, 16], "head": "dgl", "learnable_scale": [True, False], "momentum": 0.99})
    assert grid(space, BASE) == {"K": [2, 3], "aux.family": ["dgl", "momentum"], "aux.width": [8, 16],
                                 "aux.learnable_scale": [True, False]}
    per = grid(parse_space({"modules": {"low": 2, "high": 3}, "splits": "balanced", "per_module": True,
                            "families": ["dgl"], "depth": {"low": 1, "high": 2}, "momentum": 0.99}), BASE)
    assert per["K"] == [2, 3] and per["aux0.depth"] == per["aux1.depth"] == [1, 2] and "aux2.depth" not in per
    with pytest.raises(ConfigError, match="splits: balanced"):
        grid(parse_space({}), BASE)
    with pytest.raises(ConfigError) as err:
        grid(parse_space({"splits": "balanced"}), BASE)
    assert err.value.key == "search_space.momentum" and "float range" in err.value.message


@pytest.mark.parametrize("raw, key", [
    ({"families": ["dgl", "infopro"]}, "search_space.families"),
    ({"families": ["momentum"], "head": ["dgl", "infopro"]}, "search_space.head"),
])
def test_classification_only_choices_are_refused_on_dense_tasks(raw, key):
    space = parse_space(raw)
    check_space_task(space, "classification")
    with pytest.raises(ConfigError) as err:
        check_space_task(space, "segmentation")
    assert err.value.key == key and "classification-only" in err.value.message


def test_dense_spaces_ask_only_what_changes_the_network():
    """No pool on dense tasks, no head options under a global end, no bank for module 0 alone."""
    space = parse_space({"modules": 3, "splits": "balanced", "per_module": True, "families": ["dgl", "momentum"],
                         "bank": [0, 1, 2], "end": ["local", "global"], "pool": [4, 8]})
    base = {**BASE, "task": {"name": "segmentation", "args": {}}, "input_shape": [3, 16, 16], "num_classes": 5}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = {"aux0.family": "dgl", "aux0.end": "local", "aux0.depth": 1, "aux0.width": 16,
              "aux1.family": "momentum", "aux1.end": "global", "aux1.momentum": 0.99,
              "aux1.learnable_scale": True, "aux1.bank": 2, "aux1.bank_fusion": "concat", "aux1.through": "ema",
              "aux1.through_momentum": 0.99}
    d = normalize(suggest_design(optuna.trial.FixedTrial(params), space, base, COSTS))
    assert "pool" not in d["aux"][0] and d["aux"][0]["bank"] == 0
    assert not {"depth", "width", "head", "pool"} & set(d["aux"][1]) and d["aux"][1]["bank"] == 1
    for _ in range(40):  # real trials: never a pool, never module 0's bank, no head under a global end
        trial = study.ask()
        suggest_design(trial, space, base, COSTS)
        names = set(trial.params)
        assert not any(n.endswith(".pool") for n in names) and "aux0.bank" not in names
        for m in (0, 1):
            if trial.params.get(f"aux{m}.end") == "global":
                assert not {f"aux{m}.depth", f"aux{m}.width", f"aux{m}.head"} & names
        study.tell(trial, 0.0)
