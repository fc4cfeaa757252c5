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

from .errors import ConfigError, known

T = TypeVar("T")


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
    if origin is dict:
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
