"""Plain YAML mappings -> frozen dataclasses, refusing what does not fit.

Each field's ``metadata`` may hold ``check`` (a predicate), ``rule`` (the rule
in words, for the error) and ``choices`` (allowed strings). Unknown keys,
wrong types and broken rules raise :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auxsearch.errors import ConfigError, known

T = TypeVar("T")


def _yaml_loader():
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-3``, ``2e9`` and ``5E-4`` are numbers.

    PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-3``), so ``lr: 1e-3`` would read as the
    string "1e-3". Everything else is the safe loader's.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))
    return Loader


def load_yaml(text: str):
    """Parse a user's YAML file (study, design, search space): safe, with YAML 1.2 floats."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506  (a SafeLoader subclass)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")  # train.precision; see auxsearch.model.precision


def spec(default: Any, rule: str = "", check=None, choices: tuple = (), help: str = "") -> Any:
    """A dataclass field with a validation rule and a one-line help text."""
    meta = {"rule": rule, "check": check, "choices": choices, "help": help}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return type(value)(_coerce(f"{key}.{i}", v, args[0] if args else Any) for i, v in enumerate(value))
    if origin is dict or hint is dict:  # data, backbone: any mapping, copied
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, key)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(key, f"must be of type {hint.__name__}, got {value!r}")
    return value


