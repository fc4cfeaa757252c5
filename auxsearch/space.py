"""Search spaces: ``search_spaces/*.yaml`` -> define-by-run Optuna suggestions -> a design.

Every dimension is written one of three ways::

    width: 32                       # fixed: not searched, not an Optuna parameter
    width: [16, 32, 64]             # categorical choices
    depth: {low: 1, high: 3}        # an int or float range (``log: true``, ``step``)

Parameter names are stable and readable: ``K``, ``split_1`` .. ``split_{K-1}``,
``aux.family``, ``aux.depth``, ... (or ``aux0.family``, ``aux1.family`` with
``per_module: true``). A space is testable without a study:
``suggest_design(optuna.trial.FixedTrial({...}), space, base)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, known
from .families import CLASSIFICATION_ONLY, FAMILY_OPTIONS, GLOBAL_FAMILIES


@dataclass(frozen=True)
class Dim:
    """One searchable dimension: fixed, categorical or a numeric range."""

    fixed: Any = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def values(self) -> list:
        """Every value this dimension can take (a range lists its ends)."""
        if self.choices:
            return list(self.choices)
        if self.low is not None:
            return [self.low, self.high]
        return [self.fixed]

    def suggest(self, trial, name: str) -> Any:
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.low is None:
            return self.fixed
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def is_fixed(self) -> bool:
        return not self.choices and self.low is None


def parse_dim(key: str, raw: Any, kind: type, check=None, rule: str = "") -> Dim:
    """Parse a dimension; ``check(value) -> bool`` guards every value it may take."""
    if isinstance(raw, Mapping):
        extra = set(raw) - {"low", "high", "log", "step"}
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key; allowed: high, log, low, step")
        if "low" not in raw or "high" not in raw:
            raise ConfigError(key, "a range needs both low and high")
        dim = Dim(low=_typed(f"{key}.low", raw["low"], kind), high=_typed(f"{key}.high", raw["high"], kind),
                  log=bool(raw.get("log", False)), step=raw.get("step"))
        if dim.low > dim.high:
            raise ConfigError(key, f"`low <= high` must hold, got low={dim.low}, high={dim.high}")
        if dim.log and dim.low <= 0:
            raise ConfigError(f"{key}.low", f"must be > 0 with log: true, got {dim.low}")
        checks = ((f"{key}.low", dim.low), (f"{key}.high", dim.high))
    elif isinstance(raw, list):
        if not raw:
            raise ConfigError(key, "an empty list of choices")
        dim = Dim(choices=tuple(_typed(f"{key}.{i}", v, kind) for i, v in enumerate(raw)))
        checks = tuple((f"{key}.{i}", v) for i, v in enumerate(dim.choices))
    else:
        dim = Dim(fixed=_typed(key, raw, kind))
        checks = ((key, dim.fixed),)
    for k, v in checks:
        if check is not None and not check(v):
            raise ConfigError(k, f"{rule}, got {v!r}")
    return dim


def _typed(key: str, v: Any, kind: type) -> Any:
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        raise ConfigError(key, f"must be of type {kind.__name__}, got {v!r}")
    return v


# name -> (type, default, check, rule); the order is the order of suggestion.
_DIMS: dict[str, tuple[type, Any, Any, str]] = {
    "modules": (int, {"low": 2, "high": 4}, lambda v: v >= 1, "must be >= 1"),
    "families": (str, ["dgl", "infopro", "augment", "momentum"], lambda v: v in FAMILY_OPTIONS,
                 f"must be one of {known(FAMILY_OPTIONS)}"),
    "depth": (int, {"low": 1, "high": 3}, lambda v: v >= 1, "must be >= 1"),
    "width": (int, [16, 32, 64], lambda v: v >= 1, "must be >= 1"),
    "momentum": (float, {"low": 0.9, "high": 0.999}, lambda v: 0 < v < 1, "must be < 1 and > 0"),
    "learnable_scale": (bool, [True, False], None, ""),
    "head": (str, ["dgl", "infopro"], lambda v: v in ("dgl", "infopro"), "must be dgl or infopro"),
    "tau": (float, 0.5, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "pool": (int, 8, lambda v: v >= 1, "must be >= 1"),
    "bank": (int, 0, lambda v: v >= 0, "must be >= 0"),
    "bank_fusion": (str, "add", lambda v: v in ("add", "concat"), "must be add or concat"),
    "end": (str, "local", lambda v: v in ("local", "global", "global_ema"), "must be local, global or global_ema"),
    "through": (str, "ema", lambda v: v in ("ema", "trainable"), "must be ema or trainable"),
    "through_momentum": (float, 0.995, lambda v: 0 < v < 1, "must be < 1 and > 0"),
}


DIM_HELP = {
    "modules": "K, the number of gradient-isolated modules (K = 1 is end to end)",
    "families": "aux families to choose from",
    "depth": "aux depth: conv layers of the head (AugLocal: units sampled)",
    "width": "aux width: channels of the head",
    "momentum": "EMA momentum m of the momentum family",
    "learnable_scale": "momentum family: MAN++ learnable scale s (true) or MAN (false)",
    "head": "momentum family: the head behind the LB/EMA block",
    "tau": "augment family: AugLocal's depth-pyramid slope",
    "pool": "dgl head: pool the input to at most pool x pool first",
    "bank": "feature bank: how many earlier module outputs an aux net reads (0: none)",
    "bank_fusion": "feature bank: add (projected sum) or concat (concatenate + 1x1 conv)",
    "end": "aux end: local head, the real head shared (global) or its EMA copy (global_ema); dgl/momentum",
    "through": "global ends: later units in front of the head as EMA (ema) or trainable copies",
    "through_momentum": "global ends: EMA momentum of the copied later units / head",
}


@dataclass(frozen=True)
class SearchSpace:
    """What a study may vary. Defaults give the full space of the four families."""

    splits: str = "free"  # free: split points searched; balanced: placed by activation memory
    per_module: bool = False  # one aux choice per module instead of one shared by all
    dims: dict[str, Dim] = field(default_factory=dict)

    def dim(self, name: str) -> Dim:
        return self.dims[name]


def parse_space(raw: Mapping | None, key: str = "search_space") -> SearchSpace:
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(key, f"a search space must be a mapping of dimensions, got {type(raw).__name__}")
    raw = dict(raw or {})
    allowed = {"splits", "per_module", *_DIMS}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", f"unknown key; allowed: {known(allowed)}")
    splits = raw.pop("splits", "free")
    if splits not in ("free", "balanced"):
        raise ConfigError(f"{key}.splits", f"must be free or balanced, got {splits!r}")
    per_module = raw.pop("per_module", False)
    if not isinstance(per_module, bool):
        raise ConfigError(f"{key}.per_module", f"must be true or false, got {per_module!r}")
    dims = {name: parse_dim(f"{key}.{name}", raw.get(name, default), kind, check, rule)
            for name, (kind, default, check, rule) in _DIMS.items()}
    return SearchSpace(splits=splits, per_module=per_module, dims=dims)


def load_space(source: str | Path | Mapping, base_dir: Path, key: str = "search_space") -> SearchSpace:
    """A space from a mapping (inline in the study) or a YAML file (relative to ``base_dir``)."""
    if isinstance(source, Mapping):
        return parse_space(source, key)
    if not isinstance(source, str | Path):
        raise ConfigError(key, f"must be a search_spaces/*.yaml path or a mapping, got {source!r}")
    path = Path(source)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ConfigError(key, f"search-space file not found: {path}")
    try:
        return parse_space(yaml.safe_load(path.read_text()), key)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(key, f"{path}: line {mark.line + 1 if mark else '?'}: invalid YAML") from None


def check_space(space: SearchSpace, num_units: int, key: str = "search_space") -> None:
    """Rules that need the backbone: K cannot exceed the number of units."""
    for v in space.dim("modules").values():
        if v > num_units:
            raise ConfigError(f"{key}.modules", f"K = {v} is larger than the backbone's {num_units} units")


def check_space_task(space: SearchSpace, task: str, key: str = "search_space") -> None:
    """Rules that need the task: InfoPro's loss is classification-only."""
    if task == "classification":
        return
    bad = [f for f in space.dim("families").values() if f in CLASSIFICATION_ONLY]
    if bad:
        raise ConfigError(f"{key}.families", f"{bad[0]} is classification-only; task {task!r} takes "
                          "dgl, augment, momentum")
    if "momentum" in space.dim("families").values() and "infopro" in space.dim("head").values():
        raise ConfigError(f"{key}.head", f"head: infopro is classification-only; use head: dgl for task {task!r}")


