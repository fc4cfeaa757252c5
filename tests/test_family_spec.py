"""A family declared in one place reaches validation, the search, the grid, the reference and training.

The toy family below is the whole of what a new family needs: one spec (an option with a
type, default, rule, help and search dimension) and one builder. Nothing else in the
package is edited for it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import optuna
import pytest
import torch.nn.functional as F
from conftest import tiny_design
from torch import nn

from auxsearch.aux import AuxNet, local_end
from auxsearch.design import families
from auxsearch.design.families import register_family, registered, unregister_family
from auxsearch.design.graph import design_hash, normalize, to_graph
from auxsearch.design.space import check_space_task, grid, parse_space, suggest_design
from auxsearch.design.spec import FamilySpec, Option, Rule
from auxsearch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
COSTS = [4.0, 3.0, 2.0, 1.0]


class ToyHead(nn.Module):
    """``depth`` 1x1 conv-ReLU of ``width`` channels, global average pooling, linear; logits x ``scale``."""

    def __init__(self, channels: int, depth: int, width: int, num_classes: int, scale: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(channels if i == 0 else width, width, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
        self.scale = scale

    def forward(self, feat):
        return self.scale * self.body(feat)

    def loss(self, feat, image, target):
        return F.cross_entropy(self(feat), target)


class ToyAux(AuxNet):
    def __init__(self, ctx, opts: dict) -> None:
        super().__init__()
        self.resume_at = ctx.next_start
        self.end = local_end(ctx, opts, ctx.feature_shape, lambda: ToyHead(
            ctx.feature_shape[0], opts["depth"], opts["width"], ctx.num_classes, opts["scale"]))


TOY = FamilySpec("toy", "1x1 convs, pooling and a linear layer; logits scaled", builder=ToyAux,
                 options=(Option("scale", float, 1.0, Rule(lambda v: 0 < v <= 4, "must be in (0, 4]"),
                                 "toy family: factor on the logits", search=[0.5, 1.0, 2.0]),))


@pytest.fixture
def toy():
    with registered(TOY):
        yield TOY


def test_design_validation_fills_defaults_and_refuses_bad_values(toy):
    d = normalize(tiny_design(splits=[2], aux=[{"family": "toy"}]))
    assert d["aux"][0] == {"family": "toy", "depth": 1, "width": 64, "scale": 1.0, "end": "local"}
    assert design_hash(d) == design_hash(tiny_design(splits=[2], aux=[{"family": "toy", "scale": 1}]))
    assert not [e for *_, e in to_graph(d).edges(data=True) if e["kind"] == "ema"]
    for entry, key, words in [({"scale": 5.0}, "aux.0.scale", "must be in (0, 4], got 5.0"),
                              ({"scale": "big"}, "aux.0.scale", "must be of type float"),
                              ({"pool": 4}, "aux.0.pool", "unknown option for family 'toy'"),
                              ({"end": "global"}, "aux.0.end", "global end")]:
        with pytest.raises(ConfigError) as err:
            normalize(tiny_design(splits=[2], aux=[{"family": "toy", **entry}]))
        assert err.value.key == key and words in err.value.message


def test_unregistered_the_family_is_unknown_again():
    with registered(TOY):
        normalize(tiny_design(splits=[2], aux=[{"family": "toy"}]))
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[{"family": "toy"}]))
    assert err.value.key == "aux.0.family" and "unknown aux family 'toy'" in err.value.message


def test_search_asks_the_toy_option(toy):
    space = parse_space({"families": ["toy"], "scale": [0.5, 2.0], "width": [8, 16]})
    params = {"K": 2, "split_1": 2, "aux.family": "toy", "aux.depth": 2, "aux.width": 8, "aux.scale": 2.0}
    d = normalize(suggest_design(optuna.trial.FixedTrial(params), space, tiny_design(), COSTS))
    assert d["aux"][0]["scale"] == 2.0 and d["aux"][0]["depth"] == 2
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    normalize(suggest_design(trial, space, tiny_design(), COSTS))
    assert trial.params["aux.scale"] in (0.5, 2.0)
    assert not {"aux.global_weight", "aux.end", "aux.pool"} & set(trial.params)  # fixed or not the toy's
    assert "toy" in parse_space({}).dim("families").values()  # registered families are searched by default
    check_space_task(space, "segmentation")  # not classification-only
    with pytest.raises(ConfigError) as err:
        parse_space({"scale": [0.5, 5.0]})
    assert err.value.key == "search_space.scale.1" and "must be in (0, 4]" in err.value.message


def test_grid_includes_the_toy_option(toy):
    space = parse_space({"modules": [2, 3], "splits": "balanced", "families": ["toy"], "depth": 1, "width": 8,
                         "momentum": 0.99, "scale": [0.5, 1.0]})
    assert grid(space, tiny_design())["aux.scale"] == [0.5, 1.0]


def test_reference_lists_the_toy(toy):
    from auxsearch.outputs.docgen import render

    text = render()
    assert "| `toy` | `scale` | `1.0` | must be in (0, 4] |" in text and "| `scale` | float |" in text


def test_a_toy_design_trains_to_a_finite_score(toy):
    from auxsearch.train.loop import fit

    design = {"backbone": {"name": "resnet8"}, "input_shape": [1, 8, 8], "num_classes": 10, "num_units": 4,
              "splits": [2], "aux": [{"family": "toy", "width": 8, "scale": 0.5}],
              "data": {"name": "digits", "image_size": 8}, "train": {"epochs": 1, "batch_size": 64}}
    result = fit(design)
    assert math.isfinite(result.score) and result.score > 0


def test_registration_refuses_clashes():
    with registered(TOY):
        with pytest.raises(ValueError, match="already registered"):
            register_family(TOY)
    reserved = FamilySpec("bad", "", ToyAux, options=(Option("global_weight", float, 1.0, Rule(bool, "x"), ""),))
    with pytest.raises(ValueError, match="reserved"):
        register_family(reserved)
    other_pool = FamilySpec("bad", "", ToyAux, options=(Option("pool", int, 4, Rule(bool, "x"), "", search=[2, 4]),))
    with pytest.raises(ValueError, match="'pool' differs"):
        register_family(other_pool)
    assert "bad" not in families.family_names()


def test_the_example_in_the_docs_registers_a_working_family():
    text = (ROOT / "docs" / "concepts.md").read_text()
    section = text.split("## Add a family in one file", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {"__name__": "toy_aux"}
    try:
        exec(compile(code, "concepts.md", "exec"), namespace)  # registers the docs' family
        name = namespace["SPEC"].name
        d = normalize(tiny_design(splits=[2], aux=[{"family": name}]))
        assert set(d["aux"][0]) > {"family", "depth", "width"}
        from auxsearch.model.engine import build

        build(d)
    finally:
        if "SPEC" in namespace:
            unregister_family(namespace["SPEC"].name)


def test_every_task_of_the_registry_has_an_implementation_that_reads_its_spec():
    from auxsearch.design.tasks import TASKS
    from auxsearch.tasks import get_task

    for name, spec in TASKS.items():
        task = get_task(name)
        assert task.name == name and task.spec is spec
        assert (task.metric, task.dense, task.simulatable, task.arg_defaults) == \
            (spec.metric, spec.dense, spec.simulatable, spec.args)
    assert [n for n, t in TASKS.items() if not t.dense] == ["classification"]
    assert [n for n, t in TASKS.items() if not t.simulatable] == ["detection"]
