"""Split points as the authors' repositories write them, for CIFAR ResNets. Torch-free.

Our units of a CIFAR ResNet ``resnet{6n+2}`` (``backbones/cifar_resnet.py``): unit 0 is the
stem (conv3x3-BN-ReLU), then the ``n`` basic blocks of stages 1, 2 and 3, so block ``b``
(0-based) of stage ``s`` (1-based) is unit ``1 + (s - 1) * n + b``. A split point ``p`` starts
a module at unit ``p``: the module before it ends on unit ``p - 1``, whose output its aux
net reads.

The repositories list, per local module but the last, the unit it ends on (their forward
passes run a unit, then train the aux net and detach where the table names that unit):

* **InfoPro-Pytorch** (``networks/configs.py``, ``InfoPro[arch][K]`` and
  ``InfoPro_balanced_memory[arch][dataset][K]``): ``[stage, block]`` pairs, K - 1 of them,
  stage 1-3 with block 0-based and ``[0, 0]`` the stem (``InfoProResNet.forward`` checks
  stage 0, layer 0 after the stem). The MAN / MAN++ code that reads InfoPro's config writes
  the same pairs with the network's end ``[3, n - 1]`` appended (K entries): accepted too.
* **AugLocal** (``networks/configs.py``, ``network_config[arch][K]``): ``[stage, block, unit]``
  triples, K - 1 of them, the stem ``[0, 0, 0]``; ``unit`` is our unit index.

:func:`to_table` writes a design's split points in either form; :func:`from_table` reads
``splits: {infopro: [...]}`` / ``splits: {auglocal: [...]}`` back into unit indices
(``graph.normalize`` calls it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auxsearch.errors import ConfigError

FORMATS = ("infopro", "auglocal")
# The CIFAR ResNets of backbones/cifar_resnet.py: name -> basic blocks per stage.
CIFAR_RESNETS: dict[str, int] = {f"resnet{d}": (d - 2) // 6 for d in (8, 14, 20, 32, 44, 56, 110)}


def blocks_per_stage(backbone: str, key: str = "backbone.name") -> int:
    """``n`` of ``resnet{6n+2}``; any other backbone has no table form."""
    if backbone not in CIFAR_RESNETS:
        raise ConfigError(key, f"split tables describe CIFAR ResNets ({', '.join(CIFAR_RESNETS)}); "
                          f"backbone {backbone!r} has no stage/block table")
    return CIFAR_RESNETS[backbone]


def unit_of(stage: int, block: int, n: int) -> int:
    """Our unit index of ``block`` of ``stage`` (stage 0, block 0: the stem)."""
    return 0 if stage == 0 else 1 + (stage - 1) * n + block


def position(unit: int, n: int) -> tuple[int, int]:
    """``(stage, block)`` of our unit ``unit``: ``(0, 0)`` for the stem."""
    if unit == 0:
        return (0, 0)
    return (1 + (unit - 1) // n, (unit - 1) % n)


def to_table(splits: list[int], backbone: str, fmt: str, *, with_end: bool = False) -> list[list[int]]:
    """The repository's entry for split points ``splits`` (unit indices) of ``backbone``.

    ``with_end`` appends the network's end (the MAN / MAN++ form of InfoPro's table).
    """
    n = blocks_per_stage(backbone)
    ends = [p - 1 for p in splits] + ([3 * n] if with_end else [])
    if fmt == "infopro":
        return [list(position(u, n)) for u in ends]
    if fmt == "auglocal":
        return [[*position(u, n), u] for u in ends]
    raise ConfigError("--format", f"unknown split table format {fmt!r}; known: {', '.join(FORMATS)}")


def from_table(table: Any, backbone: str, num_units: int, key: str = "splits") -> list[int]:
    """Unit-index split points of ``{infopro: [[s, b], ...]}`` or ``{auglocal: [[s, b, u], ...]}``."""
    if not isinstance(table, Mapping) or len(table) != 1 or next(iter(table)) not in FORMATS:
        raise ConfigError(key, "a table of split points is one of {infopro: [[stage, block], ...]} or "
                          f"{{auglocal: [[stage, block, unit], ...]}}, got {table!r}")
    fmt, entries = next(iter(table.items()))
    key = f"{key}.{fmt}"
    n = blocks_per_stage(backbone, key)
    if num_units != 1 + 3 * n:
        raise ConfigError(key, f"{backbone} has {1 + 3 * n} units, but the design says num_units: {num_units}")
    width = 2 if fmt == "infopro" else 3
    shape = "[stage, block]" if fmt == "infopro" else "[stage, block, unit]"
    if not isinstance(entries, list | tuple):
        raise ConfigError(key, f"must be a list of {shape} entries, got {entries!r}")
    ends: list[int] = []
    for i, e in enumerate(entries):
        where = f"{key}.{i}"
        if not (isinstance(e, list | tuple) and len(e) == width
                and all(isinstance(v, int) and not isinstance(v, bool) for v in e)):
            raise ConfigError(where, f"must be {shape} (integers), got {e!r}")
        stage, block = e[0], e[1]
        if stage == 0 and block != 0:
            raise ConfigError(where, f"stage 0 is the stem, which has block 0 only; got {list(e)}")
        if not (0 <= stage <= 3 and 0 <= block < n):
            raise ConfigError(where, f"stage must be 0 (the stem) to 3 and block 0 to {n - 1} for {backbone}; "
                              f"got {list(e)}")
        unit = unit_of(stage, block, n)
        if fmt == "auglocal" and e[2] != unit:
            raise ConfigError(where, f"{list(e)} is inconsistent: stage {stage} block {block} is unit {unit} "
                              f"of {backbone}, not {e[2]}")
        if ends and unit <= ends[-1]:
            raise ConfigError(where, f"entries must go strictly forward through the network, got {list(entries)}")
        ends.append(unit)
    if ends and ends[-1] == num_units - 1:  # the network's end (MAN / MAN++ form): no split there
        ends.pop()
    return [u + 1 for u in ends]