def balanced_splits(costs: Sequence[float], k: int) -> list[int]:
    """Split points that give each of ``k`` modules about the same total cost."""
    n = len(costs)
    total = float(sum(costs))
    splits: list[int] = []
    acc = 0.0
    for i, c in enumerate(costs[:-1]):
        acc += c
        if len(splits) < k - 1 and acc >= total * (len(splits) + 1) / k:
            splits.append(i + 1)
    while len(splits) < k - 1:  # too few crossings (very uneven costs): fill from the end
        cand = next(j for j in range(n - 1, 0, -1) if j not in splits)
        splits = sorted([*splits, cand])
    return splits


def suggest_design(trial, space: SearchSpace, base: Mapping, unit_costs: Sequence[float]) -> dict:
    """Ask ``trial`` for one design; ``base`` holds backbone, input shape, classes and units."""
    n = base["num_units"]
    k = space.dim("modules").suggest(trial, "K")
    if space.splits == "balanced":
        splits = balanced_splits(unit_costs, k)
    else:
        splits, prev = [], 0
        for i in range(1, k):
            prev = trial.suggest_int(f"split_{i}", prev + 1, n - (k - i))
            splits.append(prev)
    dense = base.get("task", {}).get("name", "classification") != "classification"
    if space.per_module:
        aux = [_suggest_aux(trial, space, f"aux{m}.", dense, m) for m in range(k - 1)]
    else:
        aux = [_suggest_aux(trial, space, "aux.", dense, None)] * (k - 1) if k > 1 else []
    return {**{f: base[f] for f in ("task", "backbone", "input_shape", "num_classes", "num_units") if f in base},
            "splits": splits, "aux": [dict(a) for a in aux]}


