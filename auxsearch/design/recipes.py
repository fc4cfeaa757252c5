"""Published designs a study can enqueue by name (``enqueue: [man_k8]``), as their authors' code sets them.

Torch-free. A recipe turns a study's backbone into a design: its split points and one aux entry per
module. Where the authors' code has a table for the backbone (the CIFAR ResNet-32 / ResNet-110 split
tables of InfoPro's ``networks/config.py``, which MAN and MAN++ reuse), the splits are theirs;
elsewhere they are balanced by activation memory.

MAN (Su et al., ECCV'24; github.com/JunhaoSu0/MAN, ``Exp on CIFAR-SVHN-STL``) and MAN++
(github.com/JunhaoSu0/MAN_PlusPlus, ``Exp_on_CIFAR-SVHN-STL``) put InfoPro's aux net behind the
LB + EMA block. Their README commands give the CIFAR recipe: ``--ixx_1 5 --ixy_1 0.5 --ixx_2 0
--ixy_2 0 --momentum 0.995`` with the default ``--aux_net_config 2c2f``. In their
``resnetInfoPro_MAN.py`` the aux net of the split before backbone block (stage ``lo``, block ``la``)
weights its two losses by

    ratio = lo / (K - 2)   (0 when K <= 2)
    reconstruction = ixx_1 * (1 - ratio) + ixx_2 * ratio,   task = ixy_1 * (1 - ratio) + ixy_2 * ratio

where ``lo`` is the *stage* (1..3) of the block the LB / EMA copies follow, not the module's index,
and K is the nominal module count the table is keyed by. The classifier ``2c2f`` is two 3x3 convs
of ``2 C`` channels (at most 64; C the block's channels; the first with stride 2), FC 128, FC classes;
the decoder has 12 channels. The last module trains on the plain cross-entropy. ``m = 0.995``.

At K = 4 that rule gives ratio 1.5 to a split before a stage-3 block, so negative weights: the
authors support K = 8 / 16 on ResNet-32 (MAN++'s README) and publish K = 4 only for ImageNet, with
constant weights 5 and 0.75 (``imagenet_DDP.py --ixx_r 5 --ixy_r 0.75``; ``loss_ixy1 * 5 +
loss_ixy2 * 0.75`` in ``resnetInfoPro_MAN.py``). ``man_k4`` is that ImageNet K = 4 recipe.

MAN++ adds the learnable scale ``s`` (``nn.Parameter(torch.tensor(1.0))`` per module, in
``model.parameters()`` and so in the one SGD group with weight decay; never clamped) and a local
module of its own for the stem (``LB_first`` / ``EMA_first`` copy ``layer1[0]``; its weights use
ratio 0), so its K = 8 design has 9 modules here.

What differs from the authors' code (documented in docs/concepts.md): their LB and EMA copies are
re-initialised by the network's weight init, ours start as copies of the unit; their first conv of
``2c2f`` on 64 channels has stride 1, ours stride 2; their decoder upsamples with
``align_corners=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from auxsearch.errors import ConfigError

# InfoPro[arch][K] of the authors' networks/config.py: [stage, block] of the last block of each module
# (stages 1..3; the last pair ends the network). MAN and MAN++ use the same tables.
AUTHORS_TABLES: dict[str, dict[int, list[tuple[int, int]]]] = {
    "resnet32": {
        2: [(2, 1), (3, 4)],
        4: [(1, 2), (2, 1), (3, 0), (3, 4)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
        16: [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4),
             (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)],
    },
    "resnet110": {
        2: [(2, 8), (3, 17)],
        4: [(1, 11), (2, 7), (3, 3), (3, 17)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10), (3, 17)],
        16: [(1, 1), (1, 4), (1, 7), (1, 10), (1, 13), (1, 16), (2, 1), (2, 4), (2, 7), (2, 11), (2, 15),
             (3, 1), (3, 5), (3, 9), (3, 13), (3, 17)],
    },
}
BLOCKS_PER_STAGE = {"resnet32": 5, "resnet110": 18}


@dataclass(frozen=True)
class Recipe:
    """A published design: how to build it on a study's backbone and where it comes from."""

    name: str
    k: int  # the module count as the authors name it (their table's key)
    source: str  # one line: the paper and the code it follows
    # (splits, unit shapes, K, whether splits[0] is MAN++'s stem module) -> one aux entry per split
    entries: Callable[[list[int], Sequence[tuple], int, bool], list[dict[str, Any]]]
    stem_module: bool = False  # MAN++: the stem is a local module of its own (one more split, after unit 0)
    classification_only: bool = False
    dense_alternative: str = ""  # what a dense study enqueues instead


def stages(unit_shapes: Sequence[tuple]) -> list[int]:
    """The stage (1, 2, ...) of every unit: unit 1 is in stage 1, and each downsampling starts the next.

    On the CIFAR ResNets this is the authors' ``lo`` (layer1..layer3); unit 0, the stem, is stage 0.
    """
    out = [0]
    for i in range(1, len(unit_shapes)):
        down = i > 1 and unit_shapes[i][-1] < unit_shapes[i - 1][-1]
        out.append(1 if i == 1 else out[-1] + int(down))
    return out


def authors_splits(backbone: str, k: int) -> list[int] | None:
    """The split points (unit indices where a module starts) of the authors' table, None without one."""
    table = AUTHORS_TABLES.get(backbone, {}).get(k)
    if table is None:
        return None
    n = BLOCKS_PER_STAGE[backbone]
    return [1 + (s - 1) * n + b + 1 for s, b in table[:-1]]  # unit 0 is the stem