def from_mapping(cls: type[T], data: Mapping | None, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; every problem names ``key.field``."""
    data = {} if data is None else data
    prefix = f"{key}." if key else ""
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown key; allowed: {known(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        k = f"{prefix}{name}"
        v = _coerce(k, data[name], hints[name])
        meta = f.metadata
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(k, f"must be one of {', '.join(map(str, meta['choices']))}, got {v!r}")
        if meta.get("check") and v is not None and not meta["check"](v):
            raise ConfigError(k, f"{meta['rule']}, got {v!r}")
        values[name] = v
    return cls(**values)


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-ready data."""
    return dataclasses.asdict(obj)


def positive(v) -> bool:
    return v > 0


def non_negative(v) -> bool:
    return v >= 0


@dataclass(frozen=True)
class TrainConfig:
    """How a design is trained: the recipe stored in a design file's ``train`` block."""

    epochs: int = spec(10, "must be >= 1", positive, help="passes over the training set")
    batch_size: int = spec(128, "must be >= 1", positive, help="images per step")
    optimizer: str = spec("sgd", choices=("sgd", "adamw"), help="sgd (momentum, nesterov) or adamw")
    lr: float = spec(0.1, "must be > 0", positive, help="peak learning rate")
    momentum: float = spec(0.9, "must be in [0, 1)", lambda v: 0 <= v < 1, help="SGD momentum")
    nesterov: bool = spec(True, help="Nesterov momentum for SGD")
    weight_decay: float = spec(5e-4, "must be >= 0", non_negative, help="L2 / decoupled weight decay")
    schedule: str = spec("cosine", choices=("cosine", "constant"), help="learning-rate schedule over all steps")
    warmup_epochs: int = spec(0, "must be >= 0", non_negative, help="linear warm-up before the schedule")
    seed: int = spec(0, "must be >= 0", non_negative, help="seeds weights, data order and aux sampling")
    device: str = spec("auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    eval_batch_size: int = spec(512, "must be >= 1", positive, help="images per evaluation step")
    threads: int = spec(0, "must be >= 0", non_negative, help="CPU threads for torch (0: leave torch's default)")
    bn_recalibration_batches: int = spec(8, "must be >= 0", non_negative,
                                         help="precise BN: before each evaluation, recompute the running mean/var of "
                                         "the backbone's and real head's BatchNorm layers on this many training "
                                         "batches (weights untouched); 0: off, evaluate with the training-time EMA")
    precision: str = spec("fp32", choices=PRECISIONS,
                          help="arithmetic of the training step: fp32; bf16 (autocast per module); fp16 (autocast "
                          "+ one loss scale for all modules, a step with an overflow skipped for all). Weights, "
                          "optimizer state and EMA copies stay fp32; evaluation runs in fp32")
    channels_last: bool = spec(False, help="NHWC memory format for weights and batches (faster convolutions on "
                               "recent GPUs with bf16/fp16; same bytes)")
    loader_workers: int | None = spec(None, "must be >= 0 (or null: automatic)", non_negative,
                                      help="DataLoader worker processes for data sets read from files (null: none "
                                      "on CPU, where they would take the step's cores; on CUDA the cores of this "
                                      "trial worker less one, at most 8). Data sets held as tensors (digits, "
                                      "CIFAR) ignore it: they are batched and augmented on the device")
    data_on_device: bool = spec(True, help="keep tensor data sets (digits, CIFAR) on the training device and batch "
                                "+ augment them there; false: a DataLoader over the same items")


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(key: str, value: Any) -> int:
    """``2MiB``, ``1.5GB``, ``512kib`` or a plain integer of bytes."""
    import re

    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():  # 2e9 read as a float
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(key, f"must be a size like 2MiB, 1.5GB or a number of bytes, got {value!r}")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")
    return n


@dataclass(frozen=True)
class MemoryConfig:
    """How peak training memory is scored."""

    mode: str = spec("measured", choices=("measured", "simulated"),
                     help="measured: the real step on the device used; simulated: fake tensors at batch_size/input_size")
    batch_size: int | None = spec(None, "must be >= 1", positive, help="simulated mode: batch to size for (default: train.batch_size)")
    input_size: list[int] | None = spec(None, "must be [height, width], both >= 1",
                                        lambda v: len(v) == 2 and min(v) >= 1, help="simulated mode: image size")
    budget: Any = spec(None, help="optional limit (e.g. 2MiB, 12GB): local designs whose simulated peak exceeds it "
                       "are not trained (the E2E reference is trained anyway and marked over budget)")


@dataclass(frozen=True)
class SamplerConfig:
    name: str = spec("auto", choices=("auto", "ehvi", "tpe", "nsga2", "random", "gp", "grid"),
                     help="Optuna sampler. auto: ehvi where it applies, else tpe. ehvi models the score and "
                     "knows each candidate's memory before training it (objectives [score, memory]; simulated, or real "
                     "steps where memory is measured on the CPU or the task cannot be simulated: detection); nsga2 and gp evolve the parameters every searched trial "
                     "shares: use splits: memory or balanced for a fixed-dimensional space")
    seed: int = spec(0, "must be >= 0", non_negative, help="sampler seed (sequential runs are reproducible)")
    n_startup_trials: int | None = spec(None, "must be >= 0", non_negative,
                                        help="tpe/gp/ehvi: random trials before modelling (default: tpe and gp 6, ehvi 2)")
    population_size: int = spec(12, "must be >= 2", lambda v: v >= 2, help="nsga2: population size")
    candidates: int = spec(64, "must be >= 1", positive,
                           help="ehvi: candidate designs drawn (and memory simulated) before each trial")


@dataclass(frozen=True)
class PruningConfig:
    """Early stopping for multi-objective search (Optuna prunes single-objective only); validation scores only."""

    enabled: bool = spec(True, help="stop trials early by the rule of `mode`")
    mode: str = spec("dominated", choices=("dominated", "halving"),
                     help="dominated: a rival with no more memory has a better curve; halving: multi-objective "
                     "successive halving over epoch rungs (docs/methodology.md)")
    warmup_epochs: int = spec(1, "must be >= 0", non_negative, help="dominated: never stop before this many epochs")
    margin: float = spec(0.02, "must be >= 0", non_negative, help="dominated: score gap that counts as dominated")
    memory_tolerance: float = spec(0.0, "must be >= 0", non_negative,
                                   help="dominated: a rival may use up to (1 + this) x the trial's memory (0: strict dominance)")
    min_rivals: int = spec(1, "must be >= 1", positive, help="dominated: dominating trials needed to stop")
    min_epochs: int = spec(1, "must be >= 1", positive, help="halving: epochs before the first rung")
    reduction_factor: int = spec(3, "must be >= 2", lambda v: v >= 2,
                                 help="halving: eta; rungs at min_epochs x eta^k, the top 1/eta of a rung goes on")


@dataclass(frozen=True)
class ConfirmConfig:
    """Retraining the chosen designs with fresh seeds after the search (docs/methodology.md)."""

    seeds: int = spec(3, "must be >= 0", non_negative,
                      help="seeds per design (0: no confirmation); seeds train.seed+1 .. train.seed+N")
    epochs: int | None = spec(None, "must be >= 1", positive, help="epochs per retraining (default: train.epochs)")
    max_designs: int = spec(8, "must be >= 1", positive,
                            help="confirm at most this many search-front designs (best validation score first)")


OBJECTIVES = ("score", "memory", "seconds", "params")
@dataclass(frozen=True)
class StudyConfig:
    """A study file (``studies/*.yaml``). Paths are relative to the file."""

    name: str = spec("study", help="study name (Optuna study name, report title)")
    task: Any = spec("classification", help="classification, detection, superres or segmentation; "
                     "or {name, args} with the task's head arguments")
    data: dict = spec({}, help="data set block; empty: the task's embedded default (digits, scenes, photos)")
    backbone: dict = spec({"name": "resnet20"}, help="{name, args}: the network being split")
    search_space: Any = spec("../search_spaces/quickstart.yaml", help="a search_spaces/*.yaml path or an inline mapping")
    train: TrainConfig = spec(TrainConfig(), help="the training budget of every trial")
    objectives: list[str] = spec(["score", "memory"], "must start with score, memory; extra: seconds, params",
                                 lambda v: v[:2] == ["score", "memory"] and set(v) <= set(OBJECTIVES)
                                 and len(set(v)) == len(v), help="what is optimised")
    memory: MemoryConfig = spec(MemoryConfig(), help="how peak memory is scored")
    sampler: SamplerConfig = spec(SamplerConfig(), help="the Optuna sampler")
    pruning: PruningConfig = spec(PruningConfig(), help="early stopping of dominated trials")
    confirm: ConfirmConfig = spec(ConfirmConfig(), help="retrain the front and E2E with several seeds, "
                                  "score on validation and test")
    n_trials: int = spec(20, "must be >= 1", positive, help="finished trials to reach (the E2E reference included)")
    timeout: float | None = spec(None, "must be > 0", positive, help="stop starting trials after this many seconds")
    storage: str | None = spec(None, help="Optuna storage URL; default a journal file in the output folder")
    output: str | None = spec(None, help="run folder (default runs/<name> in the current folder)")
    isolation: str = spec("auto", choices=("auto", "subprocess", "inprocess"),
                          help="train each trial in a fresh process (auto: on CUDA) so memory cannot leak between trials")
    enqueue: list[str] = spec([], "must be a list of published design names or design files",
                              help="published designs (man_k8, manpp_k16, ...: docs/concepts.md) or design files "
                                   "to try first")


def field_help(cls) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of each field: the study reference is generated from this."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, str(hints[f.name]).replace("typing.", ""), default, f.metadata.get("help", "")))
    return out
