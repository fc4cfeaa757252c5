"""The option schema of every auxiliary-network family, as plain data.

This module has no torch import: ``graph.py`` uses it to validate a design
and fill in defaults (so two designs that differ only in whether a default
was written down hash the same), and ``aux/`` implements one module per
family under the same names (a contract test checks the two agree).

Every family takes ``depth`` and ``width``; the table below lists the extra
options, each with its default and the rule it must follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    default: Any
    kind: type  # int, float, bool or str
    rule: str  # the rule in words, for error messages
    check: Callable[[Any], bool]
    choices: tuple[str, ...] = ()


def _int(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: v >= low and (high is None or v <= high)


def _open_unit(v: float) -> bool:
    return 0.0 < v < 1.0


def _nonneg(v: float) -> bool:
    return v >= 0.0


_INFOPRO_WEIGHTS = {
    # InfoPro interpolates both weights linearly over the non-final modules,
    # ratio = k / (K - 2) (k = 0 .. K-2), as in the InfoPro code's forward.
    "recon_first": Option(5.0, float, "must be >= 0", _nonneg),
    "recon_last": Option(0.0, float, "must be >= 0", _nonneg),
    "task_first": Option(0.5, float, "must be >= 0", _nonneg),
    "task_last": Option(1.0, float, "must be >= 0", _nonneg),
    "decoder_width": Option(12, int, "must be >= 1", _int(1)),
}
_DGL = {
    "pool": Option(8, int, "must be >= 1 (spatial size the input is pooled to)", _int(1)),
}

FAMILY_OPTIONS: dict[str, dict[str, Option]] = {
    "dgl": dict(_DGL),
    "infopro": dict(_INFOPRO_WEIGHTS),
    "augment": {
        # AugLocal's depth pyramid: later modules get shallower aux nets.
        "tau": Option(0.5, float, "must be in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    },
    "momentum": {
        "momentum": Option(0.995, float, "must satisfy 0 < m < 1", _open_unit),
        "learnable_scale": Option(True, bool, "must be true or false", lambda v: True),
        "head": Option("dgl", str, "must be one of dgl, infopro", lambda v: v in ("dgl", "infopro"),
                       choices=("dgl", "infopro")),
        **_DGL,
        **_INFOPRO_WEIGHTS,
    },
}

# Options every family takes: how the aux net is wired to the rest of the network.
# ``bank``: how many earlier modules' (detached) outputs the aux net reads through a light
# fusion; ``end``: a ``local`` head of its own, the network's ``global`` head (shared, so
# its gradients reach the real head from every module) or an EMA copy of it
# (``global_ema``); ``through``: the later blocks in front of a global end, EMA copies of
# the real units or trainable copies. See docs/concepts.md for the exact rules.
WIRING_OPTIONS: dict[str, Option] = {
    "bank": Option(0, int, "must be >= 0 (earlier module outputs read; 0: no bank)", _int(0)),
    "bank_fusion": Option("add", str, "must be one of add, concat", lambda v: v in ("add", "concat"),
                          choices=("add", "concat")),
    "end": Option("local", str, "must be one of local, global, global_ema",
                  lambda v: v in ("local", "global", "global_ema"), choices=("local", "global", "global_ema")),
    "through": Option("ema", str, "must be one of ema, trainable", lambda v: v in ("ema", "trainable"),
                      choices=("ema", "trainable")),
    "through_momentum": Option(0.995, float, "must satisfy 0 < m < 1", _open_unit),
}
# Values that leave an aux net as it was before wiring existed: left out of the design hash,
# so designs saved before the bank and global ends keep their hashes.
WIRING_NEUTRAL = {"bank": 0, "end": "local"}
# A global end continues through the later backbone units from where the family's own
# layers stop; families whose layers replace later units (augment) or whose loss is not
# the task's (infopro) end locally only.
GLOBAL_FAMILIES = frozenset({"dgl", "momentum"})

# Tasks a design can be trained for (implemented in auxsearch.tasks); families that only
# make sense for classification (InfoPro's loss is cross-entropy + image reconstruction).
TASK_NAMES = ("classification", "detection", "superres", "segmentation")
# The arguments of each task's real head, with their defaults (filled into every design so
# that ``task: detection`` and ``{name: detection, args: {levels: 2}}`` hash the same). The
# rules on their values live with the tasks (``Task.check_args``).
TASK_ARGS: dict[str, dict[str, Any]] = {
    "classification": {},
    "detection": {"levels": 2, "fpn_channels": 64, "head_convs": 2, "score_thresh": 0.05, "nms_thresh": 0.6,
                  "detections_per_img": 100},
    "superres": {"scale": 2},
    "segmentation": {"levels": 3, "decoder_channels": 64},
}
CLASSIFICATION_ONLY = frozenset({"infopro"})

# Families whose aux net holds an EMA copy of a backbone unit (drawn as an
# ``ema`` edge from that unit to the aux node).
EMA_FAMILIES = frozenset({"momentum"})