def _channels_2c2f(c: int) -> int:
    return min(2 * c, 64)


def man_entries(recon: float, task: float, *, recon_last: float = 0.0, task_last: float = 0.0,
                scale: bool = False, constant: bool = False) -> Callable:
    """Aux entries of a MAN / MAN++ recipe: InfoPro's head behind the LB + EMA block, one entry per split."""

    def build(splits: list[int], unit_shapes: Sequence[tuple], k: int, stem: bool) -> list[dict[str, Any]]:
        stage = stages(unit_shapes)
        out = []
        for i, j in enumerate(splits):  # the block after the split is unit j: LB / EMA copy it
            ratio = 0.0 if constant or k <= 2 or (stem and i == 0) else stage[j] / (k - 2)
            if ratio > 1:
                raise ConfigError("enqueue", f"the authors' rule gives ratio {ratio:g} > 1 (negative loss weights) "
                                  f"before unit {j} at K = {k}: this recipe does not apply to this backbone")
            r = recon * (1 - ratio) + recon_last * ratio
            t = task * (1 - ratio) + task_last * ratio
            out.append({"family": "momentum", "head": "infopro", "momentum": 0.995, "learnable_scale": scale,
                        "depth": 2, "width": _channels_2c2f(unit_shapes[j][0]), "decoder_width": 12,
                        # one weight per module: first = last pins it whatever the module's position
                        "recon_first": r, "recon_last": r, "task_first": t, "task_last": t})
        return out

    return build


def dgl_man_entries(splits: list[int], unit_shapes: Sequence[tuple], k: int, stem: bool) -> list[dict[str, Any]]:
    return [{"family": "momentum", "head": "dgl", "depth": 1, "width": 32, "momentum": 0.995}] * len(splits)


def infopro_entries(splits: list[int], unit_shapes: Sequence[tuple], k: int, stem: bool) -> list[dict[str, Any]]:
    return [{"family": "infopro", "depth": 1, "width": 32}] * len(splits)


CIFAR_MAN = "MAN (ECCV'24) CIFAR code: ixx 5 -> 0, ixy 0.5 -> 0 by stage / (K - 2), 2c2f head, m 0.995"
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("infopro_k2", 2, "InfoPro (ICLR'21), K = 2: its decoder + classifier, default weights",
           infopro_entries, classification_only=True),
    Recipe("infopro_k4", 4, "InfoPro (ICLR'21), K = 4: its decoder + classifier, default weights",
           infopro_entries, classification_only=True),
    Recipe("man_k2", 2, CIFAR_MAN, man_entries(5.0, 0.5), classification_only=True, dense_alternative="man_k4_dgl"),
    Recipe("man_k4", 4, "MAN (ECCV'24) ImageNet K = 4 code: weights 5 and 0.75 for every module, 2c2f head, m 0.995",
           man_entries(5.0, 0.75, constant=True), classification_only=True, dense_alternative="man_k4_dgl"),
    Recipe("man_k8", 8, CIFAR_MAN, man_entries(5.0, 0.5), classification_only=True, dense_alternative="man_k4_dgl"),
    Recipe("man_k16", 16, CIFAR_MAN, man_entries(5.0, 0.5), classification_only=True, dense_alternative="man_k4_dgl"),
    Recipe("manpp_k8", 8, "MAN++ (TPAMI'26) CIFAR code: MAN's weights, learnable scale s = 1, a stem module",
           man_entries(5.0, 0.5, scale=True), stem_module=True, classification_only=True,
           dense_alternative="man_k4_dgl"),
    Recipe("manpp_k16", 16, "MAN++ (TPAMI'26) CIFAR code: MAN's weights, learnable scale s = 1, a stem module",
           man_entries(5.0, 0.5, scale=True), stem_module=True, classification_only=True,
           dense_alternative="man_k4_dgl"),
    Recipe("man_k4_dgl", 4, "not published: MAN's LB + EMA block (m 0.995, s learnable) with a DGL head "
           "(a dense task's light head), K = 4 balanced by memory", dgl_man_entries),
)}


def recipe(name: str, key: str = "enqueue") -> Recipe:
    if name not in RECIPES:
        raise ConfigError(key, f"unknown published design {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def published_design(name: str, base: dict, unit_shapes: Sequence[tuple], unit_costs: Sequence[float], *,
                     dense: bool, balanced: Callable[[Sequence[float], int], list[int]], key: str = "enqueue") -> dict:
    """The design of recipe ``name`` on the study's ``base`` (its backbone's unit shapes and costs)."""
    r = recipe(name, key)
    if dense and r.classification_only:
        instead = f"; a dense study enqueues {r.dense_alternative}" if r.dense_alternative else ""
        raise ConfigError(key, f"{name} uses InfoPro's classifier, which is classification-only{instead}")
    units = int(base["num_units"])
    splits = authors_splits(base["backbone"]["name"], r.k)
    if splits is None or len(splits) + 1 > units:
        splits = balanced(unit_costs, min(r.k, units))
    stem = r.stem_module
    if stem and (not splits or splits[0] > 1):
        if units <= len(splits) + 1:
            raise ConfigError(key, f"{name} needs a module for the stem: the backbone has {units} units")
        splits = [1, *splits]
    return dict(base, splits=splits, aux=r.entries(splits, unit_shapes, r.k, stem))
