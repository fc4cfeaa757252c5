"""What a task plugs into the engine: data, the real head, the light local head, the metric.

A task never sees the design's split points. The engine asks it three things:

* :meth:`Task.taps` — which backbone units' outputs the real head reads (one for
  classification; several scales for detection and segmentation; the first and the last
  unit for super-resolution's global residual). Taps that live in earlier modules reach
  the head *detached*, so the final module still trains on its own loss only.
* :meth:`Task.head` — the real head (a :class:`FinalHead`) built for those taps.
* :meth:`Task.local_head` — the light head an aux net ends with when its end is ``local``
  (for classification the aux families bring their own; for dense tasks this is the
  stride-matched detection head, the reconstruction head or the per-pixel classifier).

and :meth:`Task.evaluate` scores a trained network on the test loader.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from auxsearch.design.tasks import TaskSpec, canonical_task, task_spec
from auxsearch.errors import ConfigError


class FinalHead(nn.Module, abc.ABC):
    """The network's real head: ``forward(taps) -> raw``; ``loss`` and ``predict`` read ``raw``."""

    @abc.abstractmethod
    def forward(self, taps: list[Tensor]) -> Any:
        """The tapped features (shallow to deep) in; the raw output (logits, maps) out."""

    @abc.abstractmethod
    def loss(self, raw: Any, image: Tensor, target: Any) -> Tensor:
        """Scalar training loss of the raw output against the target."""

    def predict(self, raw: Any, image: Tensor) -> Any:
        """What inference returns (``LocalNetwork.forward``); the raw output by default."""
        return raw


class OutputShift(nn.Module):
    """``y = x * std + mean``: puts an image-valued output back into pixel units.

    The network normalises its input with the data set's mean/std; a head that predicts
    an image (super-resolution) ends with this layer, EDSR's "add mean" step. The
    network sets its buffers together with its own (``LocalNetwork.set_normalization``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


class Task(abc.ABC):
    """One kind of problem a design can be trained for."""

    name: str = ""  # the key of its spec in auxsearch.design.tasks.TASKS

    @property
    def spec(self) -> TaskSpec:
        """The task's entry in the task registry: metric, dense, simulatable, head arguments."""
        return task_spec(self.name)

    @property
    def metric(self) -> str:
        """The score the search maximises."""
        return self.spec.metric

    @property
    def simulatable(self) -> bool:
        """Can a step run on fake tensors (no data-dependent shapes)?"""
        return self.spec.simulatable

    @property
    def dense(self) -> bool:
        """Aux nets end with the task's light head, not a family's classifier."""
        return self.spec.dense

    @property
    def arg_defaults(self) -> Mapping[str, Any]:
        """The real head's arguments with their defaults (filled by ``canonical_task``)."""
        return self.spec.args

    # -------------------------------------------------------------- design and data

    def check_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The design's ``task.args`` with defaults filled; unknown keys and broken rules refused."""
        return canonical_task({"name": self.name, "args": dict(args)})["args"]

    @abc.abstractmethod
    def load_data(self, cfg: Mapping | None, key: str = "data"):
        """The ``ImageData`` a ``data`` block names (the task's default data set when empty)."""

    def check_data(self, design: Mapping, data) -> None:
        """Refuse a data set that does not fit the design (shape, classes, scale)."""
        want = [data.in_chans, data.image_size, data.image_size]
        if list(design["input_shape"]) != want:
            raise ConfigError("input_shape", f"the design expects {design['input_shape']} but the data set gives {want}")
        if design["num_classes"] != data.num_classes:
            raise ConfigError("num_classes", f"the design has {design['num_classes']} classes, "
                              f"the data set {data.num_classes}")

    # -------------------------------------------------------------- network parts

    @abc.abstractmethod
    def taps(self, design: Mapping, unit_out_shapes: Sequence[tuple]) -> list[int]:
        """Indices of the units whose outputs the real head reads, shallow to deep."""

    @abc.abstractmethod
    def head(self, design: Mapping, tap_shapes: Sequence[tuple]) -> FinalHead:
        """The real head for features of these shapes (C, H, W)."""

    def local_head(self, design: Mapping, feature_shape: tuple, depth: int, width: int) -> nn.Module | None:
        """The light head (``loss(feat, image, target)``) of a dense task; None: the family's own."""
        return None

    # -------------------------------------------------------------- data on the device

    def to_device(self, target: Any, device: torch.device) -> Any:
        return target.to(device, non_blocking=True)

    @abc.abstractmethod
    def example_batch(self, design: Mapping, batch_size: int, device: torch.device | str = "cpu"):
        """A random ``(image, target)`` batch of the design's shape (memory measurement)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """Scores on ``loader``: ``{self.metric: ..., other metrics...}``."""


class LevelTask(Task):
    """A task whose real head reads several scales: the last unit of each of its ``levels`` deepest
    resolutions (an FPN's inputs; ``task.args.levels``)."""

    def taps(self, design: Mapping, unit_out_shapes: Sequence[tuple]) -> list[int]:
        return level_taps(unit_out_shapes, self.check_args(design["task"]["args"])["levels"])


def level_taps(unit_out_shapes: Sequence[tuple], levels: int, key: str = "task.args.levels") -> list[int]:
    """The last unit of each of the ``levels`` deepest spatial resolutions (an FPN's inputs)."""
    last_at: dict[int, int] = {}
    for i, shape in enumerate(unit_out_shapes):
        last_at[shape[-1]] = i  # later units at the same width overwrite: the last one wins
    ordered = sorted(last_at.values())
    if levels > len(ordered):
        raise ConfigError(key, f"the backbone has {len(ordered)} resolutions, {levels} levels asked")
    return ordered[-levels:]