def _suggest_aux(trial, space: SearchSpace, prefix: str, dense: bool, module: int | None) -> dict:
    """One aux entry; a dimension is asked only where it changes the network (one hash per network).

    ``module`` is the module index with ``per_module`` (None: one entry shared by all). The
    order of questions is the order of the classification-only releases when ``end`` is fixed.
    """
    family = space.dim("families").suggest(trial, f"{prefix}family")
    entry: dict[str, Any] = {"family": family}
    if family in GLOBAL_FAMILIES:
        entry["end"] = space.dim("end").suggest(trial, f"{prefix}end")
    local = entry.get("end", "local") == "local"
    if local:
        entry["depth"] = space.dim("depth").suggest(trial, f"{prefix}depth")
        if family != "augment" or dense:  # AugLocal's classifier is a linear layer: no width
            entry["width"] = space.dim("width").suggest(trial, f"{prefix}width")
    if family == "augment":
        entry["tau"] = space.dim("tau").suggest(trial, f"{prefix}tau")
    if family == "momentum":
        for name in ("momentum", "learnable_scale", "head") if local else ("momentum", "learnable_scale"):
            entry[name] = space.dim(name).suggest(trial, f"{prefix}{name}")
    if local and not dense and (family == "dgl" or (family == "momentum" and entry["head"] == "dgl")):
        entry["pool"] = space.dim("pool").suggest(trial, f"{prefix}pool")
    return _suggest_wiring(trial, space, prefix, entry, module)


def _suggest_wiring(trial, space: SearchSpace, prefix: str, entry: dict, module: int | None) -> dict:
    """Bank reads and the global end's options; each asked only where it applies."""
    entry["bank"] = space.dim("bank").suggest(trial, f"{prefix}bank") if module != 0 else 0
    if entry["bank"] > 0:
        entry["bank_fusion"] = space.dim("bank_fusion").suggest(trial, f"{prefix}bank_fusion")
    end = entry.setdefault("end", "local")
    if end != "local":
        entry["through"] = space.dim("through").suggest(trial, f"{prefix}through")
        if end == "global_ema" or entry["through"] == "ema":
            entry["through_momentum"] = space.dim("through_momentum").suggest(trial, f"{prefix}through_momentum")
    return entry
