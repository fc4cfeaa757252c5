"""Search spaces: ``search_spaces/*.yaml`` -> define-by-run Optuna suggestions -> a design.

Every dimension is written one of three ways::

    width: 32                       # fixed: not searched, not an Optuna parameter
    width: [16, 32, 64]             # categorical choices
    depth: {low: 1, high: 3}        # an int or float range (``log: true``, ``step``)

Parameter names are stable and readable: ``K``, ``split_1`` .. ``split_{K-1}``
(``splits: free``) or ``skew`` (``splits: memory``), ``aux.family``, ``aux.depth``, ...
(or ``aux0.family``, ``aux1.family`` with ``per_module: true``). The dimensions, their
rules and defaults, and when each option is asked all come from the aux family specs
(``auxsearch.design.families``). A space is testable without a study:
``suggest_design(optuna.trial.FixedTrial({...}), space, base)``.

Split points: ``free`` searches them; ``balanced`` gives every module 1/K of the activation
memory (``unit_costs``); ``memory`` searches one ``skew`` that moves all the boundaries of
the balanced placement together (:func:`memory_splits`), so every trial has the same
parameters whatever its K.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auxsearch.config import load_yaml
from auxsearch.design.families import (
    defaults,
    dense_choices,
    family,
    family_names,
    refuse_removed,
    search_order,
    searchable,
)
from auxsearch.design.spec import Rule, at_least, within
from auxsearch.design.tasks import TaskSpec, task_spec
from auxsearch.errors import ConfigError, known

SPLIT_MODES = ("free", "balanced", "memory")
# splits: memory: at skew s each boundary's memory quantile m/K has its odds multiplied by
# SKEW_ODDS ** s (s = +-1: by 4 or by 1/4). K = 2 puts its boundary between 20% and 80%
# of the activation memory; K = 5 gives the first module 6% to 50% of it.
SKEW_ODDS = 4.0


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


def parse_dim(key: str, raw: Any, kind: type, rule: Rule | None = None) -> Dim:
    """Parse a dimension; ``rule`` guards every value it may take."""
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
        if rule is not None:
            rule.test(k, v, search=True)
    return dim


def _typed(key: str, v: Any, kind: type) -> Any:
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        raise ConfigError(key, f"must be of type {kind.__name__}, got {v!r}")
    return v


@dataclass(frozen=True)
class DimSpec:
    """What a search-space key takes: its type, its default, its rule and one line of help."""

    kind: type
    default: Any
    rule: Rule | None
    help: str


def dimensions() -> dict[str, DimSpec]:
    """Every search-space key besides ``splits`` and ``per_module``, from the family specs.

    ``modules``, ``skew`` (``splits: memory`` only) and ``families`` first, then one dimension
    per searchable option name (families that share a name share its dimension), the wiring
    options last.
    """
    names = family_names()
    dims = {"modules": DimSpec(int, {"low": 2, "high": 4}, at_least(1),
                               "K, the number of gradient-isolated modules (K = 1 is end to end)"),
            "skew": DimSpec(float, {"low": -1.0, "high": 1.0}, within(-1, 1),
                            "splits: memory only: boundary m at the activation-memory quantile whose odds are "
                            f"(m / (K - m)) * {SKEW_ODDS:g}^skew (0: balanced; < 0 towards the input, > 0 the "
                            "output)"),
            "families": DimSpec(str, list(names), Rule(lambda v: v in family_names(), f"must be one of {known(names)}"),
                                "aux families to choose from")}
    for name, opt in searchable().items():
        dims[name] = DimSpec(opt.kind, opt.search, opt.rule, opt.help)
    return dims


@dataclass(frozen=True)
class SearchSpace:
    """What a study may vary. Defaults give the full space of the registered families."""

    splits: str = "free"  # free: split points searched; balanced / memory (+ skew): placed by activation memory
    per_module: bool = False  # one aux choice per module instead of one shared by all
    dims: dict[str, Dim] = field(default_factory=dict)

    def dim(self, name: str) -> Dim:
        if name not in self.dims:  # an option of a family registered after the space was read
            spec = dimensions()[name]
            return parse_dim(f"search_space.{name}", spec.default, spec.kind, spec.rule)
        return self.dims[name]


def parse_space(raw: Mapping | None, key: str = "search_space") -> SearchSpace:
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(key, f"a search space must be a mapping of dimensions, got {type(raw).__name__}")
    raw = dict(raw or {})
    specs = dimensions()
    allowed = {"splits", "per_module", *specs}
    unknown = set(raw) - allowed
    refuse_removed(unknown, key)
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", f"unknown key; allowed: {known(allowed)}")
    splits = raw.pop("splits", "free")
    if splits not in SPLIT_MODES:
        raise ConfigError(f"{key}.splits", f"must be free, balanced or memory, got {splits!r}")
    if "skew" in raw and splits != "memory":
        raise ConfigError(f"{key}.skew", f"only applies with splits: memory (splits is {splits})")
    per_module = raw.pop("per_module", False)
    if not isinstance(per_module, bool):
        raise ConfigError(f"{key}.per_module", f"must be true or false, got {per_module!r}")
    dims = {name: parse_dim(f"{key}.{name}", raw.get(name, d.default), d.kind, d.rule) for name, d in specs.items()}
    if splits != "memory":
        dims["skew"] = Dim(fixed=0.0)  # not searched: free splits have no skew, balanced is skew 0
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
        return parse_space(load_yaml(path.read_text()), key)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(key, f"{path}: line {mark.line + 1 if mark else '?'}: invalid YAML") from None


def check_space(space: SearchSpace, num_units: int, key: str = "search_space") -> None:
    """Rules that need the backbone: K cannot exceed the number of units."""
    for v in space.dim("modules").values():
        if v > num_units:
            raise ConfigError(f"{key}.modules", f"K = {v} is larger than the backbone's {num_units} units")


def check_space_task(space: SearchSpace, task: str, key: str = "search_space") -> None:
    """Rules that need the task: classification-only families (and heads) on a dense task."""
    if not task_spec(task).dense:
        return
    fams = space.dim("families").values()
    bad = [f for f in fams if family(f).classification_only]
    if bad:
        raise ConfigError(f"{key}.families", f"{bad[0]} is classification-only; task {task!r} takes "
                          f"{known(dense_choices(family(bad[0]), 'family'))}")
    for spec in map(family, fams):
        for opt in (o for o in spec.options if o.picks_family):
            bad = [v for v in space.dim(opt.name).values() if family(v).classification_only]
            if bad:
                raise ConfigError(f"{key}.{opt.name}", f"{opt.name}: {bad[0]} is classification-only; use "
                                  f"{opt.name}: {known(dense_choices(spec, opt.name))} for task {task!r}")


def balanced_splits(costs: Sequence[float], k: int) -> list[int]:
    """Split points that give each of ``k`` modules about the same total cost."""
    total = float(sum(costs))
    return _splits_at(costs, k, [total * m / k for m in range(1, k)])


def memory_quantiles(k: int, skew: float) -> list[float]:
    """The shares of the total cost at which ``splits: memory`` puts boundaries 1 .. k-1.

    Boundary m sits at the quantile x = m / k (balanced) with its odds x / (1 - x) multiplied
    by t = SKEW_ODDS ** skew: q = t x / (1 + (t - 1) x). The map is increasing in x (the
    boundaries keep their order) and in ``skew`` (every boundary moves towards the output, the
    first module grows; a negative skew moves them towards the input); skew 0 is the identity
    and -skew mirrors skew (q(1 - x, -s) = 1 - q(x, s)).
    """
    t = SKEW_ODDS ** skew
    return [t * (m / k) / (1.0 + (t - 1.0) * (m / k)) for m in range(1, k)]


def memory_splits(costs: Sequence[float], k: int, skew: float = 0.0) -> list[int]:
    """``splits: memory``: boundary m after the first unit where the cumulative cost reaches quantile q_m.

    ``costs`` are activation elements per unit; q_m are :func:`memory_quantiles`. Skew 0 is
    :func:`balanced_splits` exactly. Always ``k - 1`` strictly increasing split points in
    ``1 .. len(costs) - 1`` (``k <= len(costs)``): a unit crossing several quantiles takes
    one boundary and the next ones follow on the next units, and where the units run out
    (very uneven costs, large K) the free indices nearest the output are used.
    """
    if skew == 0:
        return balanced_splits(costs, k)
    total = float(sum(costs))
    return _splits_at(costs, k, [total * q for q in memory_quantiles(k, skew)])


def _splits_at(costs: Sequence[float], k: int, targets: Sequence[float]) -> list[int]:
    """Split point m after the first unit whose cumulative cost reaches ``targets[m]`` (one per unit)."""
    n = len(costs)
    splits: list[int] = []
    acc = 0.0
    for i, c in enumerate(costs[:-1]):
        acc += c
        if len(splits) < k - 1 and acc >= targets[len(splits)]:
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
    elif space.splits == "memory":  # skew is asked for every K: each trial has the same parameters (NSGA-II)
        splits = memory_splits(unit_costs, k, space.dim("skew").suggest(trial, "skew"))
    else:
        splits, prev = [], 0
        for i in range(1, k):
            prev = trial.suggest_int(f"split_{i}", prev + 1, n - (k - i))
            splits.append(prev)
    task = task_spec(base.get("task", {}).get("name", "classification"))
    if space.per_module:
        aux = [_suggest_aux(trial, space, f"aux{m}.", task) for m in range(k - 1)]
    else:
        aux = [_suggest_aux(trial, space, "aux.", task)] * (k - 1) if k > 1 else []
    return {**{f: base[f] for f in ("task", "backbone", "input_shape", "num_classes", "num_units") if f in base},
            "splits": splits, "aux": [dict(a) for a in aux]}


def _suggest_aux(trial, space: SearchSpace, prefix: str, task: TaskSpec) -> dict:
    """One aux entry; an option is asked only where it changes the network (one hash per network).

    ``prefix`` names the module with ``per_module`` (``aux3.``), else the entry shared by all. The
    options come in the family's search order, each asked where its conditions hold for the
    answers so far (``Option.applies`` and ``Option.asked``).
    """
    spec = family(space.dim("families").suggest(trial, f"{prefix}family"), f"{prefix}family")
    entry: dict[str, Any] = {"family": spec.name}
    seen = defaults(spec)
    for opt in search_order(spec):
        if opt.is_asked(seen, task):
            entry[opt.name] = seen[opt.name] = space.dim(opt.name).suggest(trial, f"{prefix}{opt.name}")
    return entry


def grid(space: SearchSpace, base: Mapping) -> dict[str, list]:
    """Every parameter a grid sampler can take; only finite spaces with balanced or memory splits qualify."""
    if space.splits == "free":
        raise ConfigError("search_space.splits", "the grid sampler needs splits: balanced or memory (free "
                          "split points have ranges that depend on K)")
    named = {"K": space.dim("modules")}
    if space.splits == "memory":
        named["skew"] = space.dim("skew")
    prefixes = [f"aux{m}." for m in range(max(space.dim("modules").values()) - 1)] if space.per_module else ["aux."]
    for p in prefixes:
        for name in dimensions():
            if name not in ("modules", "skew"):
                named[p + ("family" if name == "families" else name)] = space.dim(name)
    out = {}
    for name, dim in named.items():
        if dim.low is not None and not (isinstance(dim.low, int) and isinstance(dim.high, int)):
            raise ConfigError(f"search_space.{name.split('.')[-1]}", "the grid sampler needs choices or "
                              "integer ranges, not a float range")
        if not dim.is_fixed():
            out[name] = list(range(dim.low, dim.high + 1)) if dim.low is not None else list(dim.choices)
    return out
