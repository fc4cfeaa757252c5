"""Published recipes pinned against the values their authors' code computes, written out here by hand.

Sources (read from the code, not from auxsearch):
- MAN, github.com/JunhaoSu0/MAN, ``Exp on CIFAR-SVHN-STL``: README command ``--ixx_1 5 --ixy_1 0.5
  --ixx_2 0 --ixy_2 0 --momentum 0.995``; ``train.py`` default ``--aux_net_config 2c2f``;
  ``networks/resnetInfoPro_MAN.py`` forward: ``ratio = lo / (local_module_num - 2)`` with ``lo`` the
  stage of the block after the split; ``networks/config.py`` ``InfoPro['resnet32']`` split tables.
- MAN ImageNet K = 4: ``imagenet_DDP.py --ixx_r 5 --ixy_r 0.75 --momentum_MAN 0.995``;
  ``loss_ixy1 * 5 + loss_ixy2 * 0.75``.
- MAN++, github.com/JunhaoSu0/MAN_PlusPlus, ``resnetInfoPro_MANPP.py``: ``ema_s`` =
  ``nn.Parameter(torch.tensor(1.0))`` per module, ``y = s * LB(x) + (2 - s) * EMA(x)``, a stem module
  (``LB_first``, ratio0 = 0), ``torch.optim.SGD(model.parameters(), ..., weight_decay=1e-4)`` in
  ``train.py`` (so s is decayed), no clamp of s anywhere.
"""

from __future__ import annotations

import math

import pytest
import torch

from auxsearch.backbones import create_units
from auxsearch.config import TrainConfig
from auxsearch.design.recipes import RECIPES, published_design
from auxsearch.design.space import balanced_splits
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, make_optimizer, trace_shapes

# resnet32 in our units: unit 0 the stem, then 15 blocks; [stage s, block b] is unit 1 + 5 (s - 1) + b.
# The authors' K = 8 table ends modules after [1,0] [1,2] [1,4] [2,1] [2,3] [3,0] [3,2]: units 1 3 5 7 9 11 13.
MAN_K8_SPLITS = [2, 4, 6, 8, 10, 12, 14]
MAN_K8_LO = [1, 1, 2, 2, 2, 3, 3]  # the stage of the block after each split: (1,1) (1,3) (2,0) (2,2) (2,4) (3,1) (3,3)
MAN_K16_LO = [1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]  # after [1,0]..[1,3], [1,4]..[2,3], [2,4]..[3,3]
RESNET110_K4_SPLITS = [13, 27, 41]  # [1,11] [2,7] [3,3]: units 12, 26, 40


def base(backbone: str = "resnet32", task: str = "classification") -> tuple[dict, list, list]:
    units = create_units(backbone, 3, {})
    _, outs = trace_shapes(units, [3, 32, 32])
    b = {"task": {"name": task, "args": {}}, "backbone": {"name": backbone, "args": {}}, "input_shape": [3, 32, 32],
         "num_classes": 10, "num_units": len(units)}
    return b, outs, [float(math.prod(o)) for o in outs]


def design(name: str, backbone: str = "resnet32") -> dict:
    b, outs, costs = base(backbone)
    return published_design(name, b, outs, costs, dense=False, balanced=balanced_splits)


def weights(d: dict) -> list[float]:
    """Reconstruction and task weight of every module, flat: recon_0, task_0, recon_1, ..."""
    return [w for a in d["aux"] for w in (a["recon_first"], a["task_first"])]


def man(los: list[int], k: int) -> list[float]:
    """The authors' rule, ixx_1 5 -> ixx_2 0 and ixy_1 0.5 -> ixy_2 0 at ratio lo / (K - 2)."""
    return [w for lo in los for w in (5 * (1 - lo / (k - 2)), 0.5 * (1 - lo / (k - 2)))]


def test_man_k8_is_the_authors_cifar_schedule_value_by_value():
    d = design("man_k8")
    assert d["splits"] == MAN_K8_SPLITS
    assert weights(d) == pytest.approx(man(MAN_K8_LO, 8))
    assert [round(w, 4) for w in weights(d)[::2]] == [4.1667, 4.1667, 3.3333, 3.3333, 3.3333, 2.5, 2.5]
    for a in d["aux"]:
        assert (a["family"], a["head"], a["momentum"], a["learnable_scale"]) == ("momentum", "infopro", 0.995, False)
        assert (a["depth"], a["decoder_width"]) == (2, 12)  # 2c2f; Decoder(widen=1): 12 channels
        assert a["recon_first"] == a["recon_last"] and a["task_first"] == a["task_last"]
    # 2c2f on the block's channels: 16 -> 32, 32 -> 64, 64 -> 64
    assert [a["width"] for a in d["aux"]] == [32, 32, 64, 64, 64, 64, 64]


def test_man_k16_has_the_authors_fifteen_modules_and_ratio_over_fourteen():
    d = design("man_k16")
    assert d["splits"] == list(range(2, 16))  # every block but the first ends a module: 15 modules
    assert weights(d) == pytest.approx(man(MAN_K16_LO, 16))


def test_man_k2_uses_ratio_zero_and_man_k4_the_imagenet_constant_weights():
    d2 = design("man_k2")
    assert d2["splits"] == [8] and weights(d2) == [5.0, 0.5]  # [2,1]: unit 7 ends module 0
    d4 = design("man_k4")
    assert d4["splits"] == [4, 8, 12] and weights(d4) == [5.0, 0.75] * 3
    assert design("man_k4", "resnet110")["splits"] == RESNET110_K4_SPLITS


def test_manpp_k8_adds_the_stem_module_with_ratio_zero_and_a_learnable_scale():
    d = design("manpp_k8")
    assert d["splits"] == [1, *MAN_K8_SPLITS]
    assert weights(d) == pytest.approx([5.0, 0.5, *man(MAN_K8_LO, 8)])
    assert all(a["learnable_scale"] and a["momentum"] == 0.995 for a in d["aux"])


def test_the_built_network_carries_the_recipe_weights():
    net = build(design("man_k8"))
    got = [w for a in net.aux for w in (a.end.recon_weight, a.end.task_weight)]
    assert got == pytest.approx(man(MAN_K8_LO, 8))
    assert all(a.scale is None for a in net.aux)  # MAN: no s


def test_manpp_scale_starts_at_one_is_weight_decayed_and_never_clamped():
    net = build(design("manpp_k8"))
    scales = [a.scale for a in net.aux]
    assert all(s.item() == 1.0 for s in scales)
    opt, _ = make_optimizer(net, TrainConfig(weight_decay=1e-4), 10)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(id(s) in decayed for s in scales)  # one SGD group with weight decay, as in the authors' train.py
    aux = net.aux[1]
    x = torch.randn(2, *design("manpp_k8")["input_shape"][:1], 32, 32)
    with torch.no_grad():
        feat = net.stages[0](x)
        feat = net.stages[1](feat)
        aux.scale.fill_(2.5)  # outside [0, 2]: y = 2.5 LB - 0.5 EMA, no clamp
        aux.eval()
        y = aux.transform(feat)
        assert torch.allclose(y, 2.5 * aux.lb(feat) - 0.5 * aux.ema(feat), atol=1e-5)


def test_infopro_recipes_are_refused_on_dense_tasks_with_the_alternative_named():
    b, outs, costs = base()
    for name in ("man_k8", "manpp_k16", "man_k4"):
        with pytest.raises(ConfigError, match="man_k4_dgl"):
            published_design(name, b, outs, costs, dense=True, balanced=balanced_splits)
    d = published_design("man_k4_dgl", b, outs, costs, dense=True, balanced=balanced_splits)
    assert all(a["head"] == "dgl" for a in d["aux"])


def test_backbones_without_a_table_get_balanced_splits_and_stage_ratios():
    d = design("man_k8", "resnet20")  # 1 + 9 units: no authors' table
    b, outs, costs = base("resnet20")
    assert d["splits"] == balanced_splits(costs, 8)
    assert all(0 <= w <= 5 for w in weights(d))


def test_every_recipe_builds_on_the_quickstart_backbone():
    for name in RECIPES:
        net = build(design(name, "resnet20"))
        assert len(net.stages) == len(design(name, "resnet20")["splits"]) + 1
